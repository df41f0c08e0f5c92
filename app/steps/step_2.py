"""Step 2: tag the haves that open intermediate goals, rewrite their proofs, re-check them.

A `have` that states a lemma (`have x : T`, proved inline with `by`, by the rest of its chain
or by the sentences that follow) becomes a delegable sub-proof, enclosed in `(*<have>*)` …
`(*</have>*)`. Text only proposes candidates (`app.haves`); Rocq decides: the have alone must
add its own goal (first), and its block ends where the open goals are exactly those the have
left besides its own. Chains are split around a block when the tactics before it keep one
goal, and every split is checked to leave the same goals as the sentence as written.

The proof is walked in one Rocq session from the theorem's start, running exactly the
rewritten sentences (tags are comments), so reaching `Qed.` is the re-check. A worker keeps
its session across the theorems of a file and continues from one theorem's `Qed.` to the
next statement, so no proof runs twice. Proofs without a candidate never reach Rocq.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, aliased

from app.chains import untagged
from app.db.enums import Stage, Status
from app.db.models import Have, Library, SourceFile, Theorem
from app.haves import (
    CLOSE_TAG,
    OPEN_TAG,
    HaveHead,
    Span,
    branches,
    has_candidate,
    have_head,
    mask,
    normalise,
    pieces,
    sentence_spans,
    tactic_count,
)
from app.options import RocqBin, use_rocq
from app.rocq.goals import Goal, Goals
from app.rocq.positions import SourceText
from app.rocq.sentences import split_sentences
from app.rocq.session import RocqError, RocqSession, RocqSessionError, State
from app.stages import StageSpec, register

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
FILE_PATIENCE = 600.0
"""Seconds a sentence of the file as written may take (it compiled): the file's prefix, the
text between two theorems, a failed proof gone past. `--pet-timeout` bounds proof sentences."""
STAGE = Stage.haves.value


# --- Plain data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TheoremInput:
    """A theorem as step 2 reads it."""

    fqn: str
    file: str
    """The built copy of its source file (absolute path)."""
    library: str
    """The library's built copy, mapped to `prefix` (`-R library prefix`)."""
    prefix: str
    statement: str
    proof: str
    byte_start: int
    """Byte offset of the statement in the file."""
    byte_end: int
    """Byte offset just after the proof's `Qed.`."""

    @property
    def statement_end(self) -> int:
        """Byte offset just after the statement's terminator."""
        return self.byte_start + len(self.statement.encode("utf-8"))


@dataclass(frozen=True)
class HaveRecord:
    """One tagged have: a row of `haves`."""

    index: int
    tactic: str
    """The have tactic without its proof, e.g. `have x : T`."""
    statement: str
    proof: str
    """What proves the statement: `by tac`, the rest of its chain, or the sentences after it."""


@dataclass(frozen=True)
class Rewritten:
    """The result for a theorem: its tagged proof, its haves and its size outside them."""

    tagged_proof: str
    haves: tuple[HaveRecord, ...]
    tactics: int


# --- Goals -----------------------------------------------------------------------------------


def _open(state: State) -> tuple[Goal, ...]:
    """Every unsolved goal, focused ones first (what a have adds to and takes away from)."""
    goals = state.goals or Goals()
    return goals.foreground + goals.background


@dataclass(frozen=True)
class _Level:
    """What a have's goal must come back to: the goals the have itself left, its own removed."""

    expected: tuple[Goal, ...]

    def closed(self, state: State) -> bool:
        """The have's goal is proved and nothing else was touched."""
        return _open(state) == self.expected

    def pending(self, state: State) -> bool:
        """The have's goal (or goals it split into) is still open, the rest untouched."""
        goals = _open(state)
        size = len(self.expected)
        return len(goals) > size and goals[len(goals) - size :] == self.expected


# --- The worker's session --------------------------------------------------------------------


@dataclass(frozen=True)
class _Mark:
    """Where a session stands after a theorem: its file, the byte after `Qed.`, the state."""

    file: str
    offset: int
    state: State


