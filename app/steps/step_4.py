"""Step 4: the library dictionary, then each selected proof replayed and annotated.

The dictionary is `app.dictionary`'s; the replay of a proof chain by chain, its goals,
dependencies and have sub-theorems are `app.evaluator`'s. This module is the stage: what a
worker reads for a theorem, how the result is written (upserts: writing twice changes nothing),
which theorems are ready (the selection, or every theorem with `--all`) and the command.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import dictionary as dico
from app import llm4docq
from app.db.enums import Stage, Status
from app.db.models import Library, ProofStep, SourceFile, Theorem
from app.evaluator import (
    DEFAULT_TIMEOUT,
    Evaluated,
    Outcome,
    Replayer,
    ReplayFailed,
    Step,
    TheoremInput,
    evaluate,
    replayer,
)
from app.file_claims import largest_files_first
from app.file_names import file_names
from app.have_rewrite import RewriteError
from app.have_tagging import Tagged, store_tags, tag, untouched
from app.haves import has_candidate
from app.options import RocqBin, use_rocq
from app.rocq.positions import Position
from app.rocq.state import RocqError, RocqSessionError
from app.stages import StageSpec, register

log = logging.getLogger(__name__)


# --- Load ------------------------------------------------------------------------------------


def load(session: Session, row_id: int) -> TheoremInput:
    """The theorem and its file's names (read once per worker process)."""
    columns = [getattr(Theorem, c) for c in ("id", "fqn", "proof", "tagged_proof", "byte_start")]
    columns += [Theorem.byte_end, Theorem.file_id, SourceFile.content_hash, Library.settings]
    columns += [sa.func.coalesce(sa.func.jsonb_typeof(Theorem.evaluation), "null") != "null"]
    columns += [SourceFile.dependency_order]
    row = session.execute(
        sa.select(*columns)
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(Theorem.id == row_id)
    ).one()
    file = file_names(session, row.file_id, row.content_hash)
    timeout = float(row.settings.get("pet_timeout") or DEFAULT_TIMEOUT)
    order = dico.library_order(row.dependency_order, row.byte_start)
    return TheoremInput(*row[:6], file, timeout, row[-2], order)


# --- Run -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    """A theorem evaluated, and its haves tagged if step 2 had not tagged them."""

    outcome: Outcome
    tags: Tagged | None


def run(item: TheoremInput, held: Replayer) -> Result:
    """Evaluate a theorem (`app.evaluator`); one that step 2 has not tagged (`--all` right
    after step 1, as `rocqcot trace` runs it) is tagged first, from the same walk of its file,
    so the file is walked once for both steps."""
    tags = None
    if item.tagged_proof is None:
        tags = _tag(item, held)
        item = dataclasses.replace(item, tagged_proof=tags.tagged_proof)
    return Result(evaluate(item, held), tags)


def _tag(item: TheoremInput, held: Replayer) -> Tagged:
    """Step 2's work, from the state after the theorem's statement."""
    if not has_candidate(item.proof):
        return untouched(item.proof)
    session = held.open(item.file, item.timeout)
    statement = item.file.sentences[item.file.sentence_at(item.byte_start)]
    try:
        start = session.at(item.file.path, Position(**statement["end"]))
        return tag(session, item.fqn, item.proof, start)
    except (RocqSessionError, RewriteError) as error:
        message = error.message if isinstance(error, RocqError) else str(error)
        why = f"{type(error).__name__}: {message}"
        raise ReplayFailed(f"{item.fqn}: tagging its haves (step 2): {why}") from None


# --- Store -----------------------------------------------------------------------------------


def store(session: Session, row_id: int, result: Result) -> None:
    """Write the tags if the run made them, the evaluation, the chains and the sub-theorems
    (upserts: writing twice changes nothing); remember the types Rocq printed."""
    if result.tags is not None:
        store_tags(session, row_id, result.tags)
    outcome = result.outcome
    root, item = outcome.root, outcome.item
    session.execute(
        sa.update(Theorem)
        .where(Theorem.id == row_id, Theorem.evaluation.is_distinct_from(root.evaluation))
        .values(evaluation=root.evaluation)
    )
    _write_steps(session, [(row_id, root.steps)], item.evaluated_before)
    if root.children or item.evaluated_before:
        _write_children(session, row_id, item, root.children)
    dico.cache_types(session, outcome.types, item.library_order)


def _write_steps(session: Session, proofs: list[tuple[int, tuple[Step, ...]]], old: bool) -> None:
    """The chains of several proofs in one upsert (a proof that got shorter loses its extra
    rows when it was `old`: evaluated before)."""
    if old:
        for theorem_id, steps in proofs:
            gone = sa.and_(ProofStep.theorem_id == theorem_id, ProofStep.index >= len(steps))
            session.execute(sa.delete(ProofStep).where(gone))
    rows = [
        {"theorem_id": theorem_id, "index": i, **vars(step)}
        for theorem_id, steps in proofs
        for i, step in enumerate(steps)
    ]
    if rows:
        session.execute(_upsert(ProofStep.__table__, ("theorem_id", "index"), tuple(rows[0])), rows)


