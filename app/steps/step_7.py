"""Step 7: search every search block of the selection's CoTs, then repair the failed ones.

Stage `search` (on `search_blocks`, created here from `cots.blocks`, one row per `<search>`
block of a CoT of step 3's selection: `app.gate`): the CoT's query is searched among what
the theorem may use, and the block keeps its first k results and the rank of its target,
also stored as candidate 0 of `search_queries`. A target whose docstring step 6 wrote
(`force_result`) is put first in the results, marked `forced`, when the search misses it;
its rank stays the real one.

Stage `repair`: a block whose target is not in the top k (and was not forced), and every
block without a target (the failed search before a have), gets a short diagnostic `<think>`
and five better queries (candidates 1 to 5), written by `app.repairs` (the LLM, or offline);
an answer still wrong after the re-asks fails the block. Both stages take only the blocks of
the selection's CoTs.

The model and k are stored in each library's settings (`search`), so workers started on
their own agree with the command; changing them searches every block again.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import gate, llm
from app.availability import Availability, availability
from app.db import queue
from app.db.enums import Stage, Status
from app.db.models import (
    Cot,
    Library,
    LibraryObject,
    SearchBlock,
    SearchQuery,
    SourceFile,
    Theorem,
)
from app.describe import description
from app.embedding import DEFAULT_MODEL
from app.repairs import Repair, RepairInput, RepairWriter, Target, needs_repair, writer_for
from app.retrieval import Lookup, Retrievers
from app.search_index import Entry, Hit
from app.stages import StageSpec, register

DEFAULT_TOP_K = 10

# --- Parameters -----------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchParams:
    """How step 7 searches; stored in each library's settings under `search`."""

    model: str = DEFAULT_MODEL
    top_k: int = DEFAULT_TOP_K


def library_params(session: Session, theorem_id: int, key: str) -> dict[str, Any]:
    """The parameters a step stored for the library of a theorem."""
    settings = session.execute(
        sa.select(Library.settings)
        .join(SourceFile, SourceFile.library_id == Library.id)
        .join(Theorem, Theorem.file_id == SourceFile.id)
        .where(Theorem.id == theorem_id)
    ).scalar_one()
    return dict(settings.get(key) or {})


def store_params(session: Session, key: str, params: Any, redo: Stage, stages: list[Stage]) -> int:
    """Record a step's parameters in every library; where they change, the blocks of that
    library in `stages` go back to `redo`. Returns how many blocks were reset."""
    wanted, default = dataclasses.asdict(params), dataclasses.asdict(type(params)())
    reset = 0
    for library in session.execute(sa.select(Library).with_for_update()).scalars():
        if library.settings.get(key, default) != wanted:
            reset += _reset_blocks(session, library.id, redo, stages)
        library.settings = {**library.settings, key: wanted}
    return reset


def _reset_blocks(session: Session, library_id: int, redo: Stage, stages: list[Stage]) -> int:
    ids = list(
        session.execute(
            sa.select(SearchBlock.id)
            .join(Cot, Cot.id == SearchBlock.cot_id)
            .join(Theorem, Theorem.id == Cot.theorem_id)
            .join(SourceFile, SourceFile.id == Theorem.file_id)
            .where(SourceFile.library_id == library_id, SearchBlock.stage.in_(stages))
        ).scalars()
    )
    queue.reset_rows(session, SearchBlock.__table__, ids, redo)
    return len(ids)


# --- Search blocks from the CoTs --------------------------------------------------------------


def create_search_blocks(session: Session) -> int:
    """One `search_blocks` row per `<search>` block of each CoT of the selection that has
    none yet (a CoT that step 5 writes anew loses its rows); returns how many were created."""
    has_blocks = sa.exists().where(SearchBlock.cot_id == Cot.id)
    chosen = sa.and_(~has_blocks, gate.cot_selected())
    cots = session.execute(sa.select(Cot.id, Cot.blocks).where(chosen)).all()
    rows = [
        {
            "cot_id": cot_id,
            "block_index": index,
            "target_fqn": block.get("target"),
            "query": block["content"],
            "results": [],
            "stage": Stage.search,
            "status": Status.pending,
        }
        for cot_id, blocks in cots
        for index, block in enumerate(blocks or [])
        if block.get("kind") == "search"
    ]
    for start in range(0, len(rows), 1000):
        session.execute(
            insert(SearchBlock)
            .values(rows[start : start + 1000])
            .on_conflict_do_nothing(index_elements=["cot_id", "block_index"])
        )
    return len(rows)


# --- Stage `search` ---------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockInput:
    """A search block as the search stage reads it."""

    query: str
    target: Target | None
    theorem: Availability
    params: SearchParams
    writer: str
    """The CoT's writer, recorded with the original query."""


@dataclass(frozen=True)
class SearchOutcome:
    query: str
    writer: str
    results: list[dict[str, Any]]
    rank: int | None


