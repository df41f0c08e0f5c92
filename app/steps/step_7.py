"""Step 7: search every search block of every CoT, then repair the searches that failed.

Stage `search` (on `search_blocks`, created here from `cots.blocks`, one row per `<search>`
block): the CoT's query is searched among what the theorem may use, and the block keeps its
first k results and the rank of its target, also stored as candidate 0 of `search_queries`.
A target whose docstring step 6 wrote (`force_result`) is put first in the results, marked
`forced`, when the search misses it; its rank stays the real one.

Stage `repair`: a block whose target is not in the top k (and was not forced), and every
block without a target (the failed search before a have), gets a short diagnostic `<think>`
and five better queries (candidates 1 to 5). The LLM is given the wrong query, the target
with its docstring, the first results and the think block that followed; before a have, the
wrong query and the results only. A reply without one think and five searches, or with a
query that names the target or copies its statement, is asked again, then the block fails.
Offline, the five queries are built deterministically from the goal and the target's
docstring words, and labelled `offline`.

The model and k are stored in each library's settings (`search`), so workers started on
their own agree with the command; changing them searches every block again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import describe, llm
from app.availability import Availability, availability
from app.cot import OFFLINE, normalized, without_name
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
from app.retrieval import Lookup, Retrievers
from app.search_index import Entry, Hit
from app.stages import StageSpec, register

DEFAULT_TOP_K = 10
REPAIRS = 5
QUOTE_TOKENS = 5
"""A query that repeats this many consecutive tokens of the target's statement quotes it."""
# fmt: off
_STOPWORDS = frozenset({
    "a", "an", "and", "any", "are", "as", "at", "be", "by", "for", "from", "has", "have", "if",
    "in", "into", "is", "it", "its", "of", "on", "or", "over", "that", "the", "their", "then",
    "there", "these", "this", "those", "to", "under", "when", "where", "which", "with",
})
# fmt: on


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
    """One `search_blocks` row per `<search>` block of each CoT that has none yet (a CoT that
    step 5 writes anew loses its rows); returns how many were created."""
    has_blocks = sa.exists().where(SearchBlock.cot_id == Cot.id)
    cots = session.execute(sa.select(Cot.id, Cot.blocks).where(~has_blocks)).all()
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
class Target:
    """The object a search looks for."""

    fqn: str
    entry: Entry | None
    """Its dictionary entry, if the dictionary has it."""
    forced: bool
    """Its docstring was written by step 6: it is put in the results when missed."""


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
        order_by=lambda: [SearchBlock.cot_id],
        batch_size=16,
        resources=lambda: contextlib.nullcontext(Retrievers()),
    )
)


# --- Stage `repair` ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RepairInput:
    """A searched block as the repair stage reads it."""

    query: str
    results: tuple[dict[str, Any], ...]
    target: Target | None
    needs_repair: bool
    goal: str
    """The think block before the search (where a CoT reads the goal), else the statement."""
    following_think: str
    """The think block after the search: why the target is needed."""


@dataclass(frozen=True)
class Repair:
    """A diagnosis and five better queries for one block."""

    think: str
    queries: tuple[str, ...]
    writer: str


RepairWriter = Callable[[RepairInput], Repair]


def needs_repair(target: Target | None, rank: int | None, top_k: int) -> bool:
    """A search before a have always; a search whose target is embedded and available but
    not in the top k, unless step 6 wrote the target's docstring (it is forced)."""
    if target is None:
        return True
    return not target.forced and rank is not None and rank > top_k


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


def _results_text(results: tuple[dict[str, Any], ...]) -> str:
    lines = []
    for number, result in enumerate(results, 1):
        lines.append(f"{number}. {normalized(result.get('fullname') or result['fqn'])}")
        lines.append(f"   {normalized(result.get('docstring') or '')}")
    return "\n".join(lines) or "(no result)"