def _write_children(
    session: Session, parent_id: int, item: TheoremInput, children: tuple[Evaluated, ...]
) -> None:
    """Upsert the have sub-theorems of a theorem, a level at a time (one upsert, one query of
    their ids, one upsert of their chains), then theirs; drop those gone."""
    rows = [
        dict(fqn=child.fqn, file_id=item.file.file_id, parent_id=parent_id, kind="Lemma",
             have_index=child.have_index, statement=child.statement, proof=child.proof,
             tagged_proof=child.tagged_proof, evaluation=child.evaluation, error=child.error,
             byte_start=item.byte_start, byte_end=item.byte_end, stage=Stage.evaluate,
             status=Status.failed if child.error else Status.done)
        for child in children
    ]  # fmt: skip
    ids: dict[str, int] = {}
    if rows:
        session.execute(_upsert(Theorem.__table__, ("fqn",), tuple(rows[0])), rows)
        fqns = [child.fqn for child in children]
        found = sa.select(Theorem.fqn, Theorem.id).where(Theorem.fqn.in_(fqns))
        ids = {fqn: theorem_id for fqn, theorem_id in session.execute(found)}
    old = item.evaluated_before
    _write_steps(session, [(ids[child.fqn], child.steps) for child in children], old)
    for child in children:
        if child.children or old:
            _write_children(session, ids[child.fqn], item, child.children)
    gone = sa.and_(Theorem.parent_id == parent_id, Theorem.id.not_in(list(ids.values())))
    session.execute(sa.delete(Theorem).where(gone))


@functools.cache
def _upsert(table: sa.Table, keys: tuple[str, ...], columns: tuple[str, ...]) -> sa.Insert:
    """Insert rows, or update those whose values differ (an unchanged row is not touched);
    built once per shape, executed with many rows."""
    statement = insert(table)
    updated = [c for c in columns if c not in keys]
    changed = sa.or_(*(table.c[c].is_distinct_from(statement.excluded[c]) for c in updated))
    return statement.on_conflict_do_update(
        index_elements=list(keys), set_={c: statement.excluded[c] for c in updated}, where=changed
    )


# --- The stage and the command ---------------------------------------------------------------


def ready() -> sa.ColumnElement[bool]:
    """Top-level theorems that are selected (or queued by `--all`)."""
    return sa.and_(
        Theorem.parent_id.is_(None), sa.or_(Theorem.selected, Theorem.stage == Stage.evaluate)
    )


def redone() -> sa.ColumnElement[bool]:
    """Selected theorems that step 2 redid after their source changed: they stay selected,
    and are evaluated again without waiting for a new selection."""
    return sa.and_(Theorem.stage == Stage.haves, Theorem.status == Status.done, Theorem.selected)


SPEC = register(
    StageSpec(
        stage=Stage.evaluate,
        model=Theorem,
        input_stage=Stage.select,
        load=load,
        run=run,
        store=store,
        ready_filter=ready,
        also_ready=redone,
        order_by=functools.partial(largest_files_first, Stage.evaluate),
        batch_size=16,
        lease_seconds=600.0,
        runs_rocq=True,
        max_attempts=2,
        resources=replayer,
    )
)


def queue_all(session: Session) -> int:
    """`--all`: every top-level theorem done with steps 1 to 3 so far enters the stage."""
    result = session.execute(
        sa.update(Theorem)
        .where(
            Theorem.parent_id.is_(None),
            Theorem.stage.in_([Stage.extract, Stage.haves, Stage.select]),
            Theorem.status == Status.done,
        )
        .values(stage=Stage.evaluate, status=Status.pending, attempts=0, error=None)
    )
    return result.rowcount


def set_timeout(session: Session, timeout: float) -> None:
    """Record the per-call Rocq timeout for every worker of the stage."""
    for library in session.execute(sa.select(Library)).scalars():
        if library.settings.get("pet_timeout") != timeout:
            library.settings = {**library.settings, "pet_timeout": timeout}


def command(
    dictionary: Annotated[
        Path | None, typer.Option("--dictionary", help="docstrings in the LLM4Docq format")
    ] = None,
    max_workers: Annotated[int, typer.Option(min=1, help="parallel Rocq sessions")] = 1,
    pet_timeout: Annotated[float, typer.Option(min=1, help="seconds per Rocq call")] = 60.0,
    all_: Annotated[bool, typer.Option("--all", help="every theorem, not the selection")] = False,
    rocq_bin: RocqBin = None,
) -> None:
    """Build the dictionary, then replay and annotate the selected proofs."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    use_rocq(rocq_bin)
    ensure_schema()
    with session_factory().begin() as session:
        built = dico.build_dictionary(session)
        imported = llm4docq.import_dictionary(session, dictionary) if dictionary else None
        set_timeout(session, pet_timeout)
        queued = queue_all(session) if all_ else 0
    stats = run_workers([SPEC], concurrency=max_workers)
    counted = sa.select(Theorem.status, sa.func.count()).group_by(Theorem.status)
    counted = counted.where(Theorem.stage == Stage.evaluate, Theorem.parent_id.is_(None))
    with session_factory()() as session:
        counts = dict(session.execute(counted).all())
    imports = f", {imported.matched} of {imported.entries} file entries matched" if imported else ""
    queued_line = f"; {queued} theorems queued by --all" if all_ else ""
    typer.echo(
        f"step 4: dictionary {built.objects} objects ({built.written} written, {built.removed} "
        f"removed, {built.header_docstrings} header docstrings{imports}){queued_line}; "
        f"evaluated {stats.done} now, {counts.get(Status.done, 0)} in all, "
        f"{counts.get(Status.failed, 0)} failed"
    )


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
