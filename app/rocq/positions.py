"""The one place where Rocq's byte offsets meet Python's character offsets.

Rocq (the XML protocol, `-time` output, `.glob` files) counts UTF-8 bytes; Python strings count
code points; editors and the seed formats count 0-based lines and characters. MathComp has
non-ASCII text (notations such as `∑`, `⊗`), so mixing these up shifts every later position.

Rocq reads a file as bytes: its lexer needs UTF-8 for names and symbols, but takes any byte in
a comment or a string. A text read here keeps such a byte as one escape character (Python's
`surrogateescape`), so byte offsets stay Rocq's and the file reads back byte for byte.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.rocq.goals import Location

_ESCAPED = re.compile("[\udc80-\udcff]")


@dataclass(frozen=True)
class Position:
    """A 0-based line and character (code point) position, as pytanque and LSP use."""

    line: int
    character: int


class SourceText:
    """A source text with conversions between byte offsets, character offsets and positions."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.data = text.encode("utf-8", "surrogateescape")
        self._ascii = len(self.data) == len(text)
        # Byte offset of the start of each character, only needed for non-ASCII text.
        self._char_to_byte: list[int] | None = None
        if not self._ascii:
            offsets, byte = [], 0
            for char in text:
                offsets.append(byte)
                byte += len(char.encode("utf-8", "surrogateescape"))
            offsets.append(byte)
            self._char_to_byte = offsets
        self._line_starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]

    def byte_to_char(self, byte: int) -> int:
        """Character offset of a byte offset (a byte inside a character maps to that character)."""
        if self._char_to_byte is None:
            return byte
        return bisect.bisect_right(self._char_to_byte, byte) - 1

    def char_to_byte(self, char: int) -> int:
        """Byte offset of a character offset."""
        if self._char_to_byte is None:
            return char
        return self._char_to_byte[char]

    def byte_slice(self, start: int, stop: int) -> str:
        """The text between two byte offsets."""
        return self.data[start:stop].decode("utf-8", "surrogateescape")

    def position(self, char: int) -> Position:
        """Line and character of a character offset."""
        line = bisect.bisect_right(self._line_starts, char) - 1
        return Position(line, char - self._line_starts[line])

    def offset(self, position: Position) -> int:
        """Character offset of a line and character."""
        return self._line_starts[position.line] + position.character

    def byte_position(self, byte: int) -> Position:
        """Line and character of a byte offset."""
        return self.position(self.byte_to_char(byte))

    def location(self, span: tuple[int, int] | None) -> Location | None:
        """Rocq's byte span (clamped to the text) as a location in bytes and characters; None
        for no span or Rocq's `(0, 0)`."""
        if span is None or span == (0, 0):
            return None
        start, end = (min(max(b, 0), len(self.data)) for b in span)
        return Location(start, end, self.byte_to_char(start), self.byte_to_char(end))

    def chunks(self, sentences: Sequence[tuple[int, int]]) -> Iterator[tuple[str, int]]:
        """Each sentence (byte spans) with the blanks and comments before it, and the byte
        offset it starts at: sent so, Rocq's byte offsets stay relative to the whole text."""
        previous = 0
        for _start, end in sentences:
            yield self.byte_slice(previous, end), previous
            previous = end


def read_source(path: Path) -> str:
    """A Rocq file's text as Rocq reads it: UTF-8, a byte that is not kept as an escape."""
    return path.read_bytes().decode("utf-8", "surrogateescape")


def write_source(path: Path, text: str) -> None:
    """Write a text read by `read_source` back, byte for byte."""
    path.write_bytes(text.encode("utf-8", "surrogateescape"))


def first_invalid_byte(text: str) -> int | None:
    """The character offset of the first byte of `text` that was not UTF-8, if any."""
    found = _ESCAPED.search(text)
    return found.start() if found else None


def valid_text(text: str) -> str:
    """`text` with every byte that was not UTF-8 shown as U+FFFD (for the database and logs)."""
    return _ESCAPED.sub("\ufffd", text)
