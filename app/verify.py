"""`rocqcot verify`: replay every exported example's scripts and haves in Rocq.

For each theorem of an export file (any format), a Rocq session starts where its proof starts
(after `Proof.` in its file; for a have sub-theorem, its lemma stated after the theorem's
`Qed.`) and runs the example's `<script>` blocks as written and its `<have>` blocks, in order.
An export file may come from anywhere: a script block runs only if each of its sentences is a
tactic, a bullet or a brace (`app.rocq.tactics`); any other sentence is the example's failure.
Every example must also pass the identifier check (`app.identifiers`): each name its code
blocks use is introduced by its prompt, an earlier block or the library.
A have block shows the have without its proof (that is the sub-theorem's own CoT), so Rocq runs
the chain of the proof it shows: the have with its proof. Every example must replay without
error, and a theorem's longest example (the one that ends its CoT) must leave no goal. The
examples of one CoT share their first blocks: each prefix runs once.

The report (`<name>_verify.json` beside the file) records the file's hash, so verifying an
unchanged file again does nothing.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import json
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.chains import OPEN_TAG, parse_chains
from app.cot import CODE_KINDS, Block, CotError, same_code, shown_code
from app.db.models import Library, SourceFile, Theorem
from app.exports.examples import TrainingExample, read_examples
from app.exports.records import library_names
from app.file_names import sentence_index
from app.identifiers import unintroduced
from app.plural import plural
from app.rocq.positions import Position
from app.rocq.session import RocqSession
from app.rocq.state import LoadPath, RocqSessionError, State
from app.rocq.tactics import NotATactic, tactic_sentences

TIMEOUT = 60.0
_PROOF = re.compile(r"Proof\b")


@dataclass(frozen=True)
class ProofStart:
    """Where a theorem's proof starts, and the chains its CoT's code blocks stand for."""

    name: str
    path: str
    """The built file."""
    load_path: tuple[str, str]
    position: Position
    """After `Proof.` (or the statement); for a have sub-theorem, after its theorem's `Qed.`."""
    statement: str | None
    """The lemma a have sub-theorem runs first, at `position`."""
    scripts: tuple[tuple[str, str], ...]
    """(shown text, script Rocq runs) of each chain of the proof."""
    order: tuple[int, int, str]


@dataclass(frozen=True)
class Failure:
    name: str
    index: int
    reason: str


@dataclass(frozen=True)
class Report:
    file: str
    sha256: str
    examples: int
    theorems: int
    failures: tuple[Failure, ...]
    seconds: float

    def line(self) -> str:
        return (
            f"verify: {plural(self.examples, 'example')} of {plural(self.theorems, 'theorem')} "
            f"checked and replayed in Rocq in {self.seconds:.1f} s: "
            f"{plural(len(self.failures), 'failure')}"
        )


# --- Where proofs start ----------------------------------------------------------------------


def proof_starts(session: Session, names: set[str]) -> dict[str, ProofStart]:
    """Each named theorem's proof start, read from the database (unknown names left out)."""
    rows = session.execute(
        sa.select(
            Theorem,
            SourceFile.path,
            SourceFile.dependency_order,
            SourceFile.id,
            Library.output_path,
            Library.logical_prefix,
        )
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .join(Library, Library.id == SourceFile.library_id)
        .where(Theorem.fqn.in_(sorted(names)))
    ).all()
    sentences: dict[int, list[dict[str, Any]]] = {}
    starts = {}
    for theorem, path, order, file_id, output, prefix in rows:
        if file_id not in sentences:
            sentences[file_id] = _sentences(session, file_id)
        at, statement = _start(theorem, sentences[file_id])
        chains = parse_chains(theorem.tagged_proof or theorem.proof)
        starts[theorem.fqn] = ProofStart(
            theorem.fqn,
            str(Path(output) / path),
            (output, prefix),
            at,
            statement,
            tuple((chain.text, chain.script) for chain in chains),
            (order or 0, theorem.byte_start or 0, theorem.fqn),
        )
    return starts


