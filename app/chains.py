"""The chains of a (tagged) proof: how step 4 cuts a proof into what a CoT shows and Rocq runs.

A chain is one Rocq sentence with the bullets and braces around it (a bullet or `{` goes with
the sentence after it, a `}` with the chain before it); `Proof.` and `Qed.` are not chains. A
have that step 2 tagged is one chain shown with its proof hidden (`have h : T (*proof*)`) while
Rocq runs the have and its whole proof. The forms step 2 writes: `(*<have>*) have h : T by tac
(*</have>*).`, `… ; first by tac (*</have>*).`, `(*<have>*) have h : T.` and the proof's
sentences up to `tac (*</have>*).`, `by (*<have>*) have … (*</have>*); rest.`, and a have
opening a branch, `t; [… | (*<have>*) have … (*</have>*) | …].` Everything here is pure text
work on Rocq's own sentence split.
"""

from __future__ import annotations

import bisect
import difflib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from app.rocq.positions import SourceText
from app.rocq.sentences import split_sentences as rocq_sentences

OPEN_TAG, CLOSE_TAG, HIDDEN_PROOF = "(*<have>*)", "(*</have>*)", "(*proof*)"
_TAG = re.compile(r"\(\*</?have>\*\)")
_UNTAG = re.compile(r"\(\*<have>\*\) ?| ?\(\*</have>\*\)")
PROOF_START = re.compile(r"Proof\b")
_PROOF_END = re.compile(r"(Qed|Defined|Admitted|Abort|Save\b[^.]*)\s*\.$")
_STRUCTURAL = re.compile(r"(?:[-+*]+|\{|\}|(?:\d+|\[[^\]]+\])\s*:\s*\{)$")
_COLON = re.compile(r"(?<!:):(?![:=])")
_BRACKETS = re.compile(r"<<|>>|[()\[\]{}]")
_SELECTOR = re.compile(r"^\s*(?:first|last)(?=\s)(?!\s+(?:first|last)\b)")
_HEAD_END = re.compile(r"(?<![\w'])by(?![\w'])|;|\.(?=\s|$)")


@dataclass(frozen=True)
class HaveBlock:
    """A tagged have: its statement as written and its proof."""

    statement: str
    """`have h : T`, without the proof and the tags."""
    statement_start: int
    statement_end: int
    """Offset just after the statement in the proof text."""
    proof: str
    """`by tac.` or the sentences that prove it (with their own tags), ended by a `.`."""
    proof_start: int
    proof_end: int


@dataclass(frozen=True)
class Chain:
    """One chain of a proof: what the data shows, what Rocq runs, where it is in the text."""

    text: str
    """As shown: a have's proof hidden as `(*proof*)`."""
    script: str
    """What Rocq runs: the sentences as written."""
    start: int
    end: int
    sentences: tuple[str, ...]
    """The Rocq sentences the chain covers (the have's proof included)."""
    have: HaveBlock | None = None
    lead: str = ""
    """For a have: what Rocq runs to show the have's goal alone (its statement without proof)."""
    goal_index: int = 0
    """Where the have's goal is among the goals `lead` leaves."""
    rest: int = 0
    """For a have: where the chain goes on after the closing tag."""

    @property
    def named(self) -> tuple[tuple[int, int], ...]:
        """Where the chain names its dependencies (not in a have's hidden proof)."""
        if self.have is None:
            return ((self.start, self.end),)
        return (self.start, self.have.statement_end), (self.rest, max(self.rest, self.end))


def parse_chains(text: str, start: int = 0, end: int | None = None) -> tuple[Chain, ...]:
    """The chains of a (tagged) proof, or of its part from `start` to `end` (a have's proof);
    offsets are into `text`."""
    part = SourceText(text[start:end])
    spans = [
        (start + part.byte_to_char(a), start + len(part.byte_slice(0, b).rstrip()))
        for a, b in rocq_sentences(part.data)
    ]
    while spans and PROOF_START.match(text[slice(*spans[0])]):
        spans.pop(0)
    while spans and _PROOF_END.match(text[slice(*spans[-1])]):
        spans.pop()
    blocks = dict(_have_blocks(text, spans, start, len(text) if end is None else end))
    groups: list[list[Any]] = []
    """Each chain: first sentence, last sentence, the have's sentence and tags (or None)."""
    pending, i = None, 0
    while i < len(spans):
        first = i if pending is None else pending
        sentence = text[slice(*spans[i])]
        if i in blocks:
            last, tags = blocks[i]
            groups.append([first, last, i, tags])
            pending, i = None, last + 1
            continue
        if sentence == "}" and groups and pending is None:
            groups[-1][1] = i
        elif _STRUCTURAL.match(sentence):
            pending = first
        else:
            groups.append([first, i, None, None])
            pending = None
        i += 1
    if pending is not None:
        groups.append([pending, len(spans) - 1, None, None])
    return tuple(
        _chain(text, spans, first, last)
        if have is None
        else _have_chain(text, spans, (first, have, last), tags)
        for first, last, have, tags in groups
    )


