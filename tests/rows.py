"""Minimal rows for tests that need theorems without building a library."""

from __future__ import annotations

from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Library, SourceFile


def add_file(session: Session, name: str = "lib") -> int:
    """A built library `name` with one extracted file `name.a`; returns the file's id."""
    library = Library(
        name=name,
        input_path="/in",
        output_path="/out",
        logical_prefix=name,
        stage=Stage.build,
        status=Status.done,
    )
    session.add(library)
    session.flush()
    source = SourceFile(
        library_id=library.id,
        path="a.v",
        logical_path=f"{name}.a",
        content_hash="h",
        cleaned_text="",
        stage=Stage.extract,
        status=Status.done,
    )
    session.add(source)
    session.flush()
    return source.id
