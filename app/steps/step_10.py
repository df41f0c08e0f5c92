"""Step 10: split each kept CoT into training examples, as the original `split_compress` did.

A CoT with its result blocks (step 9) is cut before each result: an example is everything the
prover wrote up to an action (search, script or have), and the environment answers it next.
Each example keeps every block the prover wrote before, but only the latest result of each
kind (search, or Rocq's answer to a script or a have), so a long proof does not carry every
earlier answer. Results are always marked `ignore` (they come from Rocq or the retrieval
engine, not from the prover), and so is every block an earlier example already trained on: a
trainer masks them, and each block is learned once, in the example where it is new.

(The original counted a have's result as the kind of the action before it, a search; here it
is Rocq's answer, like a script's.) Stored: `examples` rows (CoT, index, blocks with `ignore`);
the CoT moves to `split`, done.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.cot import Block
from app.db.enums import Stage
from app.db.models import Cot, Example
from app.stages import StageSpec, register
from app.steps import step_9


@dataclass(frozen=True)
class Marked:
    """A block of an example, and whether a trainer masks it."""

    block: Block
    ignore: bool

    def to_json(self) -> dict[str, Any]:
        return self.block.to_json() | {"ignore": self.ignore}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marked:
        return cls(Block.from_json(data), bool(data.get("ignore")))


def result_kind(blocks: Sequence[Block], index: int) -> str:
    """What a result answers: `search`, or `script` for Rocq's answer to a script or a have."""
    for block in reversed(blocks[:index]):
        if block.kind == "search":
            return "search"
        if block.kind in ("script", "have"):
            return "script"
    return "script"


def split_compress(blocks: Sequence[Block]) -> list[tuple[Marked, ...]]:
    """The examples of a CoT with result blocks: one ending before each result (and one with
    the whole CoT when it does not end with a result)."""
    cuts = [i for i, block in enumerate(blocks) if block.kind == "result"]
    if blocks and blocks[-1].kind != "result":
        cuts.append(len(blocks))
    examples, trained = [], 0
    for cut in cuts:
        if not any(block.kind != "result" for block in blocks[:cut]):
            continue
        examples.append(_example(blocks, cut, trained))
        trained = cut
    return examples


def _example(blocks: Sequence[Block], cut: int, trained: int) -> tuple[Marked, ...]:
    """The blocks before `cut`, with the latest result of each kind; blocks before `trained`
    (in an earlier example) and results are ignored."""
    latest: dict[str, int] = {}
    for index in range(cut):
        if blocks[index].kind == "result":
            latest[result_kind(blocks, index)] = index
    kept = set(latest.values())
    return tuple(
        Marked(block, block.kind == "result" or index < trained)
        for index, block in enumerate(blocks[:cut])
        if block.kind != "result" or index in kept
    )


@dataclass(frozen=True)
class SplitInput:
    cot: step_9.CotData
    top_k: int


def load(session: Session, row_id: int) -> SplitInput:
    """The CoT with what its result blocks are made of, and step 9's k."""
    (cot,) = step_9.load_cots(session, Cot.id == row_id)
    return SplitInput(cot, step_9.job_params(session).top_k)


def run(item: SplitInput) -> list[tuple[Marked, ...]]:
    """The CoT's examples (a CoT no longer valid fails with step 9's reason)."""
    return split_compress(step_9.filtered_blocks(item.cot, item.top_k))


def store(session: Session, row_id: int, examples: list[tuple[Marked, ...]]) -> None:
    """Upsert the examples by index; drop those beyond the new count. The CoT was judged
    valid again (`reprocess --from split` drops the verdict)."""
    rows = [
        {"cot_id": row_id, "index": index, "blocks": [marked.to_json() for marked in example]}
        for index, example in enumerate(examples)
    ]
    if rows:
        statement = insert(Example).values(rows)
        session.execute(
            statement.on_conflict_do_update(
                index_elements=["cot_id", "index"],
                set_={"blocks": statement.excluded.blocks},
                where=Example.__table__.c.blocks != statement.excluded.blocks,
            )
        )
    session.execute(sa.delete(Example).where(Example.cot_id == row_id, Example.index >= len(rows)))
    session.execute(
        sa.update(Cot)
        .where(Cot.id == row_id, Cot.valid.is_not(True))
        .values(valid=True, invalid_reason=None)
    )


SPEC = register(
    StageSpec(
        stage=Stage.split,
        model=Cot,
        input_stage=Stage.filter,
        load=load,
        run=run,
        store=store,
        ready_filter=lambda: sa.or_(Cot.valid.is_(True), Cot.stage == Stage.split),
        batch_size=16,
    )
)


def command() -> None:
    """Split the kept CoTs into training examples with at most one result per kind."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    ensure_schema()
    stats = run_workers([SPEC])
    with session_factory()() as session:
        cots, examples = session.execute(
            sa.select(sa.func.count(sa.distinct(Example.cot_id)), sa.func.count())
        ).one()
    typer.echo(
        f"step 10: {stats.done} CoTs split now, {stats.failed} failed; "
        f"{examples} examples from {cots} CoTs in all"
    )


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
