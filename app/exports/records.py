"""Every read the exports make: the rows each step left, as plain data.

The exports never read a step module: what they need of the database is here, in library
order (file dependency order, then offset, then id), so the same database always exports the
same bytes. Each function reads what a step wrote, whatever stage its rows reached since, so a
step's export stays the same once later steps ran.
"""

from __future__ import annotations

import collections
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import gate
from app.cot import Block
from app.db.enums import Stage, Status
from app.db.models import (
    Annotation,
    Cot,
    Example,
    Library,
    LibraryObject,
    ProofStep,
    SearchBlock,
    SearchQuery,
    SourceFile,
    Theorem,
)
from app.db.toolchain import recorded
from app.llm4docq import export_dictionary
from app.results import filtered_blocks, job_params, load_cots
from app.split import Marked

# --- Libraries --------------------------------------------------------------------------------

_OPAM_VERSION = re.compile(r'^version:\s*"([^"]+)"', re.MULTILINE)


@dataclass(frozen=True)
class LibraryFacts:
    """What the system prompt and the dataset card say of a library."""

    name: str
    logical_prefix: str
    ssreflect: bool
    """Whether it requires SSReflect (a file of it loads `ssreflect`, or step 0 built Rocq's
    `ssr` files for it)."""
    rocq_version: str | None
    version: str | None
    """The library's own version, when known."""
    input_path: str
    output_path: str
    extractor_version: str | None
    settings: dict[str, Any]