def load_target(session: Session, fqn: str | None) -> Target | None:
    """The target's entry (the one with a docstring first, then the earliest); one without
    a docstring says what the describer says of it."""
    if fqn is None:
        return None
    row = session.execute(
        sa.select(LibraryObject)
        .where(LibraryObject.fqn == fqn)
        .order_by(sa.func.coalesce(LibraryObject.docstring, "") == "", LibraryObject.library_order)
        .limit(1)
    ).scalar()
    if row is None:
        return Target(fqn, None, False)
    said = row.docstring or description(row.kind, row.name, row.fullname or "")
    entry = Entry(row.id, row.fqn, row.kind, row.name, row.fullname, said)
    return Target(fqn, entry, row.force_result)


def load(session: Session, row_id: int) -> BlockInput:
    """The block's query (from the CoT, its source of truth), target, theorem and settings."""
    block_index, theorem_id, blocks, writer = session.execute(
        sa.select(SearchBlock.block_index, Cot.theorem_id, Cot.blocks, Cot.writer)
        .join(Cot, Cot.id == SearchBlock.cot_id)
        .where(SearchBlock.id == row_id)
    ).one()
    block = blocks[block_index]
    params = SearchParams(**library_params(session, theorem_id, "search"))
    target = load_target(session, block.get("target"))
    return BlockInput(block["content"], target, availability(session, theorem_id), params, writer)


def results_json(lookup: Lookup, target: Target | None, top_k: int) -> list[dict[str, Any]]:
    """The results a block keeps: the first k, with a forced target put first when missed
    (never one that is not available: it has a rank only when it is)."""
    results = [hit.to_json() for hit in lookup.hits[:top_k]]
    forced = target is not None and target.forced and target.entry is not None
    if not forced or lookup.rank is None or lookup.rank <= top_k:
        return results
    put = Hit(lookup.target_score or 0.0, target.entry).to_json(forced=True)
    return [put, *results[: top_k - 1]]


def run(item: BlockInput, retrievers: Retrievers) -> SearchOutcome:
    """Search the block's query with the library's model and k."""
    retriever = retrievers(item.params.model)
    fqn = item.target.fqn if item.target else None
    lookup = retriever.lookup([item.query], item.params.top_k, item.theorem, fqn)[0]
    results = results_json(lookup, item.target, item.params.top_k)
    return SearchOutcome(item.query, item.writer, results, lookup.rank)


def store(session: Session, row_id: int, outcome: SearchOutcome) -> None:
    """The block's results and rank, and its query as candidate 0 (the block starts over:
    no candidate stays chosen)."""
    session.execute(
        sa.update(SearchBlock)
        .where(SearchBlock.id == row_id)
        .values(query=outcome.query, results=outcome.results, target_rank=outcome.rank)
    )
    session.execute(
        sa.update(SearchQuery).where(SearchQuery.search_block_id == row_id).values(chosen=False)
    )
    upsert_candidates(
        session, row_id, [(0, outcome.query, None, outcome.writer)], rank=outcome.rank
    )


def upsert_candidates(
    session: Session,
    block_id: int,
    candidates: list[tuple[int, str, str | None, str]],
    rank: int | None = None,
) -> None:
    """Write candidates (index, query, think, writer) of a block."""
    rows = [
        {
            "search_block_id": block_id,
            "candidate_index": index,
            "query": query,
            "think": think,
            "writer": writer,
            "target_rank": rank,
            "chosen": False,
        }
        for index, query, think, writer in candidates
    ]
    statement = insert(SearchQuery).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["search_block_id", "candidate_index"],
            set_={key: statement.excluded[key] for key in rows[0] if key != "search_block_id"},
        )
    )


SPEC = register(
    StageSpec(
        stage=Stage.search,
        model=SearchBlock,
        input_stage=None,  # rows are created pending in `search`
        load=load,
        run=run,
        store=store,
        gate=gate.block_selected,
        order_by=lambda: [SearchBlock.cot_id],
        batch_size=16,
        resources=lambda: contextlib.nullcontext(Retrievers()),
    )
)


# --- Stage `repair` ---------------------------------------------------------------------------


def _think_near(blocks: list[dict[str, Any]], index: int, step: int) -> str:
    """The nearest think block before (`step` -1) or after (+1) a block, or ''."""
    index += step
    while 0 <= index < len(blocks):
        if blocks[index].get("kind") == "think":
            return blocks[index]["content"]
        if blocks[index].get("kind") != "search":
            return ""
        index += step
    return ""


