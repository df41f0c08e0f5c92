"""`rocqcot export --step N --out FILE`: a stage's rows in the file format of the original
scripts, so downstream training code keeps working."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.models import Library, SourceFile, Theorem
from app.errors import RocqcotError


def seed_theorems(session: Session, selected: bool = False) -> dict[str, dict[str, Any]]:
    """Step 1's seed format: `{qualid: {filepath_prefix, filepath, position, statement, proof}}`;
    with `selected`, step 3's: the selected theorems only, with their tagged proofs."""
    query = (
        sa.select(Theorem, SourceFile.path, Library.output_path)
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(Theorem.parent_id.is_(None))
        .order_by(SourceFile.dependency_order, Theorem.byte_start)
    )
    rows = session.execute(query.where(Theorem.selected) if selected else query)
    return {
        theorem.fqn: {
            "filepath_prefix": output_path.rstrip("/") + "/",
            "filepath": path,
            "position": {"line": theorem.line, "character": theorem.character},
            "statement": theorem.statement,
            "proof": (selected and theorem.tagged_proof) or theorem.proof,
        }
        for theorem, path, output_path in rows
    }


EXPORTERS: dict[int, Callable[[Session], Any]] = {
    1: seed_theorems,
    3: lambda session: seed_theorems(session, selected=True),
}


def export(session: Session, step: int, out: Path) -> int:
    """Write step `step`'s export to `out`; returns the number of entries."""
    exporter = EXPORTERS.get(step)
    if exporter is None:
        built = ", ".join(str(n) for n in sorted(EXPORTERS))
        raise RocqcotError(f"no export for step {step} yet (exports exist for steps {built})")
    data = exporter(session)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return len(data)
