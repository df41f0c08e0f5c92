"""Step 9: keep the CoTs whose searches all succeed, and give every action its result.

What makes a CoT kept, and its result blocks, are `app.results`' (pure, shared with step 10 and
the exports). The step is global: it runs as the one `jobs` row named `filter`, claimed by the
shared worker. It takes every CoT of step 3's selection (`app.gate`) done with step 5 whose
search blocks are all done with step 8 (and CoTs that `reprocess --from filter` reset); CoTs
still waiting for a search are left for a later run. It writes each CoT's `valid` and
`invalid_reason` and moves it to `filter`, done, where step 10 takes the valid ones. A new
`--top-k` judges every CoT again.
"""

from __future__ import annotations

import collections
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app import gate, jobs
from app.config import rocqcot_home
from app.db.enums import Stage, Status
from app.db.models import Cot, Example, Job, Theorem
from app.errors import RocqcotError
from app.plural import plural
from app.results import (
    DEFAULT_TOP_K,
    JOB_NAME,
    CotData,
    FilterParams,
    Verdict,
    judge,
    load_cots,
    reason_kind,
)
from app.stages import register

HIST_FILE = "proof_lengths.png"


def to_judge() -> sa.ColumnElement[bool]:
    """CoTs of the selection done with step 5 and not judged yet, or reset to `filter` by
    `reprocess`."""
    return sa.and_(
        sa.or_(
            sa.and_(Cot.stage == Stage.cot, Cot.status == Status.done),
            sa.and_(Cot.stage == Stage.filter, Cot.status != Status.done),
        ),
        gate.cot_selected(),
    )


# --- The stage --------------------------------------------------------------------------------


@dataclass(frozen=True)
class FilterInput:
    params: FilterParams
    cots: tuple[CotData, ...]


@dataclass(frozen=True)
class FilterResult:
    verdicts: tuple[Verdict, ...]
    waiting: tuple[tuple[int, str], ...]
    """(CoT id, why) of the CoTs left for a later run."""

    def summary(self) -> dict[str, Any]:
        invalid = collections.Counter(
            reason_kind(v.reason) for v in self.verdicts if v.reason is not None
        )
        return {
            "judged": len(self.verdicts),
            "valid": sum(v.valid for v in self.verdicts),
            "invalid": dict(sorted(invalid.items())),
            "waiting": len(self.waiting),
        }


def load(session: Session, row_id: int) -> FilterInput:
    """The job's parameters and every CoT to judge."""
    params = session.execute(sa.select(Job.params).where(Job.id == row_id)).scalar_one()
    return FilterInput(FilterParams(**params), tuple(load_cots(session, to_judge())))


def run(item: FilterInput) -> FilterResult:
    """Judge every CoT whose searches are all done; plain data in, plain data out."""
    verdicts, waiting = [], []
    for cot in item.cots:
        why = cot.waiting_for()
        if why is None:
            verdicts.append(judge(cot, item.params.top_k))
        else:
            waiting.append((cot.cot_id, why))
    return FilterResult(tuple(verdicts), tuple(waiting))


def store(session: Session, row_id: int, result: FilterResult) -> None:
    """Each judged CoT's verdict, at `filter` done (its old examples dropped)."""
    judged = [verdict.cot_id for verdict in result.verdicts]
    session.execute(sa.delete(Example).where(Example.cot_id.in_(judged)))
    for verdict in result.verdicts:
        session.execute(
            sa.update(Cot)
            .where(Cot.id == verdict.cot_id)
            .values(
                valid=verdict.valid,
                invalid_reason=verdict.reason,
                stage=Stage.filter,
                status=Status.done,
                attempts=0,
                error=None,
                worker=None,
            )
        )
    session.execute(sa.update(Job).where(Job.id == row_id).values(result=result.summary()))


SPEC = register(jobs.job_spec(Stage.filter, JOB_NAME, load, run, store))


def queue_job(session: Session, params: FilterParams, reset: bool) -> bool:
    """Queue the filtering when CoTs wait for it, the job failed, or the parameters changed
    (then every CoT is judged again); returns whether it was queued."""
    wanted = asdict(params)
    job = jobs.create_or_lock(session, JOB_NAME, Stage.filter, wanted)
    if job is None:
        return True
    changed = reset or job.params != wanted
    if changed:
        _judge_again(session)
    pending = session.execute(sa.select(Cot.id).where(to_judge()).limit(1)).first() is not None
    if not (changed or pending or job.status == Status.failed):
        return False
    jobs.requeue(job, Stage.filter, wanted)
    return True


