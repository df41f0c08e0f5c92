"""Jobs: stages that work on the whole library at once (step 3's selection, step 9's filtering)
run as one `jobs` row, named by its step and holding the parameters it ran with, so a rerun
with the same parameters can be a no-op and one with new ones starts over."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Job
from app.stages import StageSpec


def create_or_lock(session: Session, name: str, stage: Stage, params: dict[str, Any]) -> Job | None:
    """Create the job, pending with these parameters, and return None; if it exists already,
    return it, locked until the transaction ends (two steps started together decide once)."""
    created = session.execute(
        insert(Job)
        .values(name=name, params=params, stage=stage, status=Status.pending)
        .on_conflict_do_nothing(index_elements=["name"])
        .returning(Job.id)
    ).scalar()
    if created is not None:
        return None
    return session.execute(sa.select(Job).where(Job.name == name).with_for_update()).scalar_one()


def requeue(job: Job, stage: Stage, params: dict[str, Any]) -> None:
    """Make a job pending again with these parameters, its result and failures dropped."""
    job.params, job.result = params, None
    job.stage, job.status, job.attempts, job.error = stage, Status.pending, 0, None


def job_spec(
    stage: Stage,
    name: str,
    load: Callable[..., Any],
    run: Callable[..., Any],
    store: Callable[..., Any],
) -> StageSpec:
    """The stage of a job: its one row, tried once (the work is deterministic: running the step
    again retries a failed job)."""
    return StageSpec(
        stage=stage,
        model=Job,
        input_stage=None,
        load=load,
        run=run,
        store=store,
        ready_filter=lambda: Job.name == name,
        max_attempts=1,
    )