def versions(library: Library, toolchain: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """The Rocq version and the library's version: the one place they come from (the
    database's toolchain, else step 0's record of Rocq; the library's `version:` in an opam
    file of its source, else, for a library installed with Rocq, its Debian package's)."""
    version = None
    source = Path(library.input_path)
    for opam in sorted(source.glob("*.opam")) if source.is_dir() else ():
        if found := _OPAM_VERSION.search(opam.read_text(encoding="utf-8", errors="replace")):
            version = found.group(1)
            break
    if version is None and toolchain and "/user-contrib/" in library.input_path:
        package = "libcoq-" + library.logical_prefix.split(".")[0].lower()
        installed = toolchain.get("libraries") or {}
        found = sorted({v for name, v in installed.items() if name.startswith(package)})
        version = ", ".join(found) or None
    if toolchain:
        return toolchain["rocq"], version
    rocq = (library.rocq_version or "").split()  # `coqc --print-version`: Rocq's, OCaml's
    return (rocq[0] if rocq else None), version


def toolchain(session: Session) -> dict[str, Any] | None:
    """The toolchain the database was made with (`Toolchain.describe()`), if Rocq ran on it."""
    return recorded(session)


def libraries(session: Session) -> list[LibraryFacts]:
    """Every library, by name."""
    requires_ssr = sa.or_(
        sa.and_(SourceFile.from_rocq, SourceFile.logical_path.like("%.ssr.%")),
        SourceFile.cleaned_text.regexp_match(r"Require[^.]*\mssreflect\M"),
    )
    uses_ssr = (
        sa.select(SourceFile.id).where(SourceFile.library_id == Library.id, requires_ssr).exists()
    )
    rows = session.execute(sa.select(Library, uses_ssr).order_by(Library.name)).all()
    made_with = toolchain(session)
    facts = []
    for library, ssreflect in rows:
        rocq, version = versions(library, made_with)
        facts.append(
            LibraryFacts(
                library.name,
                library.logical_prefix,
                bool(ssreflect),
                rocq,
                version,
                library.input_path,
                library.output_path,
                library.extractor_version,
                library.settings,
            )
        )
    return facts


# --- Theorems ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TheoremRecord:
    """A theorem (or have sub-theorem) as the exports of steps 1 to 8 read it."""

    id: int
    fqn: str
    parent_id: int | None
    statement: str
    proof: str
    tagged_proof: str | None
    line: int | None
    character: int | None
    error: str | None
    evaluation: dict[str, Any] | None
    path: str
    """The file, relative to the library's copy."""
    output_path: str
    """The library's copy."""
    logical_prefix: str


def _theorems(session: Session, where: sa.ColumnElement[bool]) -> list[TheoremRecord]:
    rows = session.execute(
        sa.select(Theorem, SourceFile.path, Library.output_path, Library.logical_prefix)
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(where)
        .order_by(SourceFile.dependency_order, Theorem.byte_start, Theorem.id)
    )
    return [
        TheoremRecord(
            t.id,
            t.fqn,
            t.parent_id,
            t.statement,
            t.proof,
            t.tagged_proof,
            t.line,
            t.character,
            t.error,
            t.evaluation,
            path,
            output,
            prefix,
        )
        for t, path, output, prefix in rows
    ]


def has_evaluation() -> sa.ColumnElement[bool]:
    """Theorems step 4 evaluated (a failed one holds JSON `null`, not SQL NULL)."""
    return sa.func.jsonb_typeof(Theorem.evaluation) == "object"


def done_with_haves() -> sa.ColumnElement[bool]:
    """Theorems step 2 finished with: done at `haves`, or at any later stage."""
    return sa.or_(
        sa.and_(Theorem.stage == Stage.haves, Theorem.status == Status.done),
        Theorem.stage.not_in([Stage.extract, Stage.haves]),
    )


def extracted(session: Session) -> list[TheoremRecord]:
    """Step 1: every top-level theorem."""
    return _theorems(session, Theorem.parent_id.is_(None))


def tagged(session: Session) -> list[TheoremRecord]:
    """Step 2: the top-level theorems step 2 finished with."""
    return _theorems(session, sa.and_(Theorem.parent_id.is_(None), done_with_haves()))


def have_failures(session: Session) -> list[TheoremRecord]:
    """Step 2's failures: the theorems whose rewrite did not re-check."""
    failed = sa.and_(Theorem.stage == Stage.haves, Theorem.status == Status.failed)
    return _theorems(session, sa.and_(Theorem.parent_id.is_(None), failed))


def selected(session: Session) -> list[TheoremRecord]:
    """Step 3: the selected theorems."""
    return _theorems(session, sa.and_(Theorem.parent_id.is_(None), Theorem.selected))


def evaluated(session: Session) -> list[TheoremRecord]:
    """Step 4: every theorem and have sub-theorem with an evaluation."""
    return _theorems(session, has_evaluation())


def with_cots(session: Session) -> list[TheoremRecord]:
    """Steps 5 to 8: the evaluated theorems of the selection step 5 wrote a CoT for (CoTs
    kept from an earlier selection stay in the database, out of the exports)."""
    has_cot = sa.exists().where(Cot.theorem_id == Theorem.id)
    return _theorems(session, sa.and_(has_evaluation(), has_cot, gate.theorem_selected()))


@dataclass(frozen=True)
class StepRecord:
    """A replayed chain (step 4), with its explanation when step 5 wrote one."""

    index: int
    chain: str
    goals: str
    goals_with_gvars: str
    goal_diff: str
    dependencies: list[dict[str, Any]]


def proof_steps(session: Session, theorem_ids: list[int]) -> dict[int, list[StepRecord]]:
    """Each theorem's replayed chains, in order."""
    found: dict[int, list[StepRecord]] = collections.defaultdict(list)
    rows = session.execute(
        sa.select(ProofStep)
        .where(ProofStep.theorem_id.in_(theorem_ids))
        .order_by(ProofStep.theorem_id, ProofStep.index)
    ).scalars()
    for s in rows:
        found[s.theorem_id].append(
            StepRecord(s.index, s.chain, s.goals, s.goals_with_gvars, s.goal_diff, s.dependencies)
        )
    return found


@dataclass(frozen=True)
class Notes:
    """Step 5's explanations of a theorem."""

    tactics: dict[int, str]
    """Proof step index → its code explanation."""
    proof: str


def annotations(session: Session, theorem_ids: list[int]) -> dict[int, Notes]:
    """Each theorem's explanations."""
    tactics: dict[int, dict[int, str]] = collections.defaultdict(dict)
    proofs: dict[int, str] = {}
    rows = session.execute(
        sa.select(
            Annotation.theorem_id, Annotation.kind, Annotation.step_index, Annotation.content
        ).where(Annotation.theorem_id.in_(theorem_ids))
    )
    for theorem_id, kind, index, content in rows:
        if kind == "proof":
            proofs[theorem_id] = content
        else:
            tactics[theorem_id][index] = content
    return {i: Notes(tactics[i], proofs.get(i, "")) for i in set(tactics) | set(proofs)}


@dataclass(frozen=True)
class CotRecord:
    id: int
    theorem_id: int
    writer: str
    blocks: tuple[Block, ...]


def cots(session: Session, theorem_ids: list[int]) -> dict[int, CotRecord]:
    """Each theorem's CoT as step 5 wrote it, by theorem id."""
    rows = session.execute(
        sa.select(Cot.id, Cot.theorem_id, Cot.writer, Cot.blocks).where(
            Cot.theorem_id.in_(theorem_ids)
        )
    )
    return {
        theorem_id: CotRecord(cot_id, theorem_id, writer, tuple(map(Block.from_json, blocks)))
        for cot_id, theorem_id, writer, blocks in rows
    }


# --- The dictionary -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DictionaryEntry:
    """What the dictionary says of an object now (step 6's docstrings included)."""

    fqn: str
    name: str
    kind: str
    fullname: str | None
    docstring: str | None
    docstring_source: str | None
    force_result: bool


def _entry_columns() -> list[Any]:
    return [
        LibraryObject.fqn,
        LibraryObject.name,
        LibraryObject.kind,
        LibraryObject.fullname,
        LibraryObject.docstring,
        LibraryObject.docstring_source,
        LibraryObject.force_result,
    ]


def dictionary_entries(session: Session, fqns: set[str]) -> dict[str, DictionaryEntry]:
    """The entries of these fqns (a name with several kinds: the first in library order)."""
    if not fqns:
        return {}
    rows = session.execute(
        sa.select(*_entry_columns())
        .where(LibraryObject.fqn == sa.any_(sa.literal(sorted(fqns), sa.ARRAY(sa.Text))))
        .order_by(LibraryObject.library_order)
    )
    found: dict[str, DictionaryEntry] = {}
    for row in rows:
        found.setdefault(row.fqn, DictionaryEntry(*row))
    return found


def written_docstrings(session: Session) -> list[DictionaryEntry]:
    """The entries whose docstring step 6 wrote, in library order."""
    rows = session.execute(
        sa.select(*_entry_columns())
        .where(LibraryObject.force_result)
        .order_by(LibraryObject.library_order, LibraryObject.id)
    )
    return [DictionaryEntry(*row) for row in rows]


def llm4docq(session: Session) -> dict[str, Any]:
    """The whole dictionary in the LLM4Docq format (step 4's side file)."""
    return export_dictionary(session)


# --- Searches ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """A query of a search block: the CoT's (index 0) or a repair (1 to 5)."""

    index: int
    query: str
    think: str | None
    results: list[dict[str, Any]] | None


@dataclass(frozen=True)
class SearchRecord:
    """A search block of a CoT with its candidates (steps 7 and 8)."""

    block_index: int
    target: str | None
    query: str
    results: list[dict[str, Any]]
    stage: Stage
    status: Status
    candidates: tuple[Candidate, ...]

    @property
    def chosen(self) -> bool:
        """Step 8 kept a query for it."""
        return self.stage == Stage.best_query and self.status == Status.done


def searches(session: Session, cot_ids: list[int]) -> dict[int, dict[int, SearchRecord]]:
    """Each CoT's search blocks by block index, with their candidates in order."""
    candidates: dict[int, list[Candidate]] = collections.defaultdict(list)
    rows = session.execute(
        sa.select(SearchQuery)
        .join(SearchBlock, SearchBlock.id == SearchQuery.search_block_id)
        .where(SearchBlock.cot_id.in_(cot_ids))
        .order_by(SearchQuery.search_block_id, SearchQuery.candidate_index)
    ).scalars()
    for q in rows:
        candidates[q.search_block_id].append(
            Candidate(q.candidate_index, q.query, q.think, q.results)
        )
    found: dict[int, dict[int, SearchRecord]] = collections.defaultdict(dict)
    blocks = session.execute(sa.select(SearchBlock).where(SearchBlock.cot_id.in_(cot_ids)))
    for b in blocks.scalars():
        found[b.cot_id][b.block_index] = SearchRecord(
            b.block_index,
            b.target_fqn,
            b.query,
            list(b.results or ()),
            b.stage,
            b.status,
            tuple(candidates[b.id]),
        )
    return found


# --- Training examples (steps 9 and 10) -------------------------------------------------------


@dataclass(frozen=True)
class ExampleRecord:
    """An example as stored or computed, with the evaluation its prompt is made of."""

    name: str
    index: int
    evaluation: dict[str, Any]
    writer: str
    library: str
    blocks: tuple[Marked, ...]


def _order() -> list[Any]:
    return [SourceFile.dependency_order, Theorem.byte_start, Theorem.fqn]


def _kept_cots(session: Session) -> list[tuple[int, str, dict[str, Any], str]]:
    """(CoT id, theorem, evaluation, library) of the selection's kept CoTs, in library
    order."""
    rows = session.execute(
        sa.select(Cot.id, Theorem.fqn, Theorem.evaluation, Library.name)
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .join(Library, Library.id == SourceFile.library_id)
        .where(Cot.valid.is_(True), gate.cot_selected())
        .order_by(*_order())
    )
    return [(cot_id, fqn, evaluation or {}, library) for cot_id, fqn, evaluation, library in rows]


def cot_examples(session: Session) -> list[ExampleRecord]:
    """Step 9: each kept CoT as one example, with its result blocks (results ignored)."""
    kept = _kept_cots(session)
    if not kept:
        return []
    top_k = job_params(session).top_k
    kept_cots = sa.and_(Cot.valid.is_(True), gate.cot_selected())
    loaded = {cot.cot_id: cot for cot in load_cots(session, kept_cots)}
    examples = []
    for cot_id, fqn, evaluation, library in kept:
        cot = loaded[cot_id]
        marked = tuple(Marked(b, b.kind == "result") for b in filtered_blocks(cot, top_k))
        examples.append(ExampleRecord(fqn, 0, evaluation, cot.writer, library, marked))
    return examples


def split_examples(session: Session) -> list[ExampleRecord]:
    """Step 10: the stored examples."""
    kept = {
        cot_id: (fqn, evaluation, library)
        for cot_id, fqn, evaluation, library in _kept_cots(session)
    }
    rows = session.execute(
        sa.select(Example.cot_id, Example.index, Cot.writer, Example.blocks)
        .join(Cot, Cot.id == Example.cot_id)
        .where(Example.cot_id.in_(list(kept)))
    ).all()
    order = {cot_id: position for position, cot_id in enumerate(kept)}
    rows.sort(key=lambda row: (order[row.cot_id], row.index))
    return [
        ExampleRecord(
            kept[cot_id][0],
            index,
            kept[cot_id][1],
            writer,
            kept[cot_id][2],
            tuple(Marked.from_json(block) for block in blocks),
        )
        for cot_id, index, writer, blocks in rows
    ]


def library_names(session: Session, names: set[str]) -> dict[str, frozenset[str]]:
    """The library objects each named theorem's proof, statement and section variables name
    (as written), from step 4: what the library the prompt names introduces."""
    found: dict[str, set[str]] = collections.defaultdict(set)
    evaluated = sa.select(Theorem.fqn, Theorem.evaluation).where(
        Theorem.fqn.in_(sorted(names)), has_evaluation()
    )
    for fqn, evaluation in session.execute(evaluated):
        deps = [*(evaluation.get("statement_dependencies") or ())]
        variables = evaluation.get("global_variables") or ()
        deps += [d for v in variables for d in v.get("dependencies") or ()]
        found[fqn] |= {d.get("name") or d["fqn"] for d in deps}
    chains = sa.select(Theorem.fqn, ProofStep.dependencies).join(
        ProofStep, ProofStep.theorem_id == Theorem.id
    )
    for fqn, deps in session.execute(chains.where(Theorem.fqn.in_(sorted(names)))):
        found[fqn] |= {d.get("name") or d["fqn"] for d in deps or ()}
    return {fqn: frozenset(words) for fqn, words in found.items()}


# --- Counts for the dataset card ---------------------------------------------------------------


def cot_counts(session: Session) -> dict[str, Any]:
    """The selection's CoTs, kept and not, by writer."""
    rows = session.execute(
        sa.select(Cot.writer, Cot.valid, sa.func.count())
        .where(gate.cot_selected())
        .group_by(Cot.writer, Cot.valid)
    )
    by_writer: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for writer, valid, count in rows:
        state = {True: "kept", False: "invalid", None: "not judged"}[valid]
        by_writer[writer][state] = count
    theorems = session.execute(sa.select(sa.func.count()).select_from(Theorem)).scalar_one()
    return {"theorems_in_database": theorems, "by_writer": dict(sorted(by_writer.items()))}


def docstring_counts(session: Session) -> dict[str, int]:
    """Docstrings step 6 wrote, by source (`llm` or `offline`)."""
    rows = session.execute(
        sa.select(LibraryObject.docstring_source, sa.func.count())
        .where(LibraryObject.force_result)
        .group_by(LibraryObject.docstring_source)
    )
    return {source or "unknown": count for source, count in rows}
