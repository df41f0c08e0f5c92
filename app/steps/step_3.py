"""Step 3: select diverse theorems with and without haves, by BM25 similarity.

The candidates are the top-level theorems done with step 2 (stage `haves` and done, or
already at `select` or later); a theorem still waiting for step 2, or that failed it, is not
considered. They fall in two pools: `with_have` (step 2 tagged at least one have in the
proof: rows in `haves`) and `without_have`; in each pool only theorems with between
`--min-tactics` and `--max-tactics` tactics (sentences outside have blocks) are kept, and
`app.selection` picks the k most mutually different statements.

The step is global: it runs as the one `jobs` row named `select`, claimed by the shared worker
like any row. Its parameters are stored on the row, so running the step again with the same
ones does nothing, while new parameters or `--reset` select again. Storing writes, in one
transaction, every candidate's `pool`, `selected` and 1-based `select_rank` (clearing the
flags of theorems no longer chosen) and moves the candidates at `haves` to `select`, done,
where step 4 takes the selected ones. Theorems already past `select` keep their stage and
what later steps derived for them; those steps read only selected theorems.
"""

from __future__ import annotations

import hashlib
import statistics
from dataclasses import asdict, dataclass, fields
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from app import jobs
from app.db.enums import Stage, Status
from app.db.models import Have, Job, Theorem
from app.errors import RocqcotError
from app.plural import plural
from app.stages import register

JOB_NAME = "select"
SELECTOR_VERSION = "select-1"
WITH_HAVE, WITHOUT_HAVE = "with_have", "without_have"


@dataclass(frozen=True)
class SelectParams:
    """The parameters of a selection; the same ones give the same selection."""

    k_have: int
    k_wo_have: int
    min_tactics: int
    max_tactics: int
    seed: int
    version: str = SELECTOR_VERSION
    """The selector's version: a new algorithm selects again."""


@dataclass(frozen=True)
class Candidate:
    """A theorem as the selection sees it."""

    id: int
    statement: str
    tactics: int | None
    has_have: bool


@dataclass(frozen=True)
class SelectInput:
    params: SelectParams
    candidates: tuple[Candidate, ...]
    """Top-level theorems done with step 2, by id."""
    waiting: int
    """Top-level theorems not done with step 2 (not considered)."""


@dataclass(frozen=True)
class PoolResult:
    """One pool's members and chosen theorems."""

    name: str
    members: tuple[int, ...]
    """Ids of the candidates within the tactic bounds."""
    chosen: tuple[int, ...]
    """Ids of the chosen theorems, in the order they were chosen."""
    nearest: tuple[float, ...]
    """Each chosen theorem's highest similarity to another chosen one."""
    wanted: int
    """The k asked of the pool (more than its members: all of them are chosen)."""

    def summary(self) -> dict[str, Any]:
        """Sizes and the nearest-neighbour similarity inside the selection."""
        spread = len(self.nearest) > 1
        return {
            "candidates": len(self.members),
            "wanted": self.wanted,
            "selected": len(self.chosen),
            "nn_sim_mean": round(statistics.fmean(self.nearest), 4) if spread else None,
            "nn_sim_max": round(max(self.nearest), 4) if spread else None,
        }


@dataclass(frozen=True)
class SelectResult:
    pools: tuple[PoolResult, ...]
    considered: tuple[int, ...]
    waiting: int

    def summary(self) -> dict[str, Any]:
        pools = {pool.name: pool.summary() for pool in self.pools}
        return {"considered": len(self.considered), "waiting": self.waiting, **pools}


def run(item: SelectInput) -> SelectResult:
    """Select in each pool; plain data in, plain data out."""
    params = item.params
    pools = (
        select_pool(item, WITH_HAVE, params.k_have),
        select_pool(item, WITHOUT_HAVE, params.k_wo_have),
    )
    return SelectResult(pools, tuple(c.id for c in item.candidates), item.waiting)


