"""Step 10: split each kept CoT of the selection (`app.gate`) into training examples
(`app.split`, as the original `split_compress` did). Stored: `examples` rows (CoT, index,
blocks with `ignore`); the CoT moves to `split`, done.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
import typer
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import gate
from app.db.enums import Stage
from app.db.models import Cot, Example
from app.plural import plural
from app.results import CotData, filtered_blocks, job_params, load_cots
from app.split import Marked, split_compress
from app.stages import StageSpec, register


@dataclass(frozen=True)
class SplitInput:
    cot: CotData
    top_k: int


def load(session: Session, row_id: int) -> SplitInput:
    """The CoT with what its result blocks are made of, and step 9's k."""
    (cot,) = load_cots(session, Cot.id == row_id)
    return SplitInput(cot, job_params(session).top_k)


def run(item: SplitInput) -> list[tuple[Marked, ...]]:
    """The CoT's examples (a CoT no longer valid fails with step 9's reason)."""
    return split_compress(filtered_blocks(item.cot, item.top_k))


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
        gate=gate.cot_selected,
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
            .join(Cot, Cot.id == Example.cot_id)
            .where(gate.cot_selected())
        ).one()
    typer.echo(
        f"step 10: {plural(stats.done, 'CoT')} split now, {stats.failed} failed; "
        f"{plural(examples, 'example')} from {plural(cots, 'CoT')} in all"
    )


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
