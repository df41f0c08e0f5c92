"""Step 8: keep, for each search block, the candidate query that ranks its target best.

The blocks are those of the CoTs of step 3's selection (`app.gate`).

Every candidate (the CoT's own query, index 0, and step 7's repairs, 1 to 5) is embedded and
searched among what the theorem may use; each gets the rank of the block's target. The kept
query is the one with the lowest rank, the first on ties (so a repair replaces the original
only when it does strictly better); a candidate whose target has no rank (not available, or
not embedded) comes last. A block without a target (the failed search before a have) keeps a
candidate drawn at random, seeded by `--seed` and the block, so a rerun keeps the same one.

The block then holds the kept query, its first k results (a target whose docstring step 6
wrote is forced in first, as in step 7) and its rank; `search_queries.chosen` marks it and
every candidate keeps its own rank and results, so step 9 can tell whether any query found the
target and a researcher can see what each repair brought back.
The model, k and seed are stored in each library's settings (`best_query`); changing them
chooses again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app import gate
from app.availability import Availability, availability
from app.db.enums import Stage
from app.db.models import Cot, SearchBlock, SearchQuery, Theorem
from app.embedding import DEFAULT_MODEL
from app.retrieval import Retrievers
from app.stages import StageSpec, register
from app.steps.step_7 import (
    DEFAULT_TOP_K,
    BatchSizeOption,
    DeviceOption,
    ModelNameOption,
    Target,
    TopKOption,
    found_share,
    library_params,
    load_target,
    results_json,
    share_text,
    store_params,
)


@dataclass(frozen=True)
class BestQueryParams:
    """How step 8 searches and draws; stored in each library's settings under `best_query`."""

    model: str = DEFAULT_MODEL
    top_k: int = DEFAULT_TOP_K
    seed: int = 0


@dataclass(frozen=True)
class BestInput:
    """A block's candidates as step 8 reads them."""

    block_id: int
    draw_key: str
    """What seeds the draw for a block without target: its theorem and place, which (unlike
    row ids) are the same in every run."""
    candidates: tuple[tuple[int, str], ...]
    """(candidate index, query), by index."""
    target: Target | None
    theorem: Availability
    params: BestQueryParams


@dataclass(frozen=True)
class BestResult:
    candidates: tuple[tuple[int, int | None, list[dict[str, Any]]], ...]
    """(candidate index, rank of the target, first k results) for every candidate."""
    chosen: int
    """The kept candidate's index."""
    query: str
    results: list[dict[str, Any]]
    rank: int | None


def best_position(ranks: Sequence[int | None]) -> int:
    """The position of the best rank: the lowest, the first among equals, unranked last."""
    return min(range(len(ranks)), key=lambda i: (ranks[i] is None, ranks[i] or 0, i))


def draw_key(fqn: str, block_index: int) -> str:
    """The key of a search block that is the same in every run of the pipeline."""
    return f"{fqn}#{block_index}"


def seeded_position(seed: int, key: str, count: int) -> int:
    """A random position, the same for the same seed and block on every run."""
    return random.Random(f"{seed}:{key}").randrange(count)


def load(session: Session, row_id: int) -> BestInput:
    """The block's candidates, target, theorem and the library's step-8 settings."""
    theorem_id, fqn, block_index, target_fqn = session.execute(
        sa.select(Cot.theorem_id, Theorem.fqn, SearchBlock.block_index, SearchBlock.target_fqn)
        .join(Cot, Cot.id == SearchBlock.cot_id)
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .where(SearchBlock.id == row_id)
    ).one()
    candidates = session.execute(
        sa.select(SearchQuery.candidate_index, SearchQuery.query)
        .where(SearchQuery.search_block_id == row_id)
        .order_by(SearchQuery.candidate_index)
    ).all()
    return BestInput(
        block_id=row_id,
        draw_key=draw_key(fqn, block_index),
        candidates=tuple((index, query) for index, query in candidates),
        target=load_target(session, target_fqn),
        theorem=availability(session, theorem_id),
        params=BestQueryParams(**library_params(session, theorem_id, "best_query")),
    )


def run(item: BestInput, retrievers: Retrievers) -> BestResult:
    """Search every candidate and keep the best one (or a seeded random one)."""
    if not item.candidates:
        raise ValueError("the block has no candidate query: run step 7 first")
    params = item.params
    fqn = item.target.fqn if item.target else None
    queries = [query for _, query in item.candidates]
    lookups = retrievers(params.model).lookup(queries, params.top_k, item.theorem, fqn)
    ranks = [lookup.rank for lookup in lookups]
    if item.target is None:
        position = seeded_position(params.seed, item.draw_key, len(lookups))
    else:
        position = best_position(ranks)
    indexes = [index for index, _ in item.candidates]
    results = [results_json(lookup, item.target, params.top_k) for lookup in lookups]
    return BestResult(
        candidates=tuple(zip(indexes, ranks, results, strict=True)),
        chosen=indexes[position],
        query=queries[position],
        results=results[position],
        rank=ranks[position],
    )


def store(session: Session, row_id: int, result: BestResult) -> None:
    """Every candidate's rank, results and the chosen mark; the block takes the kept query."""
    for index, rank, results in result.candidates:
        session.execute(
            sa.update(SearchQuery)
            .where(SearchQuery.search_block_id == row_id, SearchQuery.candidate_index == index)
            .values(target_rank=rank, results=results, chosen=index == result.chosen)
        )
    session.execute(
        sa.update(SearchBlock)
        .where(SearchBlock.id == row_id)
        .values(query=result.query, results=result.results, target_rank=result.rank)
    )


SPEC = register(
    StageSpec(
        stage=Stage.best_query,
        model=SearchBlock,
        input_stage=Stage.repair,
        load=load,
        run=run,
        store=store,
        gate=gate.block_selected,
        order_by=lambda: [SearchBlock.cot_id],
        batch_size=16,
        resources=lambda: contextlib.nullcontext(Retrievers()),
    )
)


def command(
    model_name: ModelNameOption = DEFAULT_MODEL,
    device: DeviceOption = None,
    batch_size: BatchSizeOption = 64,
    top_k: TopKOption = DEFAULT_TOP_K,
    seed: Annotated[int, typer.Option(help="draws the query of blocks without target")] = 0,
) -> None:
    """Search every candidate query and keep the one that ranks its target best."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    ensure_schema()
    with session_factory().begin() as session:
        params = BestQueryParams(model_name, top_k, seed)
        reset = store_params(session, "best_query", params, Stage.best_query, [Stage.best_query])
    retrievers = Retrievers(device, batch_size)
    synced = retrievers.sync(model_name)
    stats = run_workers(
        [dataclasses.replace(SPEC, resources=lambda: contextlib.nullcontext(retrievers))]
    )
    with session_factory()() as session:
        before = found_share(session, top_k, chosen=False)
        after = found_share(session, top_k, chosen=True)
    typer.echo(
        f"step 8: {synced.embedded} of {synced.entries} dictionary entries embedded "
        f"({model_name}); {stats.done} blocks chosen, {stats.failed} failed, {reset} reset; "
        f"targets in the top {top_k}: {share_text(*before)} with the original queries, "
        f"{share_text(*after)} with the kept ones"
    )


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
