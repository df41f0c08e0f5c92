"""The registry of stages: what each worker claims, runs and writes.

A stage names its table, the stage its rows come from, and three functions: `load` reads a
claimed row's input as plain data, `run` (the stage's work, outside any transaction) turns it
into a result, and `store` writes the result idempotently in the transaction that finishes
the row. The worker machinery in `workers/` is shared by every stage.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from app.db.enums import Stage
from app.db.models import Base
from app.errors import UnknownStage


@dataclass(frozen=True)
class StageSpec:
    """How the shared worker runs one stage."""

    stage: Stage
    """The stage this spec runs; claimed rows enter it."""
    model: type[Base]
    """The table whose rows are processed (it mixes in `StageColumns`)."""
    input_stage: Stage | None
    """Rows done with this stage are ready; None: only rows created pending in `stage`."""
    load: Callable[[Session, int], Any]
    """Reads the input of a claimed row as plain data."""
    run: Callable[..., Any]
    """The stage's work: plain data in, plain data out; raising marks the row failed."""
    store: Callable[[Session, int, Any], None]
    """Writes the result (upserts: writing twice gives the same rows)."""
    ready_filter: Callable[[], ColumnElement[bool]] | None = None
    """An extra condition on ready rows (e.g. an evaluation to write from)."""
    gate: Callable[[], ColumnElement[bool]] | None = None
    """The rows step 3's selection lets through (`app.gate`): ready rows outside it wait,
    their data kept, until a selection takes them in; None: every ready row."""
    also_ready: Callable[[], ColumnElement[bool]] | None = None
    """Rows ready besides those done with `input_stage` (still under `ready_filter` and
    `gate`): e.g. a selected theorem step 2 redid after its source changed, which step 3 does
    not select again."""
    order_by: Callable[[], list[Any]] = field(default=lambda: [])
    """Claim order (e.g. by file, so one Rocq session walks a file); the row id breaks ties."""
    batch_size: int = 1
    """Rows claimed per statement: more for cheap stages, 1 for long work."""
    lease_seconds: float = 300.0
    """How long a claim holds without renewal; the worker renews it every third of that."""
    max_attempts: int = 3
    """Failures (or expired leases) after which a row stays failed."""
    runs_rocq: bool = False
    """Whether `run` starts Rocq processes: its workers bind the database to the toolchain."""
    resources: Callable[[], AbstractContextManager[Any]] | None = None
    """A per-worker resource (e.g. a Rocq session kept across rows of the same file), entered
    once per worker thread; when set, `run` is called as `run(item, resource)`."""

    def call(self, item: Any, resource: Any) -> Any:
        """Run the stage function, handing it the worker's resource if the stage has one."""
        return self.run(item) if self.resources is None else self.run(item, resource)


_REGISTRY: dict[Stage, StageSpec] = {}


def register(spec: StageSpec) -> StageSpec:
    """Make a stage runnable by `rocqcot worker --stage NAME`."""
    _REGISTRY[spec.stage] = spec
    return spec


def stage_spec(name: str) -> StageSpec:
    """The registered stage called `name`, or a clear error listing the known ones."""
    _import_stage_modules()
    try:
        return _REGISTRY[Stage(name)]
    except (ValueError, KeyError):
        known = ", ".join(sorted(stage.value for stage in _REGISTRY))
        raise UnknownStage(f"unknown stage {name!r}; known stages: {known}") from None


def _import_stage_modules() -> None:
    """Stage modules register themselves when imported."""
    from app.steps import register_all

    register_all()
