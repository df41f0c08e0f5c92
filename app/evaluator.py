"""Replaying a proof chain by chain and annotating it: step 4's evaluation.

The proof is cut into chains by `app.chains` (a tagged have is one chain, its proof hidden).

One Rocq session per worker walks a file in order (theorems are claimed by file, largest files
first, then offset: `app.file_claims`), going past the proofs it does not evaluate as
`Admitted.`: as long as the tagged proof has the file's sentences, each chain's state is the
file's own prefix (`at`), so the proof runs once; where step 2 rewrote the proof, the rest of it
runs as steps on top. The section's variables are the first hypotheses of
the statement's context whose names the section declares. Dependencies are the glob references
inside a chain's text (never hypotheses or local names), each named by its dictionary fqn (the
glob definition's, sections left out: what the searches of the CoTs look up) and by the name
Rocq's `Locate` gives it at that point (`located`: a section still open is part of it), with
its type from `Check` of that name (cached per name), its dictionary entry and the spans of
the file that name it. Where Rocq does not know the glob's name (the glob drops some module
paths), both are the name it locates.

Each tagged have becomes a sub-theorem `<fqn>_have_<i>` (a `theorems` row with `parent_id`): its
statement is the have's goal as a lemma over the local context (`app.have_statement`: the most
readable printing that Rocq elaborates into that very goal), run after the parent's `Qed`, and
its proof is the have's proof, evaluated the same way (its own tagged haves nested again),
unless its goals can be read from the parent's walk (`app.have_in_place`: a proof of one `by`
chain, as two haves in three of MathComp's are, or of single sentences that the walk then runs
one at a time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import dictionary as dico
from app.chains import (
    PROOF_START,
    Alignment,
    Chain,
    HaveBlock,
    has_tags,
    normalized,
    parse_chains,
    untagged,
)
from app.dictionary import Ref
from app.goal_diff import goal_diff, remaining, render
from app.have_in_place import Walked, lemma_goals, walk_each_sentence
from app.have_statement import HaveStatement, NotStated, PrintingMemory, state_have
from app.rocq.goals import Goals, Hypothesis
from app.rocq.positions import Position
from app.rocq.protocol import FLAT_PRINTING
from app.rocq.session import RocqSession
from app.rocq.state import LoadPath, RocqError, RocqSessionError, State

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0


class ReplayFailed(Exception):
    """A proof did not replay: Rocq's message and the chain where it stopped."""


@dataclass(frozen=True)
class TheoremInput:
    """A theorem to evaluate, with its file and what the dictionary knows of its names."""

    theorem_id: int
    fqn: str
    proof: str
    tagged_proof: str | None
    byte_start: int
    byte_end: int
    file: dico.FileNames
    timeout: float
    evaluated_before: bool
    """Whether rows of an earlier evaluation may need deleting."""


@dataclass(frozen=True)
class Step:
    """One evaluated chain, as a `proof_steps` row."""

    chain: str
    goals: str
    goals_with_gvars: str
    goal_diff: str
    dependencies: list[dict[str, Any]]


@dataclass(frozen=True)
class Evaluated:
    """An evaluated theorem or have sub-theorem (with its own sub-theorems)."""

    fqn: str
    evaluation: dict[str, Any] | None
    steps: tuple[Step, ...] = ()
    error: str | None = None
    statement: str = ""
    proof: str = ""
    tagged_proof: str | None = None
    have_index: int | None = None
    children: tuple[Evaluated, ...] = ()


@dataclass(frozen=True)
class Outcome:
    """The result of evaluating one claimed theorem."""

    item: TheoremInput
    root: Evaluated
    types: dict[str, str]
    """Types Rocq printed for dictionary objects that had none cached."""


@dataclass(frozen=True)
class PendingHave:
    """A have met during a replay, evaluated as a sub-theorem once the proof is done."""

    index: int
    chain: int
    block: HaveBlock
    statement: HaveStatement | None
    """The have's goal as a lemma; None if Rocq refused the have or no printing states it."""
    chains: tuple[Chain, ...]
    """Its proof's chains: the lemma's."""
    error: str | None = None
    walked: tuple[Walked, ...] = ()
    """The have's sentence and each one after it in its chain with the goals after them, when
    the walk fetched them (`app.have_in_place`)."""


