"""The toolchain a database belongs to: recorded on first use, compared on every later one."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db.models import ToolchainRecord


def bind(session: Session, description: dict[str, Any]) -> dict[str, Any] | None:
    """Record the toolchain if the database has none. Returns the recorded one when it differs
    from `description` (another Rocq version or other library versions would mix data)."""
    session.execute(
        insert(ToolchainRecord)
        .values(id=1, rocq_version=description["rocq"], description=description)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    known = recorded(session)
    return None if known is None or _compared(known) == _compared(description) else known


def recorded(session: Session) -> dict[str, Any] | None:
    """The toolchain the database was made with, if any Rocq ran on it yet."""
    return session.execute(sa.select(ToolchainRecord.description)).scalar()


def _compared(description: dict[str, Any]) -> tuple[Any, ...]:
    """What must agree: Rocq's version and the versions of the installed Rocq packages."""
    return description["rocq"], description.get("libraries") or {}
