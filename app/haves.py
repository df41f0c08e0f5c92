"""The text side of step 2: find `have` candidates, split chains, place and remove tags.

Everything here is pure text; Rocq decides (in `app.steps.step_2`) which candidates really
open an intermediate goal and where that goal is closed. Offsets are character offsets into
the text given. Comments and strings are masked before any scan, so a `;` or a `have` inside
them is never taken for code; `<<` … `>>` (MathComp's generated spaces, `<<K; x>>`) nest like
brackets, because their `;` is not a chain separator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.chains import CLOSE_TAG, OPEN_TAG, untagged
from app.rocq.positions import SourceText
from app.rocq.sentences import split_sentences

_HAVE_WORD = re.compile(r"(?<![\w'])have(?![\w'])")
_HAVE_START = re.compile(r"\s*(by\s+)?((?:gen\s+)?have)(?![\w'])(?!\s+suff)")
_NESTING = r"<<|>>|[()\[\]{}]"
_OPENERS = ("(", "[", "{", "<<")
_COLON = r"(?<![:=]):(?![=:])"
_COLONEQ = r":=(?!:)"
_BY = r"(?<![\w'])by(?![\w'])"
_PROOF_START = re.compile(r"(Proof|Next\s+Obligation)\b")
_PROOF_END = re.compile(r"(Qed|Defined|Admitted|Abort|Save\s+\S+)\s*\.$")


@dataclass(frozen=True)
class Span:
    """A range of characters of a text, end excluded."""

    start: int
    end: int

    def of(self, text: str) -> str:
        """The text in the span."""
        return text[self.start : self.end]


@dataclass(frozen=True)
class HaveHead:
    """A chain piece that states an intermediate lemma: `[by] [gen] have … : statement [by …]`."""

    tag_at: int
    """Where the opening tag goes: at `have` (or `gen`), after an enclosing `by`."""
    head: Span
    """The have tactic without its proof, e.g. `have x : T` (ends before a top-level `by`)."""
    statement: str
    """What the have states: the text after its top-level colon."""
    outer_by: bool
    """The piece starts with `by have`: the `by` encloses the rest of the chain."""


def mask(text: str) -> str:
    """The text with the contents of comments and strings blanked, offsets unchanged."""
    out, i, n = list(text), 0, len(text)
    while i < n:
        if text.startswith("(*", i):
            end = _comment_end(text, i)
        elif text[i] == '"':
            end = _string_end(text, i)
        else:
            i += 1
            continue
        out[i:end] = " " * (end - i)
        i = end
    return "".join(out)


def _comment_end(text: str, i: int) -> int:
    """The offset after the (nested) comment opening at i."""
    depth, i = 1, i + 2
    while depth and i < len(text):
        if text.startswith("(*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*)", i):
            depth, i = depth - 1, i + 2
        elif text[i] == '"':
            i = _string_end(text, i)
        else:
            i += 1
    return i


def _string_end(text: str, i: int) -> int:
    """The offset after the string opening at i (`""` is an escaped quote)."""
    while (j := text.find('"', i + 1)) >= 0:
        if text[j + 1 : j + 2] != '"':
            return j + 1
        i = j + 1
    return len(text)


def top_level(masked: str, pattern: str, span: Span | None = None, depth: int = 0) -> list[Span]:
    """Matches of `pattern` in `span` of a masked text at bracket depth `depth` (0: outside
    every bracket of the span)."""
    span = span or Span(0, len(masked))
    found, level = [], 0
    for m in re.compile(f"{_NESTING}|{pattern}").finditer(masked, span.start, span.end):
        token = m.group()
        if token in _OPENERS:
            level += 1
        elif re.fullmatch(_NESTING, token):
            level -= 1
        elif level == depth:
            found.append(Span(m.start(), m.end()))
    return found


def split_on(masked: str, separator: str, span: Span, depth: int = 0) -> list[Span]:
    """The parts of `span` between top-level separators (the separators excluded)."""
    cuts = top_level(masked, re.escape(separator), span, depth)
    starts = [span.start] + [cut.end for cut in cuts]
    ends = [cut.start for cut in cuts] + [span.end]
    return [Span(start, end) for start, end in zip(starts, ends, strict=True)]


def pieces(masked: str, span: Span) -> list[Span]:
    """The `;`-separated tactics of a chain (top level of the span only)."""
    return split_on(masked, ";", span)


def branches(masked: str, piece: Span) -> list[Span] | None:
    """The `|`-separated branches of a piece that is a bracket `[ … | … ]`, else None."""
    text = masked[piece.start : piece.end]
    if not text.strip().startswith("[") or not text.rstrip().endswith("]"):
        return None
    inner = Span(piece.start + text.index("[") + 1, piece.start + len(text.rstrip()) - 1)
    if not _balanced(masked, inner):  # the first bracket closes before the last one
        return None
    return split_on(masked, "|", inner)


def _balanced(masked: str, span: Span) -> bool:
    """Whether brackets in the span nest properly (never closing one opened before it)."""
    level = 0
    for m in re.finditer(_NESTING, masked[span.start : span.end]):
        level += 1 if m.group() in _OPENERS else -1
        if level < 0:
            return False
    return level == 0


def have_head(text: str, masked: str, piece: Span) -> HaveHead | None:
    """The have a chain piece opens with, if it states a lemma (a top-level colon and no
    `:=` before its proof); None for `have … := term` and for every other tactic."""
    m = _HAVE_START.match(masked, piece.start, piece.end)
    if m is None:
        return None
    after = Span(m.end(), piece.end)
    by = top_level(masked, _BY, after)
    head = Span(m.start(2), by[0].start if by else piece.end)
    colons = top_level(masked, _COLON, head)
    if not colons or top_level(masked, _COLONEQ, head):
        return None
    head = Span(head.start, head.start + len(text[head.start : head.end].rstrip()))
    statement = text[colons[0].end : head.end].strip()
    return HaveHead(m.start(2), head, statement, m.group(1) is not None)


def has_candidate(proof: str) -> bool:
    """A cheap test: whether any chain piece of the proof (or of a bracket branch) is a have
    that states a lemma. Proofs without one never reach Rocq."""
    if not _HAVE_WORD.search(proof):
        return False
    masked = mask(proof)
    for sentence in sentence_spans(proof):
        for piece in pieces(masked, sentence):
            if have_head(proof, masked, piece) or any(
                have_head(proof, masked, first)
                for branch in branches(masked, piece) or []
                for first in pieces(masked, branch)[:1]
            ):
                return True
    return False


def sentence_spans(text: str) -> list[Span]:
    """Rocq's sentences of a text (as `split_sentences`), in characters, terminators excluded."""
    source = SourceText(text)
    spans = []
    for start, end in split_sentences(source.data):
        first, last = source.byte_to_char(start), source.byte_to_char(end)
        spans.append(Span(first, last - 1 if text[last - 1] == "." else last))
    return spans


