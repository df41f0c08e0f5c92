"""The order in which the Rocq stages (steps 2 and 4) claim theorems: by file, largest first.

A worker's Rocq session walks a file, so a worker takes consecutive theorems of one file and
keeps to it. The largest files (by their build time) go first, so the last files left are
small ones and both cores stay busy to the end. A worker prefers a file no other worker is
walking; when only such files remain it shares one, taking the theorems after the other
worker's: its session goes past the other's proofs as `Admitted.` (`skip_proofs`), so two
sessions split a file's work instead of one of them idling.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import aliased

from app.db.enums import Stage, Status
from app.db.models import SourceFile, Theorem


def largest_files_first(stage: Stage) -> list[Any]:
    """Claim order for a stage over theorems (the claim binds `worker_name`)."""
    other = aliased(Theorem)
    walked_by_another = (
        sa.select(other.id)
        .where(
            other.file_id == Theorem.file_id,
            other.stage == stage,
            other.status == Status.running,
            other.worker != sa.bindparam("worker_name"),
            other.lease_until > sa.func.now(),
        )
        .exists()
    )
    seconds = sa.select(SourceFile.build_seconds).where(SourceFile.id == Theorem.file_id)
    return [
        walked_by_another,
        seconds.scalar_subquery().desc().nulls_last(),
        Theorem.file_id,
        Theorem.byte_start,
    ]