class FileCursor:
    """A worker's Rocq session (started on first use) and the theorem it last finished, so
    the next theorem of the same file continues from there instead of from the file's start."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: RocqSession | None = None
        self._source: tuple[str, SourceText] | None = None
        self._mark: _Mark | None = None

    @property
    def started(self) -> bool:
        """Whether a Rocq session was ever needed."""
        return self._session is not None

    @property
    def session(self) -> RocqSession:
        if self._session is None:
            self._session = RocqSession(timeout=self.timeout)
        return self._session

    def start(self, item: TheoremInput) -> State:
        """The state just after the theorem's statement."""
        source = self._text(item.file)
        mark, self._mark = self._mark, None
        if mark and mark.file == item.file and mark.offset <= item.byte_start:
            between = source.byte_slice(mark.offset, item.statement_end)
            state = run_long(self.session, mark.state, between, FILE_PATIENCE)
        else:
            self.session.start(item.file, [(item.library, item.prefix)])
            with patience(self.session, FILE_PATIENCE):
                state = self.session.at(item.file, source.byte_position(item.statement_end))
        if state.goals is None or not state.goals.in_proof:
            raise RocqError(f"{item.fqn}: its statement does not open a proof")
        return state

    def finished(self, item: TheoremInput, state: State) -> None:
        """Remember the state after the theorem's `Qed.` for the next theorem of the file."""
        self._mark = _Mark(item.file, item.byte_end, state)

    def skip(self, item: TheoremInput, start: State) -> None:
        """After a failure, go past the theorem with its proof as written (time allowed as for
        the file), so the next theorem does not replay the file up to here."""
        try:
            state = run_long(self.session, start, item.proof, FILE_PATIENCE)
        except RocqSessionError:
            return
        self.finished(item, state)

    def _text(self, file: str) -> SourceText:
        if self._source is None or self._source[0] != file:
            self._source = (file, SourceText(Path(file).read_text(encoding="utf-8")))
        return self._source[1]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


@contextlib.contextmanager
def open_cursor(timeout: float = DEFAULT_TIMEOUT) -> Iterator[FileCursor]:
    """The stage's per-worker resource."""
    cursor = FileCursor(timeout)
    try:
        yield cursor
    finally:
        cursor.close()


@contextlib.contextmanager
def patience(session: RocqSession, seconds: float) -> Iterator[None]:
    """Let each call of the session take up to `seconds` for a while."""
    saved, session.timeout = session.timeout, seconds
    try:
        yield
    finally:
        session.timeout = saved


def run_long(session: RocqSession, state: State, text: str, per_sentence: float) -> State:
    """Run a text of many sentences in one call, with time allowed per sentence."""
    count = max(1, len(split_sentences(text.encode("utf-8"))))
    with patience(session, per_sentence * count):
        return session.run(state, text)


def _attempt(session: RocqSession, state: State, text: str) -> State | None:
    """Run a trial text; None if Rocq rejects it (or it times out)."""
    try:
        return session.run(state, text)
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


class _Walk:
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
        original = functools.cache(lambda: self.session.run(before, self.text(index)))
        done = None
        if self._candidate(chunk.body):
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
        it closed too); give it up if the goals it must leave were touched."""
        while self.stack:
            block = self.stack[-1]
            closed = block.pending.level.closed(self.state)
            if closed and block.depth == 0:
                self._close(self.stack.pop())
            elif block.depth >= 0 and (closed or block.pending.level.pending(self.state)):
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
        if state is None or head.outer_by or not level.pending(state):
            return None
        if pre and state.goals != site.original().goals:
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
        if state is None or len(_open(state)) != len(_open(site.before)):
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
        if state is None or len(_open(state)) <= len(_open(start)):
            return None
        return _Level(_open(state)[1:]), state

    def _closed(self, end: _Ending, state: State) -> _Done | None:
        """A block closed inside its sentence: keep it if the rest of the sentence still does
        what it did (one split after the block, or none inside a `by`)."""
        block = end.block.of(self.proof)
        if end.head.outer_by:
            return self._closed_in_by(end, state)
        tagged = f"{end.lead}{OPEN_TAG} {block} {CLOSE_TAG}"
        if end.rest is None:
            if end.pre and state.goals != end.site.original().goals:
                return None
            return _Done((*end.pre, tagged + end.site.term), state, ((end.head, block),))
        rest = Span(self._first_token(end.rest), end.rest.end)
        after = _attempt(self.session, state, rest.of(self.proof) + end.site.term)
        if after is None or after.goals != end.site.original().goals:
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
        if state is None or len(_open(state)) != len(_open(start)) + 1:
            return None
        goals = _open(state)
        level = _Level(goals[: number - 1] + goals[number:])
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
        return after is not None and full is not None and after.goals == full.goals


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


def _record(index: int, head: HaveHead, block: str, proof: str) -> HaveRecord:
    """A `haves` row: the have tactic, its statement, and the rest of its block."""
    tactic = head.head.of(proof)
    rest = block[len(tactic) :].strip()
    if rest[:1] in (";", "."):
        rest = rest[1:].strip()
    return HaveRecord(index, tactic, head.statement, rest)


# --- The stage -------------------------------------------------------------------------------


def load(session: Session, row_id: int) -> TheoremInput:
    """The theorem and where its file is (the library's built copy)."""
    row = session.execute(
        sa.select(
            Theorem.fqn,
            SourceFile.path,
            Library.output_path,
            Library.logical_prefix,
            Theorem.statement,
            Theorem.proof,
            Theorem.byte_start,
            Theorem.byte_end,
        )
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(Theorem.id == row_id)
    ).one()
    fqn, path, library, prefix, statement, proof, start, end = row
    file = str(Path(library) / path)
    return TheoremInput(fqn, file, library, prefix, statement, proof, start, end)


def run(item: TheoremInput, cursor: FileCursor) -> Rewritten:
    """Tag the theorem's haves and re-check the rewritten proof (raises if it fails)."""
    if not has_candidate(item.proof):
        return Rewritten(item.proof, (), tactic_count(item.proof))
    start = cursor.start(item)
    try:
        walk = _Walk(cursor.session, item.fqn, item.proof, start)
        end = walk.rewrite()
        tagged = "".join(walk.out)
        _check(item, tagged, start, end)
    except Exception:
        cursor.skip(item, start)
        raise
    cursor.finished(item, end)
    haves = tuple(_record(i, head, block, item.proof) for i, (head, block) in enumerate(walk.haves))
    extra = {"stage": STAGE, "fqn": item.fqn, "haves": len(haves)}
    log.info("rewritten with %d haves", len(haves), extra=extra)
    return Rewritten(tagged, haves, tactic_count(tagged))


def _check(item: TheoremInput, tagged: str, start: State, end: State) -> None:
    """The rewritten proof is the original modulo tags and chain splits, it is what Rocq ran
    from the theorem's start, and Rocq accepted its `Qed.`."""
    if normalise(tagged) != normalise(item.proof):
        raise RewriteError(f"{item.fqn}: without its tags the proof is not the original one")
    ran = " ".join(end.steps[len(start.steps) :]).split()
    if ran != untagged(tagged).split():
        raise RewriteError(f"{item.fqn}: Rocq did not run the rewritten proof as written")
    if end.goals is not None and end.goals.in_proof:
        raise RocqError(f"{item.fqn}: the proof is still open after its last sentence")


def store(session: Session, row_id: int, result: Rewritten) -> None:
    """Write the tagged proof, its size and one `haves` row per tag (upserts; rows of a
    previous run with more haves are dropped). `proof` itself is never touched."""
    session.execute(
        sa.update(Theorem)
        .where(Theorem.id == row_id)
        .values(tagged_proof=result.tagged_proof, tactics=result.tactics)
    )
    session.execute(
        sa.delete(Have).where(Have.theorem_id == row_id, Have.index >= len(result.haves))
    )
    if not result.haves:
        return
    rows = [dataclasses.asdict(have) | {"theorem_id": row_id} for have in result.haves]
    statement = insert(Have).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["theorem_id", "index"],
            set_={key: statement.excluded[key] for key in ("tactic", "statement", "proof")},
        )
    )