def repair_messages(item: RepairInput) -> list[dict[str, str]]:
    """The request: the wrong query and its results, and, for a target, the target with its
    docstring and the think block that followed."""
    parts = [f"Wrong query:\n{item.query}"]
    if item.target is not None and item.target.entry is not None:
        entry = item.target.entry
        parts.append(
            f"The object it should have found:\n{normalized(entry.fullname or entry.fqn)}\n"
            f"Its docstring: {normalized(entry.docstring)}"
        )
    parts.append(f"First results of the wrong query:\n{_results_text(item.results)}")
    if item.target is not None:
        parts.append(f"The think block that followed the search:\n{item.following_think}")
    system = "repair" if item.target is not None else "repair_have"
    return [
        {"role": "system", "content": llm.prompt(system)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


_REPLY_BLOCK = re.compile(r"<(think|search)>(.*?)</\1>", re.DOTALL)


def parse_repair(text: str, target: Target | None) -> tuple[str, tuple[str, ...]]:
    """The think block and the five queries of a reply; a `BadAnswer` saying what is wrong
    when it has not exactly one think and five searches, or one of them names the target or
    copies its statement (the think comes before the search in the CoT)."""
    blocks = [(kind, normalized(content)) for kind, content in _REPLY_BLOCK.findall(text)]
    thinks = [content for kind, content in blocks if kind == "think" and content]
    queries = tuple(content for kind, content in blocks if kind == "search" and content)
    if len(thinks) != 1 or len(queries) != REPAIRS:
        raise llm.BadAnswer(
            f"it has {len(thinks)} non-empty <think> and {len(queries)} non-empty <search> "
            f"blocks; write exactly one <think> block, then exactly {REPAIRS} <search> blocks"
        )
    if target is not None:
        if problem := _leaks(thinks[0], target):
            raise llm.BadAnswer(f"the think block {problem}: the prover has not found it yet")
        for number, query in enumerate(queries, 1):
            if problem := _leaks(query, target):
                raise llm.BadAnswer(f"search {number} {problem}: describe what is needed")
    return thinks[0], queries


def _leaks(query: str, target: Target) -> str | None:
    """How a query gives the target away (its name, a copy of its statement), if it does."""
    name = target.fqn.rsplit(".", 1)[-1]
    named = re.search(rf"(?<![\w']){re.escape(name)}(?![\w'])", query)
    # A plain lowercase word (`size`, `prime`) may be said in English; an identifier may not.
    if target.fqn in query or (named and re.search(r"[_0-9A-Z']", name)):
        return f"names the target `{name}`"
    statement = (target.entry.fullname or "").split() if target.entry else []
    words = query.split()
    grams = {tuple(words[i : i + QUOTE_TOKENS]) for i in range(len(words) - QUOTE_TOKENS + 1)}
    for i in range(len(statement) - QUOTE_TOKENS + 1):
        if tuple(statement[i : i + QUOTE_TOKENS]) in grams:
            return "copies the target's statement"
    return None


@dataclass(frozen=True)
class LlmRepairWriter:
    """Asks the LLM for a diagnosis and five queries, checking the reply."""

    client: llm.LlmClient

    def __call__(self, item: RepairInput) -> Repair:
        parse = functools.partial(parse_repair, target=item.target)
        think, queries = self.client.ask(repair_messages(item), parse)
        return Repair(think, queries, self.client.settings.writer)


def content_words(text: str, name: str = "") -> list[str]:
    """The distinct content words of a text in order, the object's name left out."""
    words = re.findall(r"[A-Za-z][A-Za-z'-]*[A-Za-z]", without_name(text, name).lower())
    seen: dict[str, None] = {}
    for word in words:
        if word not in _STOPWORDS and word != name.lower():
            seen.setdefault(word)
    return list(seen)


def offline_repair(item: RepairInput) -> Repair:
    """Five deterministic queries: for a target, five more of the describer's paraphrases
    of it (seeded by the failed query, never its docstring's sentence); before a have, from
    the goal's words."""
    name = item.target.fqn.rsplit(".", 1)[-1] if item.target else ""
    goal = content_words(item.goal, name)
    entry = item.target.entry if item.target else None
    if entry is not None:
        queries = tuple(
            describe.query(entry.kind, entry.name, entry.fullname or "", f"{item.query}:{i}")
            for i in range(1, REPAIRS + 1)
        )
    else:
        words = content_words(item.query)
        drafts = [words[:8], words[:5] + goal[:3], ["fact", "about", *goal[:6]], goal[:8]]
        drafts.append(goal[2:10])
        queries = tuple(" ".join(w) if len(w) > 2 else item.query for w in drafts)
    if entry is None:
        think = (
            f'The search "{item.query}" returns nothing that states the fact I need; '
            f"I describe it through the notions of the goal: {', '.join(goal[:6])}."
        )
    else:
        topic = describe.gist(entry.kind, entry.name, entry.fullname or "").topic
        think = (
            f'The search "{item.query}" does not return the fact I need among its first '
            f"results; it is about {topic}, and the query should say so."
        )
    return Repair(think, queries, OFFLINE)


def writer_for(settings: llm.LlmSettings) -> RepairWriter:
    """The LLM writer when an endpoint is configured, else the offline one."""
    return LlmRepairWriter(llm.LlmClient(settings)) if settings.online else offline_repair


REPAIR_SPEC = register(
    StageSpec(
        stage=Stage.repair,
        model=SearchBlock,
        input_stage=Stage.search,
        load=load_repair,
        run=run_repair,
        store=store_repair,
        order_by=lambda: [SearchBlock.cot_id],
        resources=llm.default_writer(7, writer_for),
    )
)


# --- The command ------------------------------------------------------------------------------


def found_share(session: Session, top_k: int, chosen: bool) -> tuple[int, int]:
    """(targets found in the top k, searches with a target): the original queries', or the
    chosen ones' after step 8."""
    condition = SearchQuery.chosen if chosen else SearchQuery.candidate_index == 0
    found, total = session.execute(
        sa.select(
            sa.func.count().filter(SearchQuery.target_rank <= top_k),
            sa.func.count(),
        )
        .join(SearchBlock, SearchBlock.id == SearchQuery.search_block_id)
        .where(condition, SearchBlock.target_fqn.is_not(None))
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
    """Search every CoT's search blocks, then write better queries for the failed ones."""
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
