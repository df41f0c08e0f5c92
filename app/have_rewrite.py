"""Rewriting a proof with its haves tagged, decided by Rocq's goals (step 2's core).

A `HaveWalk` runs a proof sentence by sentence from the theorem's start, in one Rocq session.
At each `have` that text proposes (`app.haves`), Rocq decides: the have alone must add its own
goal (first), and its block ends where the open goals are exactly those the have left besides
its own. Chains are split around a block when the tactics before it keep one goal, and every
split is checked to leave the same goals as the sentence as written. Tags are comments, so
the rewritten text is exactly what Rocq ran.

The walk fetches each goal's conclusion only (printing a large context costs Rocq more than
most tactics cost to run): goals are compared whole only where conclusions alike must be
confirmed, when a block opens or closes and where a split must leave the sentence's goals.
Inside a block, the goals the have must come back to are watched by their conclusions, and by
their hypotheses too after a sentence that selects goals (`last`, `all:`); otherwise their
hypotheses are checked when the block closes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from app.chains import untagged
from app.haves import (
    CLOSE_TAG,
    OPEN_TAG,
    HaveHead,
    Span,
    branches,
    has_candidate,
    have_head,
    mask,
    pieces,
    sentence_spans,
)
from app.rocq.goals import Goal, Goals
from app.rocq.sentences import split_sentences
from app.rocq.session import RocqSession
from app.rocq.state import RocqSessionError, State

log = logging.getLogger(__name__)
STAGE = "haves"


# --- Goals -----------------------------------------------------------------------------------


def _open(goals: Goals | None) -> tuple[Goal, ...]:
    """Every unsolved goal, focused ones first (what a have adds to and takes away from)."""
    goals = goals or Goals()
    return goals.foreground + goals.background


def _conclusions(goals: tuple[Goal, ...]) -> tuple[str, ...]:
    return tuple(goal.conclusion for goal in goals)


_SELECTOR = re.compile(r"\b(?:last|first|all)\b|\b\d+\s*(?:-\s*\d+)?\s*:(?!=)")
"""What in a sentence may make a tactic act on goals other than the first (`last`, `first`,
`all:`, `2:`, `1-3:`): after it, the goals a block must leave are compared whole at once."""

WholeGoals = Callable[[State], Goals]
"""The goals of a walk's state with their hypotheses (`HaveWalk.whole`)."""


@dataclass(frozen=True)
class _Level:
    """What a have's goal must come back to: the goals the have itself left, its own removed."""

    expected: tuple[Goal, ...]
    whole: WholeGoals = field(compare=False)

    def closed(self, state: State) -> bool:
        """The have's goal is proved and nothing else was touched (the conclusions first, then
        the goals whole)."""
        if _conclusions(_open(state.goals)) != _conclusions(self.expected):
            return False
        return _open(self.whole(state)) == self.expected

    def pending(self, state: State, whole: bool = False) -> bool:
        """The have's goal (or goals it split into) is still open, the rest untouched: their
        conclusions, and their hypotheses too if `whole` (else they are checked when the block
        closes)."""
        goals = _conclusions(_open(state.goals))
        size = len(self.expected)
        if len(goals) <= size or goals[len(goals) - size :] != _conclusions(self.expected):
            return False
        return not whole or _open(self.whole(state))[len(goals) - size :] == self.expected


@contextlib.contextmanager
def patience(session: RocqSession, seconds: float) -> Iterator[None]:
    """Let each call of the session take up to `seconds` for a while."""
    saved, session.timeout = session.timeout, seconds
    try:
        yield
    finally:
        session.timeout = saved


def run_long(session: RocqSession, state: State, text: str, per_sentence: float) -> State:
    """Run a text of many sentences in one call, with time allowed per sentence (the goals'
    conclusions fetched)."""
    count = max(1, len(split_sentences(text.encode("utf-8"))))
    with patience(session, per_sentence * count):
        return session.run(state, text, conclusions_only=True)