def _have_blocks(
    text: str, spans: list[tuple[int, int]], start: int, end: int
) -> Iterator[tuple[int, tuple[int, tuple[int, int]]]]:
    """Top-level tagged haves: (first sentence, (last sentence, (open tag, close tag)))."""
    depth, opened = 0, 0
    for tag in _TAG.finditer(text, start, end):
        if tag.group() == OPEN_TAG:
            depth, opened = depth + 1, (tag.start() if depth == 0 else opened)
            continue
        depth -= 1
        if depth == 0:
            first = next((i for i, (_, b) in enumerate(spans) if b > opened), None)
            last = max((i for i, (a, _) in enumerate(spans) if a < tag.start()), default=-1)
            if first is not None and last >= first:
                yield first, (last, (opened, tag.start()))


def _chain(text: str, spans: list[tuple[int, int]], first: int, last: int) -> Chain:
    """A plain chain; the last sentence of a have's `by tac` proof gets its `.`."""
    start, end = spans[first][0], spans[last][1]
    sentences = [text[a:b] for a, b in spans[first : last + 1]]
    if not sentences[-1].endswith(".") and not _STRUCTURAL.match(sentences[-1]):
        sentences[-1] += "."
    script = text[start:end] + ("" if text[start:end].endswith(sentences[-1]) else ".")
    return Chain(script, script, start, end, tuple(sentences))


def _have_chain(
    text: str, spans: list[tuple[int, int]], sentences: tuple[int, int, int], tags: tuple[int, int]
) -> Chain:
    """A have block (sentences: chain start, the have's sentence, the last one of its proof)."""
    (first, have_sentence, last), (o, c) = sentences, tags
    plain = _chain(text, spans, first, last)
    have = parse_have(text, o, c)
    rest = c + len(CLOSE_TAG)
    after = text[rest : plain.end] if rest <= plain.end else ""
    shown = (
        f"{text[plain.start : o]}{OPEN_TAG} {have.statement} {HIDDEN_PROOF} {CLOSE_TAG}"
        f"{after if after.strip() else '.'}"
    )
    structure, sentence = text[plain.start : spans[have_sentence][0]], spans[have_sentence][0]
    lead, index = _lead(text[sentence:o].strip(), have.statement)
    return Chain(
        shown, plain.script, plain.start, plain.end, plain.sentences, have, structure + lead, index,
        rest,
    )  # fmt: skip


def parse_have(text: str, o: int, c: int) -> HaveBlock:
    """Split the block tagged between offsets o and c into the have's statement (`have … : T`,
    up to a top-level `by`, `;` or the end of its sentence) and its proof (`by tac`, the rest of
    its chain, the sentences up to the closing tag), ended by a `.`."""
    body_start = o + len(OPEN_TAG)
    body = text[body_start:c]
    colon = _top_level(body, _COLON, 0)
    end = _top_level(body, _HEAD_END, colon + 1 if colon is not None else 0)
    statement = body[: len(body.rstrip()) if end is None else end].rstrip()
    rest = body[len(statement) :].lstrip()
    if rest[:1] == ";":  # the rest of the chain: `first tac` is `tac` on the have's goal alone
        rest = _SELECTOR.sub("", rest[1:], count=1)
    rest = rest[1:] if rest[:1] == "." else rest
    proof = rest.strip()
    proof += "" if proof.endswith(".") or not proof else "."
    skipped = len(statement) - len(statement.lstrip())
    return HaveBlock(
        statement.strip(),
        body_start + skipped,
        body_start + len(statement),
        proof,
        c - len(rest.lstrip()),
        c,
    )