def _sentences(session: Session, file_id: int) -> list[dict[str, Any]]:
    found = session.execute(sa.select(SourceFile.sentences).where(SourceFile.id == file_id))
    return found.scalar_one()


def _start(theorem: Theorem, sentences: list[dict[str, Any]]) -> tuple[Position, str | None]:
    """Where the proof starts, as step 4 replayed it."""
    starts = [s["byte_start"] for s in sentences]
    if theorem.parent_id is not None:  # after the top-level theorem's `Qed.` (its byte_end)
        qed = sentence_index(sentences, starts, (theorem.byte_end or 1) - 1)
        return Position(**sentences[qed]["end"]), (theorem.evaluation or {}).get("statement")
    index = sentence_index(sentences, starts, theorem.byte_start or 0)
    following = sentences[index + 1] if index + 1 < len(sentences) else None
    if following is not None and _PROOF.match(following["text"]):
        index += 1
    return Position(**sentences[index]["end"]), None


# --- What runs (pure) ------------------------------------------------------------------------


def runnable(code: Sequence[Block], start: ProofStart) -> list[str]:
    """What Rocq runs for each code block: a script as written, if it holds only tactics; for a
    have, the proof's next have chain that shows it (the have with its proof). A `CotError`
    when a script holds anything else, or a have is not the proof's."""
    haves = [(text, script) for text, script in start.scripts if OPEN_TAG in text]
    texts, position = [], 0
    for number, block in enumerate(code, 1):
        if block.kind != "have":
            try:
                tactic_sentences(block.content)
            except NotATactic as refused:
                raise CotError(f"script block {number}: {refused}") from None
            texts.append(block.content)
            continue
        shows = [same_code(block.content, shown_code(text)) for text, _ in haves]
        found = next((i for i in range(position, len(haves)) if shows[i]), None)
        if found is None:
            excerpt = " ".join(block.content.split())[:120]
            raise CotError(f"have block {number} `{excerpt}` is not one of the proof's next haves")
        texts.append(haves[found][1])
        position = found + 1
    return texts


def code_of(example: TrainingExample) -> tuple[Block, ...]:
    return tuple(m.block for m in example.blocks if m.block.kind in CODE_KINDS)


# --- Replaying ---------------------------------------------------------------------------------


class ProofReplay:
    """One theorem's replays in a session: each prefix of code blocks runs once."""

    def __init__(self, session: RocqSession, start: ProofStart) -> None:
        self.session, self.start = session, start
        session.start(start.path, [LoadPath(*start.load_path)])
        state = session.at(start.path, start.position)
        if start.statement is not None:
            state = session.run(state, start.statement)
        self.states: dict[tuple[str, ...], State] = {(): state}

    def replay(self, texts: list[str]) -> State:
        """The state after running the texts (`RocqSessionError` names the failing block)."""
        done = max(n for n in range(len(texts) + 1) if tuple(texts[:n]) in self.states)
        state = self.states[tuple(texts[:done])]
        for number in range(done, len(texts)):
            try:
                state = self.session.run(state, texts[number])
            except RocqSessionError as error:
                excerpt = " ".join(texts[number].split())[:120]
                raise RocqSessionError(f"code block {number + 1} `{excerpt}`: {error}") from None
            self.states[tuple(texts[: number + 1])] = state
        return state


def verify_theorem(
    session: RocqSession, start: ProofStart, examples: list[TrainingExample]
) -> list[Failure]:
    """Replay a theorem's examples; the longest must end with no goal."""
    try:
        replayer = ProofReplay(session, start)
    except RocqSessionError as error:
        return [Failure(e.name, e.index, f"the proof does not start: {error}") for e in examples]
    longest = max(len(code_of(example)) for example in examples)
    failures = []
    for example in sorted(examples, key=lambda e: len(code_of(e))):
        try:
            state = replayer.replay(runnable(code_of(example), start))
        except (CotError, RocqSessionError) as error:
            failures.append(Failure(example.name, example.index, str(error)))
            continue
        if len(code_of(example)) == longest and not _finished(session, state):
            reason = "goals remain after the last code block"
            failures.append(Failure(example.name, example.index, reason))
    return failures