class Replayer:
    """A worker's Rocq session, kept across the theorems of a file, and the types it printed."""

    def __init__(self) -> None:
        self.session = RocqSession(timeout=DEFAULT_TIMEOUT, skip_proofs=True)
        self._flat: RocqSession | None = None
        self.opened: tuple[str, str] | None = None
        self.load_paths: list[LoadPath] = []
        self.types: dict[str, tuple[str, str | None]] = {}
        """The name an object has at a point (its section path while open) → the name Rocq
        locates and the type it prints."""

    def open(self, file: dico.FileNames, timeout: float) -> RocqSession:
        """The session on the file (started when the worker moves to another file)."""
        self.session.timeout = timeout
        if self.opened != (file.path, file.content_hash):
            on_disk = Path(file.path).read_bytes()
            if hashlib.sha256(on_disk).hexdigest() != file.content_hash:
                raise ReplayFailed(f"{file.path} changed since step 0 built it: run step 0 again")
            self.load_paths = [LoadPath(*file.load_path)]
            self.session.start(file.path, self.load_paths)
            self.opened = (file.path, file.content_hash)
        return self.session

    def flat(self) -> RocqSession:
        """A second session on the open file whose texts are never cut, for the few haves whose
        goal nests deeper than coqidetop's display shows; started on first need."""
        assert self.opened is not None
        if self._flat is None:
            self._flat = RocqSession(timeout=self.session.timeout, skip_proofs=True)
        self._flat.timeout = self.session.timeout
        self._flat.start(self.opened[0], self.load_paths, FLAT_PRINTING)
        return self._flat

    def close(self) -> None:
        self.session.close()
        if self._flat is not None:
            self._flat.close()


@contextmanager
def replayer() -> Iterator[Replayer]:
    """The per-worker resource: one Rocq session for all the rows the worker takes."""
    held = Replayer()
    try:
        yield held
    finally:
        held.close()


def run(item: TheoremInput, held: Replayer) -> Outcome:
    """Evaluate a theorem and its haves; raises `ReplayFailed` when the proof does not replay."""
    evaluator = Evaluator(item, held, held.open(item.file, item.timeout))
    try:
        root = evaluator.theorem()
    except RocqSessionError as error:
        raise ReplayFailed(f"{item.fqn}: {_message(error)}") from None
    return Outcome(item, root, evaluator.new_types)


@dataclass
class FileWalk:
    """Follows the file's own proof sentences while the chains are the same sentences."""

    sentences: list[dict[str, Any]]
    position: int = 0
    diverged: bool = False

    def next_states(
        self, session: RocqSession, file: str, state: State, chain: Chain, each: bool
    ) -> tuple[State, ...]:
        """The state after a chain: the file's prefix when it matches (with `each`, the state
        after each of its sentences, their goals fetched), else a run on top."""
        wanted = [normalized(s) for s in chain.sentences]
        got = self.sentences[self.position : self.position + len(wanted)]
        if not self.diverged and [normalized(s["text"]) for s in got] == wanted:
            self.position += len(wanted)
            ends = got if each else got[-1:]
            return tuple(session.at(file, Position(**s["end"])) for s in ends)
        self.diverged = True
        return (session.run(state, chain.script),)