def normalise(proof: str) -> tuple[str, ...]:
    """A proof as its sequence of tactics, blanks collapsed and chain splits undone: `a; b.`
    and `a. b.` give the same tactics. Two proofs that differ only by where step 2 split their
    chains (and by tags) normalise to the same value."""
    proof = untagged(proof)
    masked = mask(proof)
    return tuple(
        " ".join(piece.of(proof).split())
        for sentence in sentence_spans(proof)
        for piece in pieces(masked, sentence)
    )


def tactic_count(tagged_proof: str) -> int:
    """Sentences of a proof outside have blocks, `Proof.` and the closing `Qed.` not counted
    (step 3 keeps proofs by this size)."""
    blocks = outer_blocks(tagged_proof)
    count = 0
    for sentence in sentence_spans(tagged_proof):
        text = tagged_proof[sentence.start : sentence.end + 1]
        inside = any(block.start <= sentence.start < block.end for block in blocks)
        if not inside and not _PROOF_START.match(text) and not _PROOF_END.match(text.strip()):
            count += 1
    return count


def outer_blocks(tagged_proof: str) -> list[Span]:
    """The outermost have blocks of a tagged proof, from opening to closing tag (blocks may
    hold blocks: haves inside a have's proof)."""
    blocks, depth, opened = [], 0, 0
    for tag in re.finditer(f"{re.escape(OPEN_TAG)}|{re.escape(CLOSE_TAG)}", tagged_proof):
        if tag.group() == OPEN_TAG:
            depth, opened = depth + 1, tag.start() if depth == 0 else opened
        else:
            depth -= 1
            if depth == 0:
                blocks.append(Span(opened, tag.end()))
    return blocks
