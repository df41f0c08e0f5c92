"""What a theorem may use: the availability filter every search applies.

A search sees only what is available when the theorem is proved: objects of the files its
file requires, directly or not (Rocq's files among them, see step 0), and objects of its own
file defined before the theorem starts (never one defined after it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.models import SourceFile, Theorem
from app.dictionary import library_order


@dataclass(frozen=True)
class Availability:
    """The objects a proof of one theorem may use."""

    file_id: int
    before: int
    """Objects of the theorem's own file whose `library_order` is below this: defined before
    the theorem's statement starts."""
    required_files: tuple[int, ...]
    """Files that the theorem's file requires, directly or not."""

    def params(self) -> dict[str, Any]:
        return {
            "file_id": self.file_id,
            "before": self.before,
            "required_files": list(self.required_files),
        }


def availability(session: Session, theorem_id: int) -> Availability:
    """What theorem `theorem_id` may use; a have sub-theorem may use what its theorem may."""
    root = theorem_id
    while (parent := session.get(Theorem, root).parent_id) is not None:
        root = parent
    file_id, byte_start, order, requires, library_id = session.execute(
        sa.select(
            Theorem.file_id,
            Theorem.byte_start,
            SourceFile.dependency_order,
            SourceFile.requires,
            SourceFile.library_id,
        )
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .where(Theorem.id == root)
    ).one()
    # Rocq's files are the same whichever library built them, and the dictionary keeps one
    # row per object: another library's copy of a Rocq file the theorem requires counts too.
    required = session.execute(
        sa.select(SourceFile.id)
        .where(
            sa.or_(SourceFile.library_id == library_id, SourceFile.from_rocq),
            SourceFile.logical_path.in_(requires or []),
        )
        .order_by(SourceFile.id)
    ).scalars()
    # Same encoding as the dictionary's; an unknown position makes nothing of the file usable.
    before = library_order(order, byte_start or 0)
    return Availability(file_id, before, tuple(required))