def select_pool(item: SelectInput, pool: str, k: int) -> PoolResult:
    """The k most diverse members of a pool; all of them when it has k or fewer."""
    from app.selection import diverse_selection  # numpy and scipy: not for every CLI start

    params = item.params
    members = [
        c
        for c in item.candidates
        if c.has_have == (pool == WITH_HAVE)
        and c.tactics is not None
        and params.min_tactics <= c.tactics <= params.max_tactics
    ]
    selection = diverse_selection([c.statement for c in members], min(k, len(members)), params.seed,
                                  pool)  # fmt: skip
    return PoolResult(
        pool,
        tuple(c.id for c in members),
        tuple(members[i].id for i in selection.order),
        selection.nearest,
        k,
    )


def done_with_step_2() -> sa.ColumnElement[bool]:
    """Theorems step 2 finished with: done at `haves`, or tagged and at a later stage (step 4
    `--all` tags, in its walk, the theorems it takes untagged)."""
    return sa.or_(
        sa.and_(Theorem.stage == Stage.haves, Theorem.status == Status.done),
        sa.and_(
            Theorem.stage.not_in([Stage.extract, Stage.haves]), Theorem.tagged_proof.is_not(None)
        ),
    )


def load_candidates(session: Session) -> tuple[Candidate, ...]:
    """Every top-level theorem done with step 2, by id, with whether it has a tagged have."""
    has_have = sa.exists().where(Have.theorem_id == Theorem.id)
    rows = session.execute(
        sa.select(Theorem.id, Theorem.statement, Theorem.tactics, has_have)
        .where(Theorem.parent_id.is_(None), done_with_step_2())
        .order_by(Theorem.id)
    )
    return tuple(Candidate(*row) for row in rows)


def load(session: Session, row_id: int) -> SelectInput:
    """The job's parameters and every candidate."""
    params = session.execute(sa.select(Job.params).where(Job.id == row_id)).scalar_one()
    waiting = session.execute(
        sa.select(sa.func.count())
        .select_from(Theorem)
        .where(Theorem.parent_id.is_(None), sa.not_(done_with_step_2()))
    ).scalar_one()
    chosen = SelectParams(**{f.name: params[f.name] for f in fields(SelectParams)})
    return SelectInput(chosen, load_candidates(session), waiting)


def _ids(ids: tuple[int, ...]) -> sa.ColumnElement[Any]:
    return sa.cast(sa.literal(list(ids), ARRAY(sa.Integer)), ARRAY(sa.Integer))


def store(session: Session, row_id: int, result: SelectResult) -> None:
    """Write the flags and move the candidates to `select`; rows already right are untouched."""
    members = tuple(i for pool in result.pools for i in pool.members)
    flagged = sa.or_(Theorem.selected, Theorem.pool.is_not(None), Theorem.select_rank.is_not(None))
    session.execute(
        sa.update(Theorem)
        .where(flagged, Theorem.id != sa.all_(_ids(members)))
        .values(selected=False, pool=None, select_rank=None)
    )
    for pool in result.pools:
        _flag(session, pool)
    session.execute(
        sa.update(Theorem)
        .where(
            Theorem.id == sa.any_(_ids(result.considered)),
            Theorem.stage == Stage.haves,
            Theorem.status == Status.done,
        )
        .values(stage=Stage.select, status=Status.done, attempts=0, error=None, worker=None)
    )
    session.execute(sa.update(Job).where(Job.id == row_id).values(result=result.summary()))


def _flag(session: Session, pool: PoolResult) -> None:
    """A pool's members get its name; the chosen ones `selected` and their rank (from 1)."""
    rank = sa.func.array_position(_ids(pool.chosen), Theorem.id)
    session.execute(
        sa.update(Theorem)
        .where(
            Theorem.id == sa.any_(_ids(pool.members)),
            sa.or_(
                Theorem.pool.is_distinct_from(pool.name),
                Theorem.select_rank.is_distinct_from(rank),
                Theorem.selected.is_distinct_from(rank.is_not(None)),
            ),
        )
        .values(pool=pool.name, selected=rank.is_not(None), select_rank=rank)
    )


SPEC = register(jobs.job_spec(Stage.select, JOB_NAME, load, run, store))


def candidate_set(session: Session) -> str:
    """A digest of the theorems the selection chooses from: when theorems are added or removed
    (a library that grew), the same parameters select again."""
    ids = session.execute(
        sa.select(Theorem.id)
        .where(Theorem.parent_id.is_(None), done_with_step_2())
        .order_by(Theorem.id)
    ).scalars()
    return hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()