def _attempt(session: RocqSession, state: State, text: str) -> State | None:
    """Run a trial text (the goals' conclusions fetched); None if Rocq rejects it (or it
    times out)."""
    try:
        return session.run(state, text, conclusions_only=True)
    except RocqSessionError:
        return None


# --- Walking a proof -------------------------------------------------------------------------


class RewriteError(Exception):
    """The rewritten proof is not the original one modulo tags and chain splits (a bug)."""


@dataclass(frozen=True)
class _Chunk:
    """A sentence of the proof: the blanks before it, its body, its terminator (`.` or none
    for bullets and braces)."""

    lead: str
    body: Span
    term: str


def _chunks(proof: str) -> list[_Chunk]:
    """The proof's sentences; joined back, their texts are the proof."""
    chunks, previous = [], 0
    for span in sentence_spans(proof):
        term = "." if proof[span.end : span.end + 1] == "." else ""
        chunks.append(_Chunk(proof[previous : span.start], span, term))
        previous = span.end + len(term)
    return chunks


@dataclass(frozen=True)
class _Pending:
    """A block whose have's goal is still open at the end of its sentence."""

    head: HaveHead
    level: _Level
    text: str
    """The block so far (untagged), from the have on."""


@dataclass(frozen=True)
class _Done:
    """A sentence rewritten: the texts it became, the state after them, the haves closed in
    it, and the block still open when it ends (its goal is then closed by later sentences)."""

    texts: tuple[str, ...]
    state: State
    haves: tuple[tuple[HaveHead, str], ...] = ()
    """Each closed have with its block text."""
    pending: _Pending | None = None


@dataclass(frozen=True)
class _Open:
    """A block still open after its have's sentence, and where its text is in the output."""

    pending: _Pending
    sentence: int
    """The index of the have's sentence."""
    start: int
    """Where the have's sentence starts in the output texts."""
    haves: int
    """How many haves were tagged before the have's sentence."""
    slot: int
    """Where the block's have goes in the list of haves (before those tagged inside it)."""
    original: Callable[[], State]
    """The state after the have's sentence as written."""
    depth: int = 0
    """Braces opened (and not closed) since the have's sentence."""


@dataclass(frozen=True)
class _Site:
    """A sentence (or the rest of one) being rewritten, and the state before it."""

    before: State
    lead: str
    body: Span
    term: str
    original: Callable[[], State]
    """The state after the sentence as written (run on first need)."""