class Evaluator:
    """Replays one theorem (and its haves) in a session, collecting what the data needs."""

    def __init__(self, item: TheoremInput, held: Replayer, session: RocqSession) -> None:
        self.item, self.held, self.session, self.file = item, held, session, item.file
        self.point = item.byte_start
        self.hidden: frozenset[str] = frozenset()
        self.gvars: list[dict[str, Any]] = []
        self.new_types: dict[str, str] = {}
        self.printings = PrintingMemory()
        """What the theorem's haves needed to be stated, for its later haves."""
        first = self.file.span(self.file.sentence_at(item.byte_start) + 1)[0]
        self.text = item.tagged_proof or item.proof
        self.alignment = Alignment(item.proof, self.text, first)

    def theorem(self) -> Evaluated:
        """The root theorem: replay, then its haves as sub-theorems after its `Qed`."""
        file, item = self.file, self.item
        index, qed = file.sentence_at(item.byte_start), file.sentence_at(item.byte_end - 1)
        statement = file.sentences[index]
        proof = list(file.sentences[index + 1 : qed])
        opening = proof.pop(0) if proof and PROOF_START.match(proof[0]["text"]) else statement
        start = self.session.at(file.path, Position(**opening["end"]))
        self._global_variables(start)
        walk = FileWalk(proof)
        steps, haves = self._replay(item.fqn, parse_chains(self.text), start, walk)
        assert start.goals is not None
        evaluation = self._evaluation(start.goals, start, file.span(index), haves, item.fqn)
        evaluation["replay"] = "script" if walk.diverged else "file"
        children: tuple[Evaluated, ...] = ()
        if haves:
            base = self.session.at(file.path, Position(**file.sentences[qed]["end"]))
            children = tuple(self._sub(base, have, item.fqn) for have in haves)
        return Evaluated(item.fqn, evaluation, steps, children=children)

    def _global_variables(self, start: State) -> None:
        """The section's variables in scope: Rocq lists them all, first, in the statement's
        context (a statement's binder cannot reuse their names)."""
        declared = self.file.variables_at(self.point)
        assert start.goals is not None and start.goals.foreground
        hypotheses = []
        for h in start.goals.foreground[0].hypotheses:
            shared = tuple(itertools.takewhile(declared.__contains__, h.names))
            if shared:
                hypotheses.append(Hypothesis(shared, h.body, h.type))
            if len(shared) < len(h.names):
                break
        self.hidden = frozenset(name for h in hypotheses for name in h.names)
        self.gvars = [self._variable(h, declared, start) for h in hypotheses]

    def _replay(
        self, fqn: str, chains: tuple[Chain, ...], state: State, walk: FileWalk | None
    ) -> tuple[tuple[Step, ...], list[PendingHave]]:
        """Run the chains from the initial state; the proof must be finished after the last."""
        steps, haves = [], []
        for number, chain in enumerate(chains):
            previous = state
            have = (
                self._have(len(haves) + 1, number, chain, state) if chain.have is not None else None
            )
            try:
                states = (
                    walk.next_states(self.session, self.file.path, state, chain, _each(have))
                    if walk is not None
                    else (self.session.run(state, chain.script),)
                )
            except RocqSessionError as error:
                raise ReplayFailed(f"{_where(fqn, number, chains)}: {_message(error)}") from None
            state = states[-1]
            if have is not None:
                haves.append(_walked(have, chain, states))
            assert previous.goals is not None and state.goals is not None
            steps.append(self._step(chain, previous.goals, state.goals, state))
        if not state.proof_finished:
            raise ReplayFailed(f"{fqn}: goals remain after the last chain ({len(chains)} chains)")
        return tuple(steps), haves

    def _have(self, index: int, number: int, chain: Chain, state: State) -> PendingHave:
        """The have's goal as a lemma, decided where the have is (its statement alone)."""
        assert chain.have is not None
        chains = parse_chains(self.text, chain.have.proof_start, chain.have.proof_end)
        try:
            statement = state_have(
                self.session,
                state,
                chain.lead,
                chain.goal_index,
                self.hidden,
                self.printings,
                self.held.flat,
            )
        except RocqSessionError as error:
            error_text = f"Rocq refused the have's statement: {_message(error)}"
            return PendingHave(index, number, chain.have, None, chains, error_text)
        except NotStated as problems:
            error_text = f"the have's goal does not read back as a lemma: {problems}"
            return PendingHave(index, number, chain.have, None, chains, error_text)
        return PendingHave(index, number, chain.have, statement, chains)

    def _step(self, chain: Chain, before: Goals, goals: Goals, at: State) -> Step:
        """A chain's step: the goals it leaves and what it changed, its dependencies (their
        types asked `at` a state where they mean what they meant in the chain)."""
        return Step(
            chain.text,
            render(goals, self.hidden),
            render(goals),
            goal_diff(remaining(before, self.hidden), remaining(goals, self.hidden)),
            self._names([self._file_span(span) for span in chain.named], at)[0],
        )

    def _file_span(self, span: tuple[int, int]) -> tuple[int, int]:
        return self.alignment.to_file(span[0]), self.alignment.to_file(span[1])

    def _evaluation(
        self, goals: Goals, at: State, named: tuple[int, int], haves: list[PendingHave], fqn: str
    ) -> dict[str, Any]:
        """What the data says of a theorem besides its chains, from its initial goals."""
        dependencies, notations = self._names([named], at)
        return {
            "initial_goal": render(goals, self.hidden),
            "initial_goal_with_gvars": render(goals),
            "global_variables": self.gvars,
            "statement_dependencies": dependencies,
            "statement_notations": notations,
            "haves": [_have_entry(h, fqn) for h in haves],
        }

    def _variable(
        self, hypothesis: Hypothesis, declared: dict[str, tuple[int, int]], state: State
    ) -> dict[str, Any]:
        """A global variable as a `Variable`/`Variables` line, with what its declaration names."""
        names, type_ = " ".join(hypothesis.names), hypothesis.type
        keyword = "Variables" if len(hypothesis.names) > 1 else "Variable"
        text = f"{keyword} {names} : {type_}."
        if hypothesis.body is not None:
            text = f"Let {names} : {type_} := {hypothesis.body}."
        dependencies, notations = self._names([declared[n] for n in hypothesis.names], state)
        return {"text": text, "names": list(hypothesis.names), "dependencies": dependencies,
                "notations": notations}  # fmt: skip

    # Haves as sub-theorems ----------------------------------------------------------------

    def _sub(self, base: State, have: PendingHave, parent: str) -> Evaluated:
        """Evaluate a have as the lemma `<parent>_have_<i>`, stated after the parent's `Qed`."""
        fqn, block = f"{parent}_have_{have.index}", have.block
        common = {
            "proof": untagged(block.proof).strip(),
            "tagged_proof": block.proof if has_tags(block.proof) else None,
            "have_index": have.index,
        }
        try:
            if have.statement is None:
                raise ReplayFailed(have.error)
            statement = have.statement.lemma(fqn.rpartition(".")[2])
            chains = have.chains
            if (read := lemma_goals(have.statement.goal, chains, have.walked)) is not None:
                initial, at, haves = read[0], base, []
                pairs = itertools.pairwise(read)
                steps = tuple(self._step(c, *p, base) for c, p in zip(chains, pairs, strict=True))
            else:
                at = self.session.run(base, statement)
                assert at.goals is not None
                initial = at.goals
                steps, haves = self._replay(fqn, chains, at, None)
        except (ReplayFailed, RocqSessionError) as error:
            message = f"{fqn}: {_message(error)}"
            log.info("have not evaluated: %s", message, extra={"stage": "evaluate", "fqn": fqn})
            return Evaluated(fqn, None, error=message, statement=block.statement, **common)
        named = self._file_span((block.statement_start, block.statement_end))
        evaluation = self._evaluation(initial, at, named, haves, fqn)
        printing = have.statement.printing
        evaluation |= {"statement": statement, "printing": printing, "parent_chain": have.chain}
        children = tuple(self._sub(base, h, fqn) for h in haves)
        return Evaluated(fqn, evaluation, steps, None, statement, children=children, **common)

    # Dependencies and notations -----------------------------------------------------------

    def _names(self, spans: list[tuple[int, int]], state: State) -> tuple[list[Any], list[Any]]:
        """The objects and the notations named in character ranges of the file, each once, in
        order, by dictionary fqn, with their dictionary entry (objects: also the name located at
        this point, its type, and the character spans in the built file that name it)."""
        objects: dict[str, dict[str, Any]] = {}
        notations: dict[str, dict[str, Any]] = {}
        for ref in (ref for span in spans for ref in self.file.refs_between(*span)):
            info = _info(self.file.entries.get(ref.fqn))
            if ref.kind == "not" and ref.fqn not in notations:
                notations[ref.fqn] = {"notation": ref.notation, "scope": ref.scope,
                                      "fqn": ref.fqn, "info": info}  # fmt: skip
            elif ref.kind != "not" and ref.fqn not in objects:
                fqn, located, type_ = self._resolve(ref, state)
                objects[ref.fqn] = {"name": ref.written, "fqn": fqn, "located": located,
                                    "kind": ref.kind, "type": type_, "info": info,
                                    "spans": [[ref.start, ref.end]]}  # fmt: skip
            elif ref.kind != "not":
                objects[ref.fqn]["spans"].append([ref.start, ref.end])
        return list(objects.values()), list(notations.values())

    def _resolve(self, ref: Ref, state: State) -> tuple[str, str, str | None]:
        """A reference's fqn, the name Rocq locates for it at this point and its type, cached by
        that name (an object of a section still open has another name, and type, once it
        closes). The fqn is the glob's, the dictionary's, unless Rocq does not know that name
        (the glob drops some module paths) and locates the text as another object."""
        name = self.file.name_at(ref.fqn, self.point)
        final, cache = name == ref.fqn, self.held.types
        if name not in cache:
            cached = self.file.entries.get(ref.fqn, {}).get("type") if final else None
            cache[name] = (name, cached) if cached else self._query_type(ref, name, state)
            located, type_ = cache[name]
            if final and not cached and type_ and located == name and ref.fqn in self.file.entries:
                self.new_types[ref.fqn] = type_
        located, type_ = cache[name]
        return ref.fqn if located == name else located, located, type_

    def _query_type(self, ref: Ref, name: str, state: State) -> tuple[str, str | None]:
        """`Check @name`; a glob name Rocq does not know is located from the text instead."""
        type_ = dico.check(self.session, state, name)
        if type_ is None:
            located = dico.locate(self.session, state, ref.written)
            if located is not None and located != name:
                return located, dico.check(self.session, state, located)
        return name, type_