def queue_job(session: Session, params: SelectParams, reset: bool) -> bool:
    """Queue the selection unless a job with these parameters, over the same candidates, is
    done or under way; returns whether it was queued."""
    wanted = {**asdict(params), "candidates": candidate_set(session)}
    job = jobs.create_or_lock(session, JOB_NAME, Stage.select, wanted)
    if job is None:
        return True
    if job.params == wanted and job.status != Status.failed and not reset:
        return False
    jobs.requeue(job, Stage.select, wanted)
    return True


SIZE_SHARE = 80
"""Sized from the library, each pool asks for one theorem in `SIZE_SHARE` of the library's
(50 for MathComp's ssreflect part), between `SIZE_BOUNDS`."""
SIZE_BOUNDS = (10, 500)


def library_size_k(session: Session) -> int:
    """The k of each pool when none is given: one theorem in 80 of the library's top-level
    theorems, at least 10 and at most 500 (the original's default)."""
    theorems = session.execute(
        sa.select(sa.func.count()).select_from(Theorem).where(Theorem.parent_id.is_(None))
    ).scalar_one()
    low, high = SIZE_BOUNDS
    return max(low, min(high, round(theorems / SIZE_SHARE)))


KHaveOption = Annotated[
    int | None,
    typer.Option(min=0, help="theorems to pick with haves [1 in 80 of the library's, 10-500]"),
]
KWoHaveOption = Annotated[
    int | None, typer.Option(min=0, help="theorems to pick without haves [as --k-have]")
]


def command(
    k_have: KHaveOption = None,
    k_wo_have: KWoHaveOption = None,
    min_tactics: Annotated[int, typer.Option(min=0, help="fewest tactics of a candidate")] = 2,
    max_tactics: Annotated[int, typer.Option(min=0, help="most tactics of a candidate")] = 14,
    seed: Annotated[int, typer.Option(help="picks the first theorem of each pool")] = 0,
    reset: Annotated[bool, typer.Option("--reset", help="select again anyway")] = False,
) -> None:
    """Select diverse theorems with and without haves (BM25, greedy max-min); a pool with
    fewer candidates than asked gives all of them."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    if min_tactics > max_tactics:
        raise RocqcotError(f"--min-tactics {min_tactics} exceeds --max-tactics {max_tactics}")
    ensure_schema()
    with session_factory().begin() as session:
        sized = library_size_k(session) if k_have is None or k_wo_have is None else 0
        params = SelectParams(
            sized if k_have is None else k_have,
            sized if k_wo_have is None else k_wo_have,
            min_tactics,
            max_tactics,
            seed,
        )
        queued = queue_job(session, params, reset)
    run_workers([SPEC])
    with session_factory()() as session:
        job = session.execute(sa.select(Job).where(Job.name == JOB_NAME)).scalar_one()
    if job.status != Status.done:
        raise RocqcotError(f"step 3 {job.status}: {job.error or 'see rocqcot status'}")
    typer.echo(summary_line(job.result or {}, queued, params))


def summary_line(summary: dict[str, Any], queued: bool, params: SelectParams) -> str:
    """What was selected from how many, how alike the selection is, and a pool that had fewer
    candidates than asked (all of them taken)."""
    pools, short = [], []
    for name, flag in ((WITH_HAVE, "--k-have"), (WITHOUT_HAVE, "--k-wo-have")):
        pool = summary[name]
        alike = (
            f" (nearest-neighbour similarity mean {pool['nn_sim_mean']}, max {pool['nn_sim_max']})"
            if pool["nn_sim_mean"] is not None
            else ""
        )
        pools.append(f"{pool['selected']} of {pool['candidates']} {name}{alike}")
        if pool.get("wanted", 0) > pool["candidates"]:
            short.append(
                f"pool {name} has {plural(pool['candidates'], 'candidate')} (with "
                f"{params.min_tactics} to {params.max_tactics} tactics), fewer than {flag} "
                f"{pool['wanted']}: all of them are selected"
            )
    state = "selected" if queued else "unchanged (same parameters; --reset selects again):"
    waiting = f"; {summary['waiting']} theorems not done with step 2" if summary["waiting"] else ""
    lines = [f"step 3: {state} {', '.join(pools)}{waiting}", *(f"step 3: {s}" for s in short)]
    return "\n".join(lines)


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