def load_repair(session: Session, row_id: int) -> RepairInput:
    """The searched block with what its repair needs."""
    block_index, query, results, rank, theorem_id, blocks, statement = session.execute(
        sa.select(
            SearchBlock.block_index,
            SearchBlock.query,
            SearchBlock.results,
            SearchBlock.target_rank,
            Cot.theorem_id,
            Cot.blocks,
            Theorem.statement,
        )
        .join(Cot, Cot.id == SearchBlock.cot_id)
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .where(SearchBlock.id == row_id)
    ).one()
    params = SearchParams(**library_params(session, theorem_id, "search"))
    target = load_target(session, blocks[block_index].get("target"))
    return RepairInput(
        query=query,
        results=tuple(results),
        target=target,
        needs_repair=needs_repair(target, rank, params.top_k),
        goal=_think_near(blocks, block_index, -1) or statement,
        following_think=_think_near(blocks, block_index, 1),
    )


def run_repair(item: RepairInput, write: RepairWriter) -> Repair | None:
    """Five better queries for a failed search; None when the search needs no repair."""
    return write(item) if item.needs_repair else None


def store_repair(session: Session, row_id: int, repair: Repair | None) -> None:
    """Candidates 1 to 5 with the diagnosis; a block that needs no repair keeps only its
    original query."""
    session.execute(
        sa.delete(SearchQuery).where(
            SearchQuery.search_block_id == row_id, SearchQuery.candidate_index > 0
        )
    )
    if repair is None:
        return
    candidates = [
        (index, query, repair.think, repair.writer) for index, query in enumerate(repair.queries, 1)
    ]
    upsert_candidates(session, row_id, candidates)


# --- Writing repairs --------------------------------------------------------------------------


REPAIR_SPEC = register(
    StageSpec(
        stage=Stage.repair,
        model=SearchBlock,
        input_stage=Stage.search,
        load=load_repair,
        run=run_repair,
        store=store_repair,
        gate=gate.block_selected,
        order_by=lambda: [SearchBlock.cot_id],
        resources=llm.default_writer(7, writer_for),
    )
)


# --- The command ------------------------------------------------------------------------------


def found_share(session: Session, top_k: int, chosen: bool) -> tuple[int, int]:
    """(targets found in the top k, searches with a target) of the selection's CoTs: the
    original queries', or the chosen ones' after step 8."""
    condition = SearchQuery.chosen if chosen else SearchQuery.candidate_index == 0
    found, total = session.execute(
        sa.select(
            sa.func.count().filter(SearchQuery.target_rank <= top_k),
            sa.func.count(),
        )
        .join(SearchBlock, SearchBlock.id == SearchQuery.search_block_id)
        .where(condition, SearchBlock.target_fqn.is_not(None), gate.block_selected())
    ).one()
    return found, total


def share_text(found: int, total: int) -> str:
    return f"{found}/{total} ({100 * found / total:.1f}%)" if total else "0/0"


TopKOption = Annotated[int, typer.Option("--top-k", min=1, help="results kept per search")]
ModelNameOption = Annotated[
    str, typer.Option("--model-name", help="sentence-transformers model name or folder")
]
DeviceOption = Annotated[
    str | None, typer.Option("--device", help="cpu, cuda, ... [sentence-transformers' choice]")
]
BatchSizeOption = Annotated[int, typer.Option("--batch-size", min=1, help="texts per batch")]


def command(
    top_k: TopKOption = DEFAULT_TOP_K,
    model_name: ModelNameOption = DEFAULT_MODEL,
    device: DeviceOption = None,
    batch_size: BatchSizeOption = 64,
    max_workers: llm.MaxWorkersOption = None,
    mean_delay: llm.MeanDelayOption = None,
    budget_usd: llm.BudgetOption = None,
    config: llm.ConfigOption = None,
    base_url: llm.BaseUrlOption = None,
    model: llm.ModelOption = None,
    offline: llm.OfflineOption = False,
) -> None:
    """Search the search blocks of the selection's CoTs, then write better queries for the
    failed ones."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    ensure_schema()
    with session_factory().begin() as session:
        reset = store_params(
            session, "search", SearchParams(model_name, top_k), Stage.search,
            [Stage.search, Stage.repair, Stage.best_query],
        )  # fmt: skip
        created = create_search_blocks(session)
    retrievers = Retrievers(device, batch_size)
    synced = retrievers.sync(model_name)
    searched = run_workers(
        [dataclasses.replace(SPEC, resources=lambda: contextlib.nullcontext(retrievers))]
    )
    flags = llm.StepFlags(config, offline, base_url, model, max_workers, mean_delay, budget_usd)
    report = llm.run_llm_step(7, REPAIR_SPEC, writer_for, flags, offline_batch=16)
    with session_factory()() as session:
        found, total = found_share(session, top_k, chosen=False)
    typer.echo(
        f"step 7: {synced.embedded} of {synced.entries} dictionary entries embedded "
        f"({model_name}); {created} search blocks created, {reset} reset; "
        f"{searched.done} searched, {searched.failed} failed; targets in the top {top_k}: "
        f"{share_text(found, total)}"
    )
    typer.echo(report.line(7, "blocks through repair"))
    report.check(7)


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
