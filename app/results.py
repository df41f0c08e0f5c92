"""A kept CoT's result blocks, and the checks that decide whether it is kept (step 9).

A CoT is kept when every search block is followed by a think block, every search has at least
k available results, and every target is found in the top k by exactly one search: found by
none, the CoT uses a fact it never found; found twice, a search repeats what the CoT already
knows (both as the original pipeline decided). A target whose docstring step 6 wrote
(`force_result`) is put first in its search's results, and so found, as the original did.

The `<result>` blocks are not stored: they are a pure function of the CoT, its search blocks
and its evaluation (`filtered_blocks`), which step 9 judges with and step 10 and the exports
compute again. `load_cots` reads what they are made of; `job_params` the k step 9 used.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.cot import CODE_KINDS, Block, CotError, Step, match_code
from app.db.enums import Stage, Status
from app.db.models import Cot, Job, LibraryObject, ProofStep, SearchBlock, Theorem
from app.errors import RocqcotError
from app.goal_diff import NO_GOALS

JOB_NAME = "filter"
FILTER_VERSION = "filter-1"
DEFAULT_TOP_K = 10
FINISHED = "No goals remaining: the proof is finished."


class InvalidCot(Exception):
    """Why a CoT is not kept (stored in `cots.invalid_reason`)."""


@dataclass(frozen=True)
class FilterParams:
    """The parameters of a filtering; the same ones give the same verdicts."""

    top_k: int = DEFAULT_TOP_K
    version: str = FILTER_VERSION


@dataclass(frozen=True)
class SearchRow:
    """A search block as step 8 left it."""

    block_index: int
    query: str
    """The query step 8 kept."""
    target: str | None
    rank: int | None
    results: tuple[dict[str, Any], ...]
    forced: bool
    """The target's docstring was written by step 6: it is put first in the results."""
    settled: str | None
    """None when done with step 8; else where the block is (`search failed`, ...)."""


@dataclass(frozen=True)
class CotData:
    """A CoT with what its result blocks are made of."""

    cot_id: int
    name: str
    top_level: bool
    writer: str
    initial_goal: str
    blocks: tuple[Block, ...]
    steps: tuple[Step, ...]
    """The theorem's replayed chains with the goals after each (keywords included)."""
    searches: tuple[SearchRow, ...]

    def waiting_for(self) -> str | None:
        """Why the CoT cannot be judged yet (a search not done with step 8), or None."""
        expected = {i for i, block in enumerate(self.blocks) if block.kind == "search"}
        if {row.block_index for row in self.searches} != expected:
            return "search blocks not created yet (step 7)"
        return next((s.settled for s in self.searches if s.settled is not None), None)

    @property
    def proof_length(self) -> int | None:
        """Scripts in the CoT of a top-level theorem without haves (the histogram's unit)."""
        if not self.top_level or any(block.kind == "have" for block in self.blocks):
            return None
        return sum(block.kind == "script" for block in self.blocks)


# --- Judging a CoT (pure) ---------------------------------------------------------------------


def kept_results(row: SearchRow, top_k: int) -> list[dict[str, Any]]:
    """The first k results of a search, a forced target first (when it is available)."""
    results = list(row.results)
    target = next((r for r in results if r["fqn"] == row.target), None)
    if row.forced and target is not None and row.rank is not None:
        results = [target, *(r for r in results if r is not target)]
    return results[:top_k]


def results_text(results: Sequence[dict[str, Any]]) -> str:
    """A search's answer: `n. fullname` then the docstring, for each result."""
    entries = []
    for number, result in enumerate(results, 1):
        head = (result.get("fullname") or result["fqn"]).strip()
        entries.append(f"{number}. {head}\n{(result.get('docstring') or '').strip()}".strip())
    return "\n\n".join(entries)


def code_result(kind: str, step: Step) -> str:
    """Rocq's answer to a script or a have: the goals after its last chain."""
    goals = step.goals.strip()
    after = FINISHED if goals in ("", NO_GOALS) else f"Remaining goals:\n{goals}"
    return f"The have is proved.\n{after}" if kind == "have" else after


def _expect_think(blocks: Sequence[Block], index: int) -> None:
    following = blocks[index + 1].kind if index + 1 < len(blocks) else "nothing"
    if following != "think":
        raise InvalidCot(
            f"no think after a search: search block {index + 1} is followed by {following}"
        )


def _record(found: dict[str, int], row: SearchRow, results: list[dict[str, Any]]) -> None:
    """Note that the row's search found its target; a second finder makes the CoT invalid."""
    if row.target is None or all(r["fqn"] != row.target for r in results):
        return
    if row.target in found:
        raise InvalidCot(
            f"target found twice: {row.target} by search blocks {found[row.target]} and "
            f"{row.block_index + 1}"
        )
    found[row.target] = row.block_index + 1


def filtered_blocks(cot: CotData, top_k: int) -> tuple[Block, ...]:
    """The CoT with its result blocks, searches holding their kept query; `InvalidCot` with
    the first reason it is not kept."""
    searches = {row.block_index: row for row in cot.searches}
    expected = [step for step in cot.steps if not step.is_keyword]
    found: dict[str, int] = {}
    blocks: list[Block] = []
    position = 0
    for index, block in enumerate(cot.blocks):
        if block.kind == "search":
            blocks += _searched(cot.blocks, index, searches[index], top_k, found)
            continue
        blocks.append(block)
        if block.kind in CODE_KINDS:
            try:
                position = match_code(block, index + 1, expected, position)
            except CotError as error:
                raise InvalidCot(f"code not the proof's: {error}") from None
            blocks.append(Block("result", code_result(block.kind, expected[position - 1])))
    _check_all_found(cot.searches, found, top_k)
    if position < len(expected):
        raise InvalidCot(f"proof unfinished: the CoT stops before `{expected[position].code}`")
    return tuple(blocks)


