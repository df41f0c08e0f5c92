"""Rocq's own sentence boundaries, read from the output of `coqc -time`.

`coqc -time` prints one line per sentence it executes, in file order:

    Chars 2046 - 2138 [Definition~edivn_rec~d~:=~~~fi...] 0.001 secs (0.001u,0.s)

The numbers are UTF-8 BYTE offsets into the source, end exclusive; the bracket is a truncated
pretty-print with `~` for spaces, so the sentence text is taken from the source instead. A
sentence that fails is still printed (before the error), a sentence that does not parse is
not. Output of commands such as `Check` is interleaved on the same stream and skipped.

Under `Suggest Proof Using`, the `Qed.` of a proof in a section is preceded by the section
variables the proof used, as `Proof using` commands (the first one is the exact list):

    The proof of foo should start with one of the following commands:
    Proof using H.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.rocq.positions import Position, SourceText

_LINE = re.compile(r"Chars (\d+) - (\d+) \[.*\] (\S+) secs \(\S*\)")
TIMING_SUFFIX = ".timing"
"""A compiled file's `coqc -time` output is kept beside it, as `file.v.timing`."""
_SUGGESTION = re.compile(
    r"The proof of\s+\S+\s+should start with one of the following commands:\s*"
    r"Proof using\b([^.]*)\."
)
"""Rocq wraps long lines: a long name or variable list spans several."""
_NEXT_SENTENCE = re.compile(r"^Chars (\d+) - ", re.MULTILINE)


@dataclass(frozen=True)
class Sentence:
    """One sentence as Rocq split and executed it."""

    byte_start: int
    """UTF-8 byte offset of the sentence's first character."""
    byte_end: int
    """UTF-8 byte offset just after the sentence (exclusive), after its final `.` if any."""
    char_start: int
    """Character offset of the sentence's first character."""
    char_end: int
    """Character offset just after the sentence (exclusive)."""
    start: Position
    """Line and character where the sentence starts."""
    end: Position
    """Line and character just after the sentence."""
    text: str
    """The sentence exactly as in the source, comments inside it included."""
    seconds: float
    """Wall-clock seconds Rocq spent executing it."""


def parse_timing(output: str, source: SourceText) -> tuple[Sentence, ...]:
    """The sentences of a `coqc -time` run over `source`, in file order."""
    sentences = []
    for line in output.splitlines():
        match = _LINE.fullmatch(line)
        if match:
            byte_start, byte_end = int(match[1]), int(match[2])
            sentences.append(located_sentence(source, byte_start, byte_end, float(match[3])))
    return tuple(sentences)


def located_sentence(
    source: SourceText, byte_start: int, byte_end: int, seconds: float
) -> Sentence:
    """A sentence located in the source both in bytes and in characters."""
    char_start, char_end = source.byte_to_char(byte_start), source.byte_to_char(byte_end)
    return Sentence(
        byte_start=byte_start,
        byte_end=byte_end,
        char_start=char_start,
        char_end=char_end,
        start=source.position(char_start),
        end=source.position(char_end),
        text=source.text[char_start:char_end],
        seconds=seconds,
    )


def proofs_using(output: str) -> dict[int, str]:
    """The section variables each proof used (`Proof using` arguments), by the byte offset of
    its `Qed.`: the next sentence timed after the suggestion."""
    found: dict[int, str] = {}
    for suggestion in _SUGGESTION.finditer(output):
        if qed := _NEXT_SENTENCE.search(output, suggestion.end()):
            found[int(qed[1])] = " ".join(suggestion[1].split())
    return found
