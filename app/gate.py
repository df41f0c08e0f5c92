"""The selection's gate: what goes on to steps 5 to 10.

`step 4 --all` evaluates every theorem of the library (a trace), but the data steps 5 to 10
make — and the LLM requests they send — are for step 3's selection only: the selected
top-level theorems and their have sub-theorems (`parent_id`, nested ones included). Each
later stage's ready rows are cut by the predicate of its table here (`StageSpec.gate`); rows
outside it wait with their data kept, so a new selection moves the gate both ways without
redoing or deleting anything. `beyond` counts what a stage would take outside the selection:
the LLM steps stop on it before sending anything (`check_scope`: a stage whose gate was left
out, other than by an explicit option such as `step 6 --all`); their summaries and `rocqcot
status` show the rows the gate keeps waiting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, aliased

from app.db.enums import Stage, Status
from app.db.models import Cot, LibraryObject, SearchBlock, Theorem
from app.db.queue import ready_rows
from app.errors import RocqcotError
from app.stages import StageSpec

Predicate = Callable[[], sa.ColumnElement[bool]]


def selection_ids() -> sa.Select:
    """Ids of the selected top-level theorems and of all their have sub-theorems."""
    root, child = aliased(Theorem), aliased(Theorem)
    chosen = (
        sa.select(root.id)
        .where(root.selected, root.parent_id.is_(None))
        .cte("selection", recursive=True, nesting=True)
    )
    chosen = chosen.union_all(sa.select(child.id).where(child.parent_id == chosen.c.id))
    return sa.select(chosen.c.id)


def theorem_selected() -> sa.ColumnElement[bool]:
    """A theorem or have sub-theorem of the selection (step 5's rows)."""
    return Theorem.id.in_(selection_ids())


def selected_cot_ids() -> sa.Select:
    """The CoTs of the selection's theorems."""
    cot = aliased(Cot)
    return sa.select(cot.id).where(cot.theorem_id.in_(selection_ids()))


def cot_selected() -> sa.ColumnElement[bool]:
    """A CoT of the selection (steps 9 and 10, the exports)."""
    return Cot.id.in_(selected_cot_ids())


def block_selected() -> sa.ColumnElement[bool]:
    """A search block of a CoT of the selection (steps 7 and 8)."""
    return SearchBlock.cot_id.in_(selected_cot_ids())


def searched_by_selection() -> sa.Select:
    """The fqns that the selection's CoTs search for (no NULL among them: `x IN (...)` with
    a NULL there is NULL, not false, for the others)."""
    cot = aliased(Cot)
    block = sa.func.jsonb_array_elements(cot.blocks).table_valued(sa.column("value", JSONB))
    target = block.c.value["target"].astext
    return (
        sa.select(target)
        .select_from(cot)
        .join(block, sa.true())
        .where(cot.theorem_id.in_(selection_ids()), target.is_not(None))
    )


def entry_searched() -> sa.ColumnElement[bool]:
    """A dictionary entry that a CoT of the selection searches for (step 6's rows)."""
    return LibraryObject.fqn.in_(searched_by_selection())


GATES: dict[type, tuple[Predicate, str]] = {
    Theorem: (theorem_selected, "theorems and haves"),
    LibraryObject: (entry_searched, "dictionary entries"),
    SearchBlock: (block_selected, "search blocks"),
}
"""The predicate of each table an LLM step works on, and what its rows are called."""


def beyond(session: Session, spec: StageSpec) -> int:
    """How many rows the stage of `spec` would take now that lie outside the selection."""
    gate, _ = GATES[spec.model]
    table = spec.model.__table__
    statement = sa.select(sa.func.count()).select_from(table)
    return session.execute(statement.where(ready_rows(spec), sa.not_(gate()))).scalar_one()


def waiting(session: Session, spec: StageSpec) -> int:
    """How many rows the stage would take were there no selection: those the gate keeps
    waiting (the LLM steps' summaries show them)."""
    return beyond(session, dataclasses.replace(spec, gate=None))


def check_scope(session: Session, step: int, spec: StageSpec) -> None:
    """Stop an LLM step whose stage would send requests for rows beyond the selection (its
    gate left out), saying how many, before it sends any."""
    extra = beyond(session, spec)
    if extra == 0:
        return
    _, noun = GATES[spec.model]
    table = spec.model.__table__
    taking = session.execute(
        sa.select(sa.func.count()).select_from(table).where(ready_rows(spec))
    ).scalar_one()
    raise RocqcotError(
        f"step {step} would send LLM requests for {taking:,} {noun}, {extra:,} of them beyond "
        f"step 3's selection (its theorems and their haves): stopped before sending any; "
        f"step 3 (--k-have, --k-wo-have) decides what goes on"
    )


def outside_counts(session: Session) -> dict[tuple[str, str, str], int]:
    """Rows the selection keeps out of steps 5 to 10, per table, stage and status (for
    `rocqcot status`): theorems step 3 considered and did not select, theorems and haves
    evaluated but not selected, those at step 5 (a CoT written for an earlier selection, or
    reprocessed), and the CoTs and search blocks of theorems not selected."""
    stages = [Stage.select, Stage.evaluate]
    passed = sa.and_(Theorem.stage.in_(stages), Theorem.status == Status.done)
    theorems = sa.and_(sa.or_(passed, Theorem.stage == Stage.cot), sa.not_(theorem_selected()))
    counts: dict[tuple[str, str, str], int] = {}
    for model, where in (
        (Theorem, theorems),
        (Cot, sa.not_(cot_selected())),
        (SearchBlock, sa.not_(block_selected())),
    ):
        table = model.__table__
        rows = session.execute(
            sa.select(table.c.stage, table.c.status, sa.func.count())
            .where(where)
            .group_by(table.c.stage, table.c.status)
        )
        counts |= {(table.name, str(stage), str(status)): n for stage, status, n in rows}
    return counts


def is_selected(session: Session, theorem_id: int) -> bool:
    """Whether a theorem or have is in the selection (steps 5 to 10 take it)."""
    found = sa.select(sa.exists().where(Theorem.id == theorem_id, theorem_selected()))
    return session.execute(found).scalar_one()