def _searched(
    blocks: Sequence[Block], index: int, row: SearchRow, top_k: int, found: dict[str, int]
) -> tuple[Block, Block]:
    """A search block holding its kept query, and its result block, once it passed the
    checks (a think follows, k results, its target not found before)."""
    _expect_think(blocks, index)
    results = kept_results(row, top_k)
    if len(results) < top_k:
        raise InvalidCot(
            f"too few results: search block {index + 1} has {len(results)} available, "
            f"fewer than {top_k}"
        )
    _record(found, row, results)
    return Block("search", row.query, row.target), Block("result", results_text(results))


def _check_all_found(rows: Iterable[SearchRow], found: dict[str, int], top_k: int) -> None:
    for row in rows:
        if row.target is not None and row.target not in found:
            rank = f"rank {row.rank}" if row.rank is not None else "not available or embedded"
            raise InvalidCot(
                f"target not found: {row.target} is in no search's top {top_k} (kept query: {rank})"
            )


@dataclass(frozen=True)
class Verdict:
    cot_id: int
    valid: bool
    reason: str | None


def judge(cot: CotData, top_k: int) -> Verdict:
    """Whether the CoT is kept, and why not."""
    try:
        filtered_blocks(cot, top_k)
    except InvalidCot as why:
        return Verdict(cot.cot_id, False, str(why))
    return Verdict(cot.cot_id, True, None)


def reason_kind(reason: str) -> str:
    """The kind of an invalid reason (its words before the colon), for summaries."""
    return reason.partition(":")[0]


# --- Loading CoTs -----------------------------------------------------------------------------


def load_cots(session: Session, where: sa.ColumnElement[bool]) -> list[CotData]:
    """The CoTs that match `where`, by id, with their steps and search blocks (a few
    statements for any number of CoTs)."""
    rows = session.execute(
        sa.select(
            Cot.id,
            Cot.theorem_id,
            Cot.writer,
            Cot.blocks,
            Theorem.fqn,
            Theorem.parent_id,
            Theorem.evaluation,
        )
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .where(where)
        .order_by(Cot.id)
    ).all()
    steps = _steps(session, [row.theorem_id for row in rows])
    searches = _searches(session, [row.id for row in rows])
    return [
        CotData(
            cot_id=row.id,
            name=row.fqn,
            top_level=row.parent_id is None,
            writer=row.writer,
            initial_goal=(row.evaluation or {}).get("initial_goal") or "",
            blocks=tuple(Block.from_json(block) for block in row.blocks or ()),
            steps=steps.get(row.theorem_id, ()),
            searches=searches.get(row.id, ()),
        )
        for row in rows
    ]


def _steps(session: Session, theorem_ids: list[int]) -> dict[int, tuple[Step, ...]]:
    found: dict[int, list[Step]] = collections.defaultdict(list)
    rows = session.execute(
        sa.select(ProofStep.theorem_id, ProofStep.index, ProofStep.chain, ProofStep.goals)
        .where(ProofStep.theorem_id.in_(theorem_ids))
        .order_by(ProofStep.theorem_id, ProofStep.index)
    )
    for theorem_id, index, chain, goals in rows:
        found[theorem_id].append(Step(index, chain, goals, "", ()))
    return {theorem_id: tuple(steps) for theorem_id, steps in found.items()}


def _searches(session: Session, cot_ids: list[int]) -> dict[int, tuple[SearchRow, ...]]:
    rows = session.execute(
        sa.select(SearchBlock).where(SearchBlock.cot_id.in_(cot_ids)).order_by(SearchBlock.id)
    ).scalars()
    blocks = list(rows)
    targets = {b.target_fqn for b in blocks if b.target_fqn}
    forced = set(
        session.execute(
            sa.select(LibraryObject.fqn).where(
                LibraryObject.force_result, LibraryObject.fqn.in_(targets)
            )
        ).scalars()
    )
    found: dict[int, list[SearchRow]] = collections.defaultdict(list)
    for b in sorted(blocks, key=lambda b: (b.cot_id, b.block_index)):
        done = b.stage == Stage.best_query and b.status == Status.done
        settled = None if done else f"search block {b.block_index + 1} at {b.stage} {b.status}"
        found[b.cot_id].append(
            SearchRow(
                b.block_index,
                b.query,
                b.target_fqn,
                b.target_rank,
                tuple(b.results or ()),
                b.target_fqn in forced,
                settled,
            )
        )
    return {cot_id: tuple(rows) for cot_id, rows in found.items()}


def job_params(session: Session) -> FilterParams:
    """The parameters of the last filtering (step 10 and the exports use its k)."""
    params = session.execute(sa.select(Job.params).where(Job.name == JOB_NAME)).scalar()
    if params is None:
        raise RocqcotError("no CoT was filtered yet: run step 9 first")
    return FilterParams(**params)