def _each(have: PendingHave | None) -> bool:
    """Whether the have's chain is walked a sentence at a time, so that its lemma's goals can
    be read from the walk (`app.have_in_place`)."""
    if have is None or have.statement is None:
        return False
    return walk_each_sentence(have.statement.goal, have.chains)


def _walked(have: PendingHave, chain: Chain, states: tuple[State, ...]) -> PendingHave:
    """The have with the goals after its sentence and each one after it, when the walk fetched
    the state after each sentence of its chain."""
    first = len(chain.sentences) - len(have.chains) - 1
    if len(states) != len(chain.sentences) or first < 0:
        return have
    pairs = zip(chain.sentences[first:], states[first:], strict=True)
    walked = tuple(Walked(text, state.goals) for text, state in pairs if state.goals is not None)
    return dataclasses.replace(have, walked=walked)


def _have_entry(have: PendingHave, parent: str) -> dict[str, Any]:
    return {"index": have.index, "chain": have.chain, "fqn": f"{parent}_have_{have.index}"}


def _message(error: Exception) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _where(fqn: str, number: int, chains: tuple[Chain, ...]) -> str:
    text = " ".join(chains[number].text.split())
    text = text if len(text) <= 200 else text[:200] + "…"
    return f"{fqn}: chain {number + 1} of {len(chains)} `{text}`"


STEP_6_SOURCES = frozenset({"llm", "offline"})
"""Docstrings step 6 wrote: not the dictionary's, so not recorded here (the same inputs give
the same evaluation, whether step 6 ran before it or not)."""


def _info(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dictionary's word on an object, for the data (without step 6's docstrings)."""
    if entry is None:
        return None
    if entry.get("docstring_source") in STEP_6_SOURCES:
        return {"docstring": None, "docstring_source": None, "fullname": entry["fullname"]}
    return {k: entry[k] for k in ("docstring", "docstring_source", "fullname")}
