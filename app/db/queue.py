"""The named statements of the work queue: claim, renew, finish, fail, expire, status.

Every statement works on any table that mixes in `StageColumns`. Finishing and failing check
the row's prior state (still running, in this stage, held by this worker) and raise
`LeaseLost` otherwise, so a worker whose lease expired can never overwrite another's work.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.errors import LeaseLost
from app.stages import StageSpec


def _table(spec: StageSpec) -> sa.Table:
    return spec.model.__table__  # type: ignore[return-value]


def ready_rows(spec: StageSpec) -> sa.ColumnElement[bool]:
    """Rows that the stage may take: done with the input stage, or waiting in this stage;
    under its filter and the selection's gate."""
    t = _table(spec)
    waiting = sa.and_(
        t.c.stage == spec.stage,
        sa.or_(
            t.c.status == Status.pending,
            sa.and_(t.c.status == Status.failed, t.c.attempts < spec.max_attempts),
            sa.and_(t.c.status == Status.running, t.c.lease_until < sa.func.now()),
        ),
    )
    if spec.input_stage is not None:
        waiting = sa.or_(sa.and_(t.c.stage == spec.input_stage, t.c.status == Status.done), waiting)
    if spec.also_ready is not None:
        waiting = sa.or_(waiting, spec.also_ready())
    if spec.ready_filter is not None:
        waiting = sa.and_(waiting, spec.ready_filter())
    if spec.gate is not None:
        waiting = sa.and_(waiting, spec.gate())
    return waiting


@dataclass(frozen=True)
class _Statements:
    """The statements of one stage, built once: building SQLAlchemy expressions per row
    costs more than running them."""

    claim: sa.Update
    renew: sa.Update
    settle: sa.Update


@functools.cache
def _statements(spec: StageSpec) -> _Statements:
    t = _table(spec)
    lease = sa.func.now() + sa.func.make_interval(0, 0, 0, 0, 0, 0, spec.lease_seconds)
    ready = (
        sa.select(t.c.id)
        .where(ready_rows(spec))
        .order_by(*spec.order_by(), t.c.id)
        .limit(sa.bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    claim = (
        sa.update(t)
        .where(t.c.id.in_(ready.scalar_subquery()))
        .values(
            stage=spec.stage,
            status=Status.running,
            attempts=sa.case((t.c.stage == spec.stage, t.c.attempts + 1), else_=1),
            lease_until=lease,
            worker=sa.bindparam("worker_name"),
            updated_at=sa.func.now(),
        )
        .returning(t.c.id)
    )
    renew = (
        sa.update(t)
        .where(
            t.c.id.in_(sa.bindparam("ids", expanding=True)),
            t.c.worker == sa.bindparam("worker_name"),
            t.c.status == Status.running,
        )
        .values(lease_until=lease)
    )
    settle = (
        sa.update(t)
        .where(
            t.c.id == sa.bindparam("row_id"),
            t.c.stage == spec.stage,
            t.c.status == Status.running,
            t.c.worker == sa.bindparam("worker_name"),
        )
        .values(
            status=sa.bindparam("new_status", type_=t.c.status.type),
            error=sa.bindparam("error", type_=sa.Text),
            lease_until=None,
            updated_at=sa.func.now(),
        )
        .returning(t.c.id)
    )
    return _Statements(claim=claim, renew=renew, settle=settle)


def claim(session: Session, spec: StageSpec, worker: str, limit: int) -> list[int]:
    """Claim up to `limit` ready rows: lock them (skipping rows others hold) and lease them."""
    claimed = session.execute(_statements(spec).claim, {"limit": limit, "worker_name": worker})
    return sorted(claimed.scalars())


def renew(session: Session, spec: StageSpec, worker: str, ids: Sequence[int]) -> None:
    """Extend the lease of rows this worker still holds."""
    session.execute(_statements(spec).renew, {"ids": list(ids), "worker_name": worker})


def _settle(
    session: Session, spec: StageSpec, worker: str, row_id: int, status: Status, error: str | None
) -> None:
    held = session.execute(
        _statements(spec).settle,
        {"row_id": row_id, "worker_name": worker, "new_status": status, "error": error},
    ).first()
    if held is None:
        table = _table(spec).name
        raise LeaseLost(f"{table} row {row_id} is no longer held by {worker} in {spec.stage}")


def finish(session: Session, spec: StageSpec, worker: str, row_id: int) -> None:
    """Mark a held row done (call in the transaction that stores its result)."""
    _settle(session, spec, worker, row_id, Status.done, None)


def fail(session: Session, spec: StageSpec, worker: str, row_id: int, error: str) -> None:
    """Mark a held row failed with its error; it is retried until `max_attempts`."""
    _settle(session, spec, worker, row_id, Status.failed, error)


def expire(session: Session, spec: StageSpec) -> int:
    """Fail rows whose lease expired too often (their worker died each time)."""
    t = _table(spec)
    result = session.execute(
        sa.update(t)
        .where(
            t.c.stage == spec.stage,
            t.c.status == Status.running,
            t.c.lease_until < sa.func.now(),
            t.c.attempts >= spec.max_attempts,
        )
        .values(
            status=Status.failed,
            lease_until=None,
            error=sa.func.concat("lease expired ", t.c.attempts, " times: the worker died"),
        )
    )
    return result.rowcount


def running_workers(session: Session, spec: StageSpec) -> list[str]:
    """Names of the workers holding rows of this stage (their leases may have expired)."""
    t = _table(spec)
    return list(
        session.execute(
            sa.select(t.c.worker)
            .distinct()
            .where(t.c.stage == spec.stage, t.c.status == Status.running)
        ).scalars()
    )


def release(session: Session, spec: StageSpec, workers: Sequence[str]) -> None:
    """End the leases of dead workers now, so their rows need not wait for expiry."""
    t = _table(spec)
    session.execute(
        sa.update(t)
        .where(t.c.stage == spec.stage, t.c.status == Status.running, t.c.worker.in_(workers))
        .values(lease_until=sa.func.now() - timedelta(seconds=1))
    )


def release_orphans(session: Session, spec: StageSpec, worker: str, held: Sequence[int]) -> int:
    """End the leases of rows held in a live worker's name but not in its hands (claimed by
    a transaction whose answer the connection lost); returns how many."""
    t = _table(spec)
    statement = sa.update(t).where(
        t.c.stage == spec.stage, t.c.status == Status.running, t.c.worker == worker
    )
    if held:
        statement = statement.where(t.c.id.not_in(list(held)))
    released = session.execute(statement.values(lease_until=sa.func.now() - timedelta(seconds=1)))
    return released.rowcount


def status_counts(session: Session) -> list[dict[str, Any]]:
    """Rows per table, stage and status, from the `stage_status` view."""
    rows = session.execute(
        sa.text(
            "SELECT table_name, stage, status, rows, last_update FROM stage_status "
            "ORDER BY table_name, stage, status"
        )
    )
    return [dict(row._mapping) for row in rows]


def reset_rows(session: Session, spec_table: sa.Table, ids: Sequence[int], stage: Stage) -> None:
    """Put rows back to pending in `stage`, as if never tried (for `reprocess`)."""
    session.execute(
        sa.update(spec_table)
        .where(spec_table.c.id.in_(ids))
        .values(
            stage=stage,
            status=Status.pending,
            attempts=0,
            error=None,
            lease_until=None,
            worker=None,
            updated_at=sa.func.now(),
        )
    )