def _finished(session: RocqSession, state: State) -> bool:
    goals = session.goals(state)
    return goals.in_proof and goals.finished


def _by_file(
    starts: dict[str, ProofStart], groups: dict[str, list[TrainingExample]]
) -> Iterator[list[tuple[ProofStart, list[TrainingExample]]]]:
    """The theorems of each file, in file order (a session walks a file forward)."""
    files: dict[str, list[ProofStart]] = collections.defaultdict(list)
    for start in starts.values():
        files[start.path].append(start)
    for path in sorted(files, key=lambda p: min(s.order for s in files[p])):
        yield [(s, groups[s.name]) for s in sorted(files[path], key=lambda s: s.order)]


def _verify_file(work: list[tuple[ProofStart, list[TrainingExample]]]) -> list[Failure]:
    failures = []
    with RocqSession(timeout=TIMEOUT) as session:
        for start, examples in work:
            failures += verify_theorem(session, start, examples)
    return failures


def identifier_failures(db_session: Session, examples: list[TrainingExample]) -> list[Failure]:
    """The examples whose code uses a name nothing before it introduces."""
    library = library_names(db_session, {example.name for example in examples})
    failures = []
    for example in examples:
        blocks = [marked.block for marked in example.blocks]
        trained = [not marked.ignore for marked in example.blocks]
        found = unintroduced(example.initial_goal, blocks, library.get(example.name, ()), trained)
        if found:
            failures.append(Failure(example.name, example.index, found[0].reason()))
    return failures


def verify_examples(
    db_session: Session, examples: list[TrainingExample], jobs: int = 1
) -> list[Failure]:
    """Check every example's names, and replay it (`jobs` Rocq sessions, one file each at a
    time)."""
    groups: dict[str, list[TrainingExample]] = collections.defaultdict(list)
    for example in examples:
        groups[example.name].append(example)
    starts = proof_starts(db_session, set(groups))
    failures = [
        Failure(e.name, e.index, "no such theorem in the database")
        for name in groups
        if name not in starts
        for e in groups[name]
    ]
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for found in pool.map(_verify_file, _by_file(starts, groups)):
            failures += found
    # One reason an example: a refused or failing replay says more than a name.
    failing = {(failure.name, failure.index) for failure in failures}
    replayed = [e for e in examples if (e.name, e.index) not in failing]
    return failures + identifier_failures(db_session, replayed)


# --- The report -------------------------------------------------------------------------------


def report_path(path: Path) -> Path:
    return path.with_name(f"{path.stem}_verify.json")


def cached_report(path: Path) -> Report | None:
    """The report of an earlier verification of exactly this file, if any."""
    saved = report_path(path)
    if not saved.exists():
        return None
    data = json.loads(saved.read_text(encoding="utf-8"))
    if data.get("sha256") != file_hash(path):
        return None
    failures = tuple(Failure(**failure) for failure in data["failures"])
    return Report(**{**data, "failures": failures})


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def verify_file(db_session: Session, path: Path, jobs: int = 1) -> Report:
    """Verify an export file and write its report beside it."""
    started = time.monotonic()
    examples = read_examples(path)
    failures = verify_examples(db_session, examples, jobs)
    report = Report(
        str(path),
        file_hash(path),
        len(examples),
        len({e.name for e in examples}),
        tuple(sorted(failures, key=lambda f: (f.name, f.index))),
        round(time.monotonic() - started, 1),
    )
    report_path(path).write_text(json.dumps(asdict(report), indent=2) + "\n", encoding="utf-8")
    return report
