"""Replaying a proof chain by chain and annotating it: step 4's evaluation.

The proof is cut into chains by `app.chains` (a tagged have is one chain, its proof hidden).

One Rocq session per worker walks a file in order (theorems are claimed by file, largest files
first, then offset: `app.file_claims`), going past the proofs it does not evaluate as
`Admitted.`: as long as the tagged proof has the file's sentences, each chain's state is the
file's own prefix (`at`), so the proof runs once; where step 2 rewrote the proof, the rest of it
runs as steps on top. The section's variables are the first hypotheses of
the statement's context whose names the section declares. Dependencies are the glob references
inside a chain's text, named as `app.chain_names` says.

Each tagged have becomes a sub-theorem `<fqn>_have_<i>` (a `theorems` row with `parent_id`): its
statement is the have's goal as a lemma over the local context (`app.have_statement`: the most
readable printing that Rocq elaborates into that very goal), run after the parent's `Qed`, and
its proof is the have's proof, evaluated the same way (its own tagged haves nested again),
unless its goals can be read from the parent's walk (`app.have_in_place`): a proof of one `by`
chain, as two haves in three of MathComp's are, or of sentences after the have's, which are
then evaluated as the lemma's chains inside the parent's walk, their goals without the parent's.
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

from app.chain_names import ChainNames, CheckForms
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
from app.file_names import FileNames
from app.goal_diff import goal_diff, remaining, render
from app.have_in_place import LemmaView, in_place, proved_by
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
    file: FileNames
    timeout: float
    evaluated_before: bool
    """Whether rows of an earlier evaluation may need deleting."""
    library_order: int
    """Its place in the library (`app.dictionary`'s `library_order`)."""


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
    """Types Rocq printed for dictionary objects that had none cached from an earlier theorem."""


@dataclass(frozen=True)
class InPlace:
    """A have's lemma evaluated inside its parent's walk (`app.have_in_place`)."""

    steps: tuple[Step, ...]
    haves: list[PendingHave]
    """Its own haves, stated where they are in the parent's walk."""


@dataclass(frozen=True)
class Replayed:
    """Chains run from a state: their steps, the haves met, the state after the last, and
    whether every goal shown was the lemma's (always, unless run in place in a parent)."""

    steps: tuple[Step, ...]
    haves: list[PendingHave]
    end: State
    shown: bool = True


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
    in_place: InPlace | None = None
    """Its lemma, when evaluated inside the parent's walk."""


class Replayer:
    """A worker's Rocq session, kept across the theorems of a file."""

    def __init__(self) -> None:
        self.session = RocqSession(timeout=DEFAULT_TIMEOUT, skip_proofs=True)
        self._flat: RocqSession | None = None
        self.opened: tuple[str, str] | None = None
        self.load_paths: list[LoadPath] = []
        self.check_forms: CheckForms = {}
        """How each name's type is asked, learnt across the worker's theorems."""

    def open(self, file: FileNames, timeout: float) -> RocqSession:
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


def evaluate(item: TheoremInput, held: Replayer) -> Outcome:
    """Evaluate a theorem and its haves; raises `ReplayFailed` when the proof does not replay."""
    evaluator = Evaluator(item, held, held.open(item.file, item.timeout))
    try:
        root = evaluator.theorem()
    except RocqSessionError as error:
        raise ReplayFailed(f"{item.fqn}: {_message(error)}") from None
    return Outcome(item, root, evaluator.names.new_types)


@dataclass
class FileWalk:
    """Follows the file's own proof sentences while the chains are the same sentences."""

    session: RocqSession
    file: str
    sentences: list[dict[str, Any]]
    position: int = 0
    diverged: bool = False

    def next_state(self, state: State, chain: Chain) -> State:
        """The state after a chain: the file's prefix when it matches, else a run on top."""
        wanted = [normalized(s) for s in chain.sentences]
        got = self.sentences[self.position : self.position + len(wanted)]
        if not self.diverged and [normalized(s["text"]) for s in got] == wanted:
            self.position += len(wanted)
            return self.session.at(self.file, Position(**got[-1]["end"]))
        self.diverged = True
        return self.session.run(state, chain.script)


class Evaluator:
    """Replays one theorem (and its haves) in a session, collecting what the data needs."""

    def __init__(self, item: TheoremInput, held: Replayer, session: RocqSession) -> None:
        self.item, self.held, self.session, self.file = item, held, session, item.file
        self.point = item.byte_start
        self.hidden: frozenset[str] = frozenset()
        self.gvars: list[dict[str, Any]] = []
        self.names = ChainNames(
            session, item.file, item.byte_start, item.library_order, held.check_forms
        )
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
        declared = self.file.variables_at(self.point)
        self.names.prefetch([(file.span(index)[0], file.span(qed)[1]), *declared.values()], start)
        self._global_variables(start, declared)
        walk = FileWalk(self.session, file.path, proof)
        replayed = self._replay(item.fqn, parse_chains(self.text), start, walk)
        assert start.goals is not None
        haves = replayed.haves
        evaluation = self._evaluation(start.goals, start, file.span(index), haves, item.fqn)
        evaluation["replay"] = "script" if walk.diverged else "file"
        children: tuple[Evaluated, ...] = ()
        if haves:
            base = self.session.at(file.path, Position(**file.sentences[qed]["end"]))
            children = tuple(self._sub(base, have, item.fqn) for have in haves)
        return Evaluated(item.fqn, evaluation, replayed.steps, children=children)

    def _global_variables(self, start: State, declared: dict[str, tuple[int, int]]) -> None:
        """The section's variables in scope (`declared`: their declarations' ranges): Rocq lists
        them all, first, in the statement's context (a statement's binder cannot reuse their
        names)."""
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
        self,
        fqn: str,
        chains: tuple[Chain, ...],
        state: State,
        walk: FileWalk | None,
        view: LemmaView | None = None,
    ) -> Replayed:
        """Run the chains from the initial state; the proof must be finished after the last.
        With a `view`, the chains are a have's proof run inside its parent's walk: the goals
        shown are the lemma's, and a lemma left unfinished is not shown, not a failure."""
        steps, haves, shown = [], [], True
        before = _goals(state, view)
        for number, chain in enumerate(chains):
            have = (
                self._have(len(haves) + 1, number, chain, state) if chain.have is not None else None
            )
            try:
                if walk is None:
                    state = self.session.run(state, chain.script)
                elif have is not None and have.statement is not None:
                    state, have = self._in_place(fqn, have, chain, state, walk)
                else:
                    state = walk.next_state(state, chain)
            except RocqSessionError as error:
                raise ReplayFailed(f"{_where(fqn, number, chains)}: {_message(error)}") from None
            if have is not None:
                haves.append(have)
            goals = _goals(state, view)
            if before is None or goals is None:
                shown, goals = False, None
            else:
                steps.append(self._step(chain, before, goals, state))
            before = goals
        if view is None and not state.proof_finished:
            raise ReplayFailed(f"{fqn}: goals remain after the last chain ({len(chains)} chains)")
        finished = before is not None and before.finished
        return Replayed(tuple(steps), haves, state, shown and finished)

    def _in_place(
        self, parent: str, have: PendingHave, chain: Chain, state: State, walk: FileWalk
    ) -> tuple[State, PendingHave]:
        """Walk a have's chain; when its proof is the chain's last sentences, as its lemma's
        chains, inside the parent's walk (`app.have_in_place`): the state after the chain, and
        the have with its lemma evaluated there if every goal shown was the lemma's."""
        assert have.statement is not None
        goal = have.statement.goal
        head = in_place(goal, chain, have.chains)
        if head is None or goal is None:
            return walk.next_state(state, chain), have
        opened = walk.next_state(state, _part(chain, 0, head))
        assert opened.goals is not None
        view = LemmaView.opened(opened.goals, goal)
        if view is None:
            proof = _part(chain, head, len(chain.sentences))
            return walk.next_state(opened, proof), have
        inner = self._replay(f"{parent}_have_{have.index}", have.chains, opened, walk, view)
        if not inner.shown:
            return inner.end, have
        return inner.end, dataclasses.replace(have, in_place=InPlace(inner.steps, inner.haves))

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
            self.names.named([self._file_span(span) for span in chain.named], at)[0],
        )

    def _file_span(self, span: tuple[int, int]) -> tuple[int, int]:
        return self.alignment.to_file(span[0]), self.alignment.to_file(span[1])

    def _evaluation(
        self, goals: Goals, at: State, named: tuple[int, int], haves: list[PendingHave], fqn: str
    ) -> dict[str, Any]:
        """What the data says of a theorem besides its chains, from its initial goals."""
        dependencies, notations = self.names.named([named], at)
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
        dependencies, notations = self.names.named([declared[n] for n in hypothesis.names], state)
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
            chains, goal = have.chains, have.statement.goal
            if have.in_place is not None and goal is not None:
                initial, at = Goals((goal,), in_proof=True), base
                steps, haves = have.in_place.steps, have.in_place.haves
            elif (by := proved_by(goal, chains)) is not None:
                initial, at, haves = by[0], base, []
                steps = (self._step(chains[0], *by, base),)
            else:
                at = self.session.run(base, statement)
                assert at.goals is not None
                initial = at.goals
                replayed = self._replay(fqn, chains, at, None)
                steps, haves = replayed.steps, replayed.haves
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


def _part(chain: Chain, start: int, end: int) -> Chain:
    """Some of a chain's sentences, as a chain that runs them (the walk's unit)."""
    sentences = chain.sentences[start:end]
    return dataclasses.replace(chain, sentences=sentences, script=" ".join(sentences))


def _goals(state: State, view: LemmaView | None) -> Goals | None:
    """The goals at a state, as the lemma sees them with a `view`."""
    assert state.goals is not None
    return state.goals if view is None else view.goals(state.goals)


def _have_entry(have: PendingHave, parent: str) -> dict[str, Any]:
    return {"index": have.index, "chain": have.chain, "fqn": f"{parent}_have_{have.index}"}


def _message(error: Exception) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _where(fqn: str, number: int, chains: tuple[Chain, ...]) -> str:
    text = " ".join(chains[number].text.split())
    text = text if len(text) <= 200 else text[:200] + "…"
    return f"{fqn}: chain {number + 1} of {len(chains)} `{text}`"