def _ready() -> sa.ColumnElement[bool]:
    """Top-level theorems of files no other worker is walking (a worker keeps a file's
    theorems for its one session, so two sessions never both run the same file)."""
    other = aliased(Theorem)
    busy = sa.exists().where(
        other.file_id == Theorem.file_id,
        other.stage == Stage.haves,
        other.status == Status.running,
        other.lease_until > sa.func.now(),
    )
    return sa.and_(Theorem.parent_id.is_(None), ~busy)


SPEC = register(
    StageSpec(
        stage=Stage.haves,
        model=Theorem,
        input_stage=Stage.extract,
        load=load,
        run=run,
        store=store,
        ready_filter=_ready,
        order_by=lambda: [Theorem.file_id, Theorem.byte_start],
        batch_size=16,
        lease_seconds=600.0,
        runs_rocq=True,
        max_attempts=2,
        resources=open_cursor,
    )
)


def command(
    max_workers: Annotated[
        int, typer.Option(min=1, help="Rocq sessions in parallel (one per core by default)")
    ] = os.cpu_count() or 1,
    pet_timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds one Rocq call (a sentence) may take")
    ] = DEFAULT_TIMEOUT,
    rocq_bin: RocqBin = None,
) -> None:
    """Tag the haves that open intermediate goals and re-check the rewritten proofs."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    use_rocq(rocq_bin)
    ensure_schema()
    spec = dataclasses.replace(SPEC, resources=functools.partial(open_cursor, pet_timeout))
    stats = run_workers([spec], concurrency=max_workers)
    with session_factory()() as session:
        summary = have_summary(session)
    typer.echo(
        f"step 2: {stats.done} theorems done, {summary['failed']} failed; "
        f"{summary['theorems']} theorems with tagged haves, {summary['haves']} haves"
    )


def have_summary(session: Session) -> dict[str, int]:
    """Theorems with tagged haves, haves, and theorems whose rewrite failed."""
    theorems, haves = session.execute(
        sa.select(sa.func.count(sa.distinct(Have.theorem_id)), sa.func.count(Have.id))
    ).one()
    failed = session.execute(
        sa.select(sa.func.count())
        .select_from(Theorem)
        .where(Theorem.stage == Stage.haves, Theorem.status == Status.failed)
    ).scalar_one()
    return {"theorems": theorems, "haves": haves, "failed": failed}


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
