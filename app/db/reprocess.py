"""`rocqcot reprocess FQN --from STAGE`: reset one theorem and everything derived from it.

Deleting derived rows and resetting the stage happen in one transaction, so the theorem is
either untouched or ready to be taken again by the stage's workers.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db import queue
from app.db.enums import Stage, Status
from app.db.models import (
    Annotation,
    Cot,
    Example,
    Have,
    ProofStep,
    SearchBlock,
    SearchQuery,
    Theorem,
)
from app.errors import RocqcotError, UnknownTheorem
from app.gate import is_selected

THEOREM_STAGES = (Stage.haves, Stage.evaluate, Stage.cot)
SEARCH_STAGES = (Stage.search, Stage.repair, Stage.best_query)
COT_STAGES = (Stage.filter, Stage.split)
REPROCESSABLE = THEOREM_STAGES + SEARCH_STAGES + COT_STAGES
NOT_SELECTED = (
    " (not in step 3's selection: steps 5 to 10 leave it alone until a selection takes it in)"
)


def reprocess(session: Session, fqn: str, from_stage: Stage) -> str:
    """Reset theorem `fqn` so that `from_stage` and every later stage run again for it."""
    theorem_id = session.execute(sa.select(Theorem.id).where(Theorem.fqn == fqn)).scalar()
    if theorem_id is None:
        raise UnknownTheorem(f"no theorem named {fqn!r} (run steps 0 and 1 first?)")
    if from_stage not in REPROCESSABLE:
        names = ", ".join(stage.value for stage in REPROCESSABLE)
        raise RocqcotError(
            f"cannot reprocess one theorem from {from_stage.value!r}: it works on files or on "
            f"the whole library; per-theorem stages are {names}"
        )
    outside = "" if is_selected(session, theorem_id) else NOT_SELECTED
    if from_stage in THEOREM_STAGES:
        clear_derived(session, theorem_id, from_stage)
        queue.reset_rows(session, Theorem.__table__, [theorem_id], from_stage)
        return f"{fqn}: reset to {from_stage.value}{outside}"
    cot_id = session.execute(sa.select(Cot.id).where(Cot.theorem_id == theorem_id)).scalar()
    if cot_id is None:
        raise RocqcotError(f"{fqn} has no chain of thought yet: nothing to redo from {from_stage}")
    _clear_cot(session, cot_id, from_stage)
    return f"{fqn}: chain of thought reset to {from_stage.value}{outside}"


def clear_derived(session: Session, theorem_id: int, from_stage: Stage) -> None:
    """Delete what `from_stage` and later stages derived from the theorem."""
    later = THEOREM_STAGES[THEOREM_STAGES.index(from_stage) :]
    if Stage.haves in later:
        session.execute(sa.delete(Have).where(Have.theorem_id == theorem_id))
        session.execute(
            sa.update(Theorem).where(Theorem.id == theorem_id).values(tagged_proof=None)
        )
    if Stage.evaluate in later:
        session.execute(sa.delete(Theorem).where(Theorem.parent_id == theorem_id))
        session.execute(sa.delete(ProofStep).where(ProofStep.theorem_id == theorem_id))
        session.execute(sa.update(Theorem).where(Theorem.id == theorem_id).values(evaluation=None))
    session.execute(sa.delete(Annotation).where(Annotation.theorem_id == theorem_id))
    session.execute(sa.delete(Cot).where(Cot.theorem_id == theorem_id))


def _clear_cot(session: Session, cot_id: int, from_stage: Stage) -> None:
    """Reset a CoT's search blocks or its own stage, dropping its examples and verdict."""
    session.execute(sa.delete(Example).where(Example.cot_id == cot_id))
    session.execute(sa.update(Cot).where(Cot.id == cot_id).values(valid=None, invalid_reason=None))
    if from_stage in SEARCH_STAGES:
        block_ids = list(
            session.execute(sa.select(SearchBlock.id).where(SearchBlock.cot_id == cot_id)).scalars()
        )
        if from_stage in (Stage.search, Stage.repair):
            session.execute(
                sa.delete(SearchQuery).where(
                    SearchQuery.search_block_id.in_(block_ids), SearchQuery.candidate_index > 0
                )
            )
        session.execute(
            sa.update(SearchQuery)
            .where(SearchQuery.search_block_id.in_(block_ids))
            .values(chosen=False)
        )
        queue.reset_rows(session, SearchBlock.__table__, block_ids, from_stage)
        # The CoT waits for its searches again before the filter step takes it.
        session.execute(
            sa.update(Cot).where(Cot.id == cot_id).values(stage=Stage.cot, status=Status.done)
        )
    else:
        queue.reset_rows(session, Cot.__table__, [cot_id], from_stage)
