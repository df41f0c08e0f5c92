"""An LLM step's command: the shared flags, its stage run with one client, its summary."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app.db.enums import Status
from app.errors import RocqcotError
from app.llm.budget import LlmUsage, retry_budget_failures, usage
from app.llm.client import LlmClient
from app.llm.settings import ENV_BASE_URL, ENV_MODEL, LlmSettings, load_settings
from app.stages import StageSpec

T = TypeVar("T")


# Command-line options shared by the LLM steps (flags win over the environment and the file).
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="a YAML file shaped like app/prompts/step_N.yaml"),
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help=f"an OpenAI-compatible endpoint [{ENV_BASE_URL}]")
]
ModelOption = Annotated[str | None, typer.Option("--model", help=f"the model [{ENV_MODEL}]")]
OfflineOption = Annotated[
    bool, typer.Option("--offline", help="the offline writer, even with an endpoint set")
]
MaxWorkersOption = Annotated[
    int | None, typer.Option("--max-workers", min=1, help="requests in flight at most [8]")
]
MeanDelayOption = Annotated[
    float | None,
    typer.Option("--mean-delay", min=0.0, help="mean seconds between request starts [0]"),
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--budget-usd", min=0.0, help="no new request once llm_calls cost this much"),
]


@dataclass(frozen=True)
class StepFlags:
    """The flags of an LLM step's command, None where not given."""

    config: Path | None = None
    offline: bool = False
    base_url: str | None = None
    model: str | None = None
    max_workers: int | None = None
    mean_delay: float | None = None
    budget_usd: float | None = None


class StepLeftFailures(RocqcotError):
    """An LLM step ended with failed rows: its command exits non-zero after its summary."""


@dataclass(frozen=True)
class StepReport:
    """What one run of an LLM step did, for its summary line."""

    writer: str
    done: int
    """Rows this run finished."""
    failed: int
    """Rows of the stage left failed (each counted once, however often it was tried)."""
    sent: int
    usage: LlmUsage
    reason: str | None = None
    """The most frequent first line of the failed rows' errors."""
    outside: tuple[int, str] = (0, "")
    """(How many, what) of the rows the stage would take but for step 3's selection."""

    def line(self, step: int, written: str) -> str:
        count, noun = self.outside
        gated = f"; {count:,} {noun} outside the selection (not taken)" if count else ""
        return (
            f"step {step}: {self.done} {written} ({self.writer}), {self.failed} failed; "
            f"{self.sent} requests sent; {self.usage.line()}{gated}"
        )

    def check(self, step: int) -> None:
        """Raise `StepLeftFailures` when rows were left failed."""
        if self.failed:
            raise StepLeftFailures(
                f"step {step} left {self.failed} rows failed, most often: {self.reason}"
            )


def failed_rows(session: Session, spec: StageSpec) -> tuple[int, str | None]:
    """How many rows of the stage are failed, and their most frequent reason."""
    table = spec.model.__table__
    reason = sa.func.split_part(sa.func.coalesce(table.c.error, "no reason"), "\n", 1)
    rows = session.execute(
        sa.select(reason, sa.func.count())
        .where(table.c.stage == spec.stage, table.c.status == Status.failed)
        .group_by(reason)
        .order_by(sa.func.count().desc(), reason)
    ).all()
    return sum(count for _, count in rows), (rows[0][0][:300] if rows else None)


def default_writer(
    step: int, writer_for: Callable[[LlmSettings], T]
) -> Callable[[], contextlib.AbstractContextManager[T]]:
    """The `resources` of an LLM stage run by a plain `rocqcot worker`: its writer, built once
    per process from the step's settings file and the environment."""
    writer = functools.cache(lambda: writer_for(load_settings(step)))
    return lambda: contextlib.nullcontext(writer())


def run_llm_step(
    step: int,
    spec: StageSpec,
    writer_for: Callable[[LlmSettings], Callable[..., Any]],
    flags: StepFlags,
    offline_batch: int,
    beyond_selection: bool = False,
) -> StepReport:
    """Run an LLM step's stage until no row is ready, every worker thread sharing one writer
    (so one client: one concurrency limit, one pacer); rows stopped by an earlier budget are
    tried again. With an endpoint, a stage that would take rows beyond step 3's selection
    stops before sending anything, unless an explicit option asks for them
    (`beyond_selection`: `step 6 --all`)."""
    from app import gate
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    settings = load_settings(
        step,
        flags.config,
        flags.offline,
        base_url=flags.base_url,
        model=flags.model,
        max_workers=flags.max_workers,
        mean_delay=flags.mean_delay,
        budget_usd=flags.budget_usd,
    )
    ensure_schema()
    with session_factory().begin() as session:
        retry_budget_failures(session, spec.model.__table__, spec.stage)
        if settings.online and not beyond_selection:
            gate.check_scope(session, step, spec)
    write = writer_for(settings)
    batch = 1 if settings.online else offline_batch
    shared = dataclasses.replace(
        spec, resources=lambda: contextlib.nullcontext(write), batch_size=batch
    )
    stats = run_workers([shared], concurrency=settings.max_workers)
    client = getattr(write, "client", None)
    if isinstance(client, LlmClient):
        client.close()
    with session_factory()() as session:
        spent = usage(session)
        failed, reason = failed_rows(session, spec)
        outside = (gate.waiting(session, spec), gate.GATES[spec.model][1])
    sent = client.sent if isinstance(client, LlmClient) else 0
    return StepReport(settings.writer, stats.done, failed, sent, spent, reason, outside)


def step_command(
    step: int,
    spec: StageSpec,
    writer_for: Callable[[LlmSettings], Callable[..., Any]],
    written: str,
    offline_batch: int,
    doc: str,
) -> Callable[..., None]:
    """The command of an LLM step that runs its stage and nothing else: the shared flags, then
    the summary line (`written`: what the rows became); it fails if rows were left failed."""

    def command(
        max_workers: MaxWorkersOption = None,
        mean_delay: MeanDelayOption = None,
        budget_usd: BudgetOption = None,
        config: ConfigOption = None,
        base_url: BaseUrlOption = None,
        model: ModelOption = None,
        offline: OfflineOption = False,
    ) -> None:
        flags = StepFlags(config, offline, base_url, model, max_workers, mean_delay, budget_usd)
        report = run_llm_step(step, spec, writer_for, flags, offline_batch)
        typer.echo(report.line(step, written))
        report.check(step)

    command.__doc__ = doc
    return command