def _lead(before: str, statement: str) -> tuple[str, int]:
    """What to run for the have's goal alone, given its sentence's text before the tag: the
    have (`by have …` without its `by`), or in a branch `t; [… | have …]`, `t. n: (have …).`
    (its goal is then the n-th)."""
    if before in ("", "by"):
        return f"{statement}.", 0
    stack: list[list[Any]] = []
    for i, char in enumerate(before):
        if char in "([{":
            stack.append([char, i, 1])
        elif char in ")]}" and stack:
            stack.pop()
        elif char == "|" and stack and stack[-1][0] == "[":
            stack[-1][2] += 1
    if not stack or stack[-1][0] != "[":
        return f"{before} {statement}.", 0
    _, at, number = stack[-1]
    pre = before[:at].rstrip().removesuffix(";").rstrip()
    return f"{pre}. {number}: ({statement}).", number - 1


def _top_level(text: str, pattern: re.Pattern[str], start: int) -> int | None:
    """The first match of `pattern` from `start` outside brackets (and outside MathComp's
    `<<K; x>>`, whose `;` separates nothing)."""
    brackets = {m.start(): m.group() for m in _BRACKETS.finditer(text)}
    depths: list[int] = []
    depth = 0
    while len(depths) < len(text):
        token = brackets.get(len(depths), " ")
        depth -= token in (")", "]", "}", ">>")
        depths += [depth] * len(token)
        depth += token in ("(", "[", "{", "<<")
    for match in pattern.finditer(text, start):
        if depths[match.start()] == 0:
            return match.start()
    return None


def untagged(text: str) -> str:
    """A text without have tags (and the blank step 2 puts beside each)."""
    return _UNTAG.sub("", text)


def has_tags(text: str) -> bool:
    """Whether a text has a have tag."""
    return _TAG.search(text) is not None


def normalized(sentence: str) -> str:
    """A sentence without have tags and blanks, to compare with the file's sentence at the same
    place (step 2 inserts tags with a blank around them)."""
    return "".join(_TAG.sub("", sentence).split())


class Alignment:
    """Maps offsets in the tagged proof to character offsets of the built file, through the
    blocks the tagged proof shares with the original proof."""

    def __init__(self, original: str, tagged: str, file_start: int) -> None:
        self.file_start, self.length = file_start, len(original)
        self.blocks: list[tuple[int, int, int]] | None = None
        if original != tagged:
            self.blocks = _step_2_edits(original, tagged)
            if self.blocks is None:
                matcher = difflib.SequenceMatcher(None, original, tagged, autojunk=False)
                self.blocks = [(j, i, n) for i, j, n in matcher.get_matching_blocks() if n]

    def to_file(self, offset: int) -> int:
        """The file character offset of a tagged-proof offset (inserted text maps to what
        follows it)."""
        if self.blocks is None:
            return self.file_start + min(offset, self.length)
        k = bisect.bisect_right(self.blocks, (offset, 1 << 62, 0)) - 1
        if k >= 0 and offset < self.blocks[k][0] + self.blocks[k][2]:
            tagged, original, _ = self.blocks[k]
            return self.file_start + original + offset - tagged
        following = self.blocks[k + 1][1] if k + 1 < len(self.blocks) else self.length
        return self.file_start + following


def _step_2_edits(original: str, tagged: str) -> list[tuple[int, int, int]] | None:
    """The common blocks (tagged offset, original offset, length) of a proof and its tagged
    version, in one pass over both: step 2 only inserts tags and blanks and ends chains with
    `.` where the original had `;`. None if the texts differ otherwise (then a general diff)."""
    blocks, i, j = [], 0, 0
    while i < len(original) and j < len(tagged):
        if original[i] == tagged[j]:
            start_i, start_j = i, j
            while i < len(original) and j < len(tagged) and original[i] == tagged[j]:
                i, j = i + 1, j + 1
            blocks.append((start_j, start_i, i - start_i))
        elif tag := _TAG.match(tagged, j):
            j = tag.end()
        elif tagged[j].isspace():
            j += 1
        elif original[i].isspace():
            i += 1
        elif (original[i], tagged[j]) == (";", "."):
            i, j = i + 1, j + 1
        else:
            return None
    return blocks
