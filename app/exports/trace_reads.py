"""The reads the trace export makes (`rocqcot trace`), as plain data, in library order (the
proof steps are read by `records.proof_steps`, as for the dataset).

A sibling of `records` (the dataset exports' reads): the trace reads every theorem of a library
whatever its stage, file by file so that a whole library's proof steps never sit in memory at
once; each read is ordered so that the same database always exports the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Status
from app.db.models import Library, LibraryObject, SourceFile, Theorem
from app.rocq.build import BuildStatus

BUILT = (BuildStatus.BUILT.value, BuildStatus.SKIPPED.value)
"""Build statuses of a file whose compiled form is there (built now, or unchanged)."""


@dataclass(frozen=True)
class TracedFile:
    """A file of the library (never one of Rocq's own that step 0 built beside it)."""

    id: int
    path: str
    """Relative to the library's copy, as in the library's source."""
    logical_path: str
    build_status: str | None
    build_error: str | None


@dataclass(frozen=True)
class TracedTheorem:
    """A theorem or have sub-theorem row, whatever stage it reached."""

    id: int
    fqn: str
    parent_id: int | None
    have_index: int | None
    kind: str
    statement: str
    proof: str
    tagged_proof: str | None
    line: int | None
    character: int | None
    byte_start: int | None
    byte_end: int | None
    stage: str
    status: str
    error: str | None
    evaluation: dict[str, Any] | None
    """Step 4's evaluation; None (or JSON null) where it did not evaluate."""


def library_id(session: Session, name: str) -> int | None:
    """The library's id, None when no library has this name."""
    return session.execute(sa.select(Library.id).where(Library.name == name)).scalar()


def library_names(session: Session) -> list[str]:
    """Every library with at least one theorem, by name."""
    has_theorem = (
        sa.select(Theorem.id)
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .where(SourceFile.library_id == Library.id)
        .exists()
    )
    return list(session.scalars(sa.select(Library.name).where(has_theorem).order_by(Library.name)))


def files(session: Session, library: int) -> list[TracedFile]:
    """The library's own files in dependency order (then path, for files never ordered)."""
    rows = session.execute(
        sa.select(
            SourceFile.id,
            SourceFile.path,
            SourceFile.logical_path,
            SourceFile.build_status,
            SourceFile.build_error,
        )
        .where(SourceFile.library_id == library, ~SourceFile.from_rocq)
        .order_by(SourceFile.dependency_order.nulls_last(), SourceFile.path)
    )
    return [TracedFile(*row) for row in rows]


def theorems(session: Session, file_id: int) -> list[TracedTheorem]:
    """Every theorem and have sub-theorem of a file, by offset, then have index, then id."""
    rows = session.execute(
        sa.select(
            Theorem.id,
            Theorem.fqn,
            Theorem.parent_id,
            Theorem.have_index,
            Theorem.kind,
            Theorem.statement,
            Theorem.proof,
            Theorem.tagged_proof,
            Theorem.line,
            Theorem.character,
            Theorem.byte_start,
            Theorem.byte_end,
            Theorem.stage,
            Theorem.status,
            Theorem.error,
            Theorem.evaluation,
        )
        .where(Theorem.file_id == file_id)
        .order_by(Theorem.byte_start, Theorem.have_index.nulls_first(), Theorem.id)
    )
    return [
        TracedTheorem(*row[:12], str(row.stage.value), str(row.status.value), *row[14:])
        for row in rows
    ]


def definitions(session: Session) -> dict[str, dict[str, Any]]:
    """Where each dictionary object is defined: `{fqn: {logical_path, line}}` (0-based line in
    the built text; a name with several kinds: the first in library order)."""
    rows = session.execute(
        sa.select(LibraryObject.fqn, SourceFile.logical_path, LibraryObject.line)
        .join(SourceFile, SourceFile.id == LibraryObject.file_id)
        .order_by(LibraryObject.library_order, LibraryObject.id)
    )
    found: dict[str, dict[str, Any]] = {}
    for fqn, logical_path, line in rows:
        found.setdefault(fqn, {"logical_path": logical_path, "line": line})
    return found


def file_failures(session: Session, library: int) -> list[tuple[str, str, str | None]]:
    """The library's files that did not build, or whose theorems step 1 could not extract:
    (path, what happened, Rocq's or the step's message)."""
    rows = session.execute(
        sa.select(
            SourceFile.path,
            SourceFile.build_status,
            SourceFile.build_error,
            SourceFile.status,
            SourceFile.error,
        )
        .where(
            SourceFile.library_id == library,
            ~SourceFile.from_rocq,
            sa.or_(
                SourceFile.build_status.not_in(BUILT) | SourceFile.build_status.is_(None),
                SourceFile.status == Status.failed,
            ),
        )
        .order_by(SourceFile.dependency_order.nulls_last(), SourceFile.path)
    )
    failures = []
    for path, built, build_error, status, error in rows:
        if built not in BUILT:
            failures.append((path, f"build {built or 'not done'}", build_error))
        else:
            failures.append((path, f"extract {status.value}", error))
    return failures