def _judge_again(session: Session) -> None:
    """Every judged CoT back to `cot` done, its verdict and examples dropped."""
    judged = sa.select(Cot.id).where(Cot.stage.in_([Stage.filter, Stage.split]))
    session.execute(sa.delete(Example).where(Example.cot_id.in_(judged)))
    session.execute(
        sa.update(Cot)
        .where(Cot.stage.in_([Stage.filter, Stage.split]))
        .values(
            stage=Stage.cot,
            status=Status.done,
            valid=None,
            invalid_reason=None,
            attempts=0,
            error=None,
            worker=None,
        )
    )


def proof_lengths(session: Session) -> dict[int, int]:
    """How many valid CoTs of selected theorems without haves have n scripts, by n."""
    kept = sa.and_(Cot.valid.is_(True), Theorem.parent_id.is_(None), gate.cot_selected())
    cots = load_cots(session, kept)
    counts = collections.Counter(c.proof_length for c in cots if c.proof_length is not None)
    return dict(sorted(counts.items()))


def plot_histogram(lengths: dict[int, int], path: Path) -> None:
    """A PNG histogram of proof lengths (scripts per CoT without haves); an unchanged picture
    is not written again."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4))
    axes.bar(list(lengths), list(lengths.values()), width=0.8, label="proofs without have")
    axes.set_xlabel("length of the proof (script blocks)")
    axes.set_ylabel("CoTs")
    axes.legend()
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=100)
    pyplot.close(figure)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_bytes() != picture.getvalue():
        path.write_bytes(picture.getvalue())


def command(
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="results kept per search")] = (
        DEFAULT_TOP_K
    ),
    plot_hist: Annotated[
        bool, typer.Option("--plot-hist", help=f"write {HIST_FILE}, proof lengths, in --out-dir")
    ] = False,
    out_dir: Annotated[
        Path | None, typer.Option(help="where --plot-hist writes [$ROCQCOT_HOME/steps/step_9]")
    ] = None,
    reset: Annotated[bool, typer.Option("--reset", help="judge every CoT again")] = False,
) -> None:
    """Keep the CoTs whose every target is found by one search; add the result blocks."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    ensure_schema()
    with session_factory().begin() as session:
        queued = queue_job(session, FilterParams(top_k), reset)
    run_workers([SPEC])
    with session_factory()() as session:
        job = session.execute(sa.select(Job).where(Job.name == JOB_NAME)).scalar_one()
        counted = sa.select(Cot.valid, sa.func.count()).where(gate.cot_selected())
        totals = dict(session.execute(counted.group_by(Cot.valid)).all())
        lengths = proof_lengths(session) if plot_hist else {}
    if job.status != Status.done:
        raise RocqcotError(f"step 9 {job.status}: {job.error or 'see rocqcot status'}")
    typer.echo(summary_line(job.result or {}, queued, totals, top_k))
    if plot_hist:
        out_dir = out_dir or rocqcot_home() / "steps" / "step_9"
        plot_histogram(lengths, out_dir / HIST_FILE)
        typer.echo(
            f"step 9: histogram of {sum(lengths.values())} proof lengths in {out_dir / HIST_FILE}"
        )


def summary_line(
    summary: dict[str, Any], queued: bool, totals: dict[bool | None, int], top_k: int
) -> str:
    """One line: what this run judged, and the selection's CoTs kept in all."""
    if not queued:
        now = "nothing to judge"
    else:
        reasons = ", ".join(f"{n} {kind}" for kind, n in summary.get("invalid", {}).items())
        now = (
            f"{summary.get('judged', 0)} CoTs judged with top {top_k}, {summary.get('valid', 0)} "
            f"kept{f' (invalid: {reasons})' if reasons else ''}"
        )
    waiting = summary.get("waiting", 0) if queued else totals.get(None, 0)
    later = f"; {waiting} waiting for their searches (steps 7-8)" if waiting else ""
    kept, judged = totals.get(True, 0), totals.get(True, 0) + totals.get(False, 0)
    return f"step 9: {now}{later}; {kept} of {plural(judged, 'CoT')} kept in all"


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