class HaveWalk:
    """One proof rewritten sentence by sentence; the state always comes from running exactly
    the rewritten text so far (tags aside), so reaching `Qed.` re-checks the rewrite."""

    def __init__(self, session: RocqSession, fqn: str, proof: str, start: State) -> None:
        self.session, self.fqn = session, fqn
        self.proof, self.masked = proof, mask(proof)
        self.chunks = _chunks(proof)
        self.state = start
        self.out: list[str] = []
        self.haves: list[tuple[HaveHead, str]] = []
        self.stack: list[_Open] = []
        """Blocks whose have's goal is not closed yet, innermost last."""
        self._whole: dict[State, Goals] = {}

    def whole(self, state: State) -> Goals:
        """A state's goals with their hypotheses (fetched once; cheaply while the state is
        Rocq's tip, as it is when a check follows the run that made it)."""
        if state not in self._whole:
            self._whole[state] = self.session.goals(state)
        return self._whole[state]

    def _same_goals(self, state: State, other: State) -> bool:
        """Whether two states leave the same goals: conclusions first, then whole (a state
        made with whole goals is not asked again)."""
        if _conclusions(_open(state.goals)) != _conclusions(_open(other.goals)):
            return False
        return self.whole(state) == self.whole(other)

    def text(self, index: int) -> str:
        """Sentence `index` as written, with the blanks before it."""
        chunk = self.chunks[index]
        return chunk.lead + chunk.body.of(self.proof) + chunk.term

    def rewrite(self) -> State:
        """Walk the whole proof (through `Qed.`); the final state."""
        index = 0
        while index < len(self.chunks):
            if self.stack or self._candidate(self.chunks[index].body):
                self._sentence_at(index)
                index += 1
            else:
                index = self._plain(index)
        return self.state

    def _candidate(self, body: Span) -> bool:
        """Whether a sentence may hold a have to tag (only those get trial runs)."""
        return has_candidate(body.of(self.proof) + ".")

    def _plain(self, index: int) -> int:
        """Run the sentences up to the next candidate as they are, in one call."""
        end = index + 1
        while end < len(self.chunks) and not self._candidate(self.chunks[end].body):
            end += 1
        text = "".join(self.text(i) for i in range(index, end))
        self.state = run_long(self.session, self.state, text, self.session.timeout)
        self.out.append(text)
        return end

    def _sentence_at(self, index: int) -> None:
        """Run one sentence, rewritten if it has a have that Rocq confirms; then see whether
        it ends the innermost open block."""
        chunk, before = self.chunks[index], self.state
        candidate = self._candidate(chunk.body)  # its goals compared whole with its rewrites'
        text = self.text(index)
        original = functools.cache(
            lambda: self.session.run(before, text, conclusions_only=not candidate)
        )
        done = None
        if candidate:
            done = self._sentence(_Site(before, chunk.lead, chunk.body, chunk.term, original))
        done = done or _Done((self.text(index),), original())
        start, haves = len(self.out), len(self.haves)
        self.out.extend(done.texts)
        self.haves.extend(done.haves)
        self.state = done.state
        delta = _braces(chunk.body.of(self.proof))
        self.stack = [dataclasses.replace(b, depth=b.depth + delta) for b in self.stack]
        if done.pending is None:
            self._settle(index)
            return
        slot = len(self.haves)
        self.stack.append(_Open(done.pending, index, start, haves, slot, original))

    def _settle(self, index: int) -> None:
        """Close the innermost open block if its have's goal is now proved (braces opened in
        it closed too); give it up if the goals it must leave were touched (their hypotheses
        checked at once after a sentence that selects goals, else when the block closes)."""
        selects = _SELECTOR.search(self.chunks[index].body.of(self.masked)) is not None
        while self.stack:
            block = self.stack[-1]
            level = block.pending.level
            closed = level.closed(self.state)
            if closed and block.depth == 0:
                self._close(self.stack.pop())
            elif block.depth >= 0 and (closed or level.pending(self.state, whole=selects)):
                return
            else:
                self._give_up(self.stack.pop(), index)

    def _close(self, block: _Open) -> None:
        """The closing tag goes after the block's last tactic, before its terminator."""
        last = self.out[-1]
        self.out[-1] = f"{last[:-1]} {CLOSE_TAG}." if last.endswith(".") else f"{last} {CLOSE_TAG}"
        text = "".join(self.out[block.start :])
        opening = text.index(f"{OPEN_TAG} {block.pending.text}")
        body = text[opening + len(OPEN_TAG) + 1 : text.rindex(CLOSE_TAG) - 1]
        self.haves.insert(block.slot, (block.pending.head, body))

    def _give_up(self, block: _Open, index: int) -> None:
        """A block whose have's goal does not close cleanly: its sentences go back to their
        text as written (haves tagged inside it included)."""
        extra = {"stage": STAGE, "fqn": self.fqn, "sentence": block.sentence}
        log.debug("a have's goal does not close cleanly: left untagged", extra=extra)
        texts = [self.text(i) for i in range(block.sentence, index + 1)]
        emitted = "".join(self.out[block.start :])
        del self.out[block.start :]
        del self.haves[block.haves :]
        self.out.extend(texts)
        if untagged(emitted).split() != "".join(texts).split():
            rest = "".join(texts[1:])
            self.state = run_long(self.session, block.original(), rest, self.session.timeout)

    # One sentence ---------------------------------------------------------------------------

    def _sentence(self, site: _Site) -> _Done | None:
        """Tag the first have of a sentence that Rocq confirms; None to keep the sentence."""
        parts = pieces(self.masked, site.body)
        heads = [have_head(self.proof, self.masked, part) for part in parts]
        found = [(i, head) for i, head in enumerate(heads) if head]
        if not found:
            return self._in_branch(site, parts)
        index, head = found[0]
        if head.outer_by and index > 0:
            return None
        split = self._split_before(site, parts, index)
        if split is None:
            return None
        pre, start, lead = split
        opened = self._opened(start, head)
        if opened is None:
            return None
        level, state = opened
        for last in range(index, len(parts)):
            block = Span(head.tag_at, parts[last].end)
            if last > index or self.proof[head.head.end : block.end].strip():
                state = _attempt(self.session, start, block.of(self.proof) + ".")
            if state is None:
                continue
            if level.closed(state):
                ending = _Ending(site, parts, last, head, lead, pre)
                if done := self._closed(ending, state):
                    return done
            elif not level.pending(state):
                return None
        if state is None or head.outer_by or not level.pending(state, whole=True):
            return None
        if pre and not self._same_goals(state, site.original()):
            return None
        block_text = Span(head.tag_at, site.body.end).of(self.proof)
        text = f"{lead}{OPEN_TAG} {block_text}{site.term}"
        return _Done((*pre, text), state, (), _Pending(head, level, block_text))

    def _split_before(
        self, site: _Site, parts: list[Span], index: int
    ) -> tuple[tuple[str, ...], State, str] | None:
        """Split the chain before the have when the tactics before it keep one goal: the
        texts before the have, the state there and the blanks to put before the tag."""
        if index == 0:
            return (), site.before, site.lead
        text = site.lead + Span(site.body.start, parts[index - 1].end).of(self.proof) + "."
        state = _attempt(self.session, site.before, text)
        if state is None or len(_open(state.goals)) != len(_open(site.before.goals)):
            return None
        lead = self.proof[parts[index].start : self._first_token(parts[index])] or " "
        return (text,), state, lead

    def _first_token(self, span: Span) -> int:
        """The first non-blank character of a span."""
        text = span.of(self.proof)
        return span.start + len(text) - len(text.lstrip())

    def _opened(self, start: State, head: HaveHead) -> tuple[_Level, State] | None:
        """Run the have alone: it must add its own goal, first; what follows it (the goal it
        was run on, split by an intro pattern such as `/orP[a | b]`) is what its block must
        leave once that goal is closed."""
        state = _attempt(self.session, start, head.head.of(self.proof) + ".")
        if state is None or len(_open(state.goals)) <= len(_open(start.goals)):
            return None
        return _Level(_open(self.whole(state))[1:], self.whole), state

    def _closed(self, end: _Ending, state: State) -> _Done | None:
        """A block closed inside its sentence: keep it if the rest of the sentence still does
        what it did (one split after the block, or none inside a `by`)."""
        block = end.block.of(self.proof)
        if end.head.outer_by:
            return self._closed_in_by(end, state)
        tagged = f"{end.lead}{OPEN_TAG} {block} {CLOSE_TAG}"
        if end.rest is None:
            if end.pre and not self._same_goals(state, end.site.original()):
                return None
            return _Done((*end.pre, tagged + end.site.term), state, ((end.head, block),))
        rest = Span(self._first_token(end.rest), end.rest.end)
        after = _attempt(self.session, state, rest.of(self.proof) + end.site.term)
        if after is None or not self._same_goals(after, end.site.original()):
            return None
        lead = self.proof[end.rest.start : rest.start] or " "
        site = _Site(state, lead, rest, end.site.term, lambda: after)
        tail = self._sentence(site) or _Done((lead + rest.of(self.proof) + end.site.term,), after)
        haves = ((end.head, block), *tail.haves)
        return _Done((*end.pre, tagged + ".", *tail.texts), tail.state, haves, tail.pending)

    def _closed_in_by(self, end: _Ending, state: State) -> _Done | None:
        """`by have …; rest.`: tagged in place (the `by` holds the chain); the rest must then
        close the goal, as the whole sentence does."""
        rest = f"by {end.rest.of(self.proof).strip()}." if end.rest else "by []."
        if _attempt(self.session, state, rest) is None:
            return None
        text = self._insert_tags(end.site, end.block)
        return _Done((text,), end.site.original(), ((end.head, end.block.of(self.proof)),))

    def _insert_tags(self, site: _Site, block: Span) -> str:
        """The sentence as written, with the block between tags."""
        body = site.body
        return (
            f"{site.lead}{self.proof[body.start : block.start]}{OPEN_TAG} {block.of(self.proof)} "
            f"{CLOSE_TAG}{self.proof[block.end : body.end]}{site.term}"
        )

    # Haves inside brackets ------------------------------------------------------------------

    def _in_branch(self, site: _Site, parts: list[Span]) -> _Done | None:
        """A have opening a branch (`t; [… | have x : T by … | …]`): tagged in place, and
        checked on that branch's goal alone, selected with `n:` after the tactics before."""
        for index in range(1, len(parts)):
            for number, branch in enumerate(branches(self.masked, parts[index]) or [], 1):
                inner = pieces(self.masked, branch)
                head = have_head(self.proof, self.masked, inner[0])
                if head and not head.outer_by:
                    before = Span(site.body.start, parts[index - 1].end)
                    return self._branch(site, before, number, inner, head)
        return None

    def _branch(
        self, site: _Site, before: Span, number: int, inner: list[Span], head: HaveHead
    ) -> _Done | None:
        start = _attempt(self.session, site.before, before.of(self.proof) + ".")
        if start is None:
            return None
        state = _attempt(self.session, start, f"{number}: ({head.head.of(self.proof)}).")
        if state is None or len(_open(state.goals)) != len(_open(start.goals)) + 1:
            return None
        goals = _open(self.whole(state))
        level = _Level(goals[: number - 1] + goals[number:], self.whole)
        for last in range(len(inner)):
            block = Span(head.tag_at, inner[last].end)
            closed = _attempt(self.session, start, f"{number}: ({block.of(self.proof)}).")
            if not (closed and level.closed(closed)):
                continue
            if self._same_rest(start, closed, number, inner, last):
                text = self._insert_tags(site, block)
                return _Done((text,), site.original(), ((head, block.of(self.proof)),))
        return None

    def _same_rest(
        self, start: State, closed: State, number: int, inner: list[Span], last: int
    ) -> bool:
        """The branch's tactics after the block leave the goals the whole branch leaves."""
        if last + 1 == len(inner):
            return True
        rest = Span(inner[last + 1].start, inner[-1].end).of(self.proof)
        whole = Span(inner[0].start, inner[-1].end).of(self.proof)
        after = _attempt(self.session, closed, f"{number}: ({rest}).")
        full = _attempt(self.session, start, f"{number}: ({whole}).")
        return after is not None and full is not None and self._same_goals(after, full)


@dataclass(frozen=True)
class _Ending:
    """A block that closes inside its sentence, after chain piece `last`."""

    site: _Site
    parts: list[Span]
    last: int
    head: HaveHead
    lead: str
    """The blanks before the opening tag."""
    pre: tuple[str, ...]
    """The text split off before the have, if any."""

    @property
    def block(self) -> Span:
        return Span(self.head.tag_at, self.parts[self.last].end)

    @property
    def rest(self) -> Span | None:
        """What follows the block in its chain."""
        if self.last + 1 == len(self.parts):
            return None
        return Span(self.parts[self.last + 1].start, self.site.body.end)


def _braces(sentence: str) -> int:
    """How a sentence changes the brace depth: `{` and `2: {` open, `}` closes."""
    sentence = sentence.strip()
    return 1 if sentence.endswith("{") else -1 if sentence == "}" else 0
