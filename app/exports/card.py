"""The dataset card written next to every export: what is in it and what made it.

A Markdown file whose YAML front matter holds the facts (counts, writers, models, library,
versions) for programs, and whose body says them for people. Nothing in it changes from one
run to the next on the same database (no date), so a rerun exports the same bytes.
"""

from __future__ import annotations

import collections
import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import yaml
from sqlalchemy.orm import Session

from app.db.models import Cot, Library, LibraryObject, Theorem
from app.db.toolchain import recorded
from app.rocq.toolchain import summary


@dataclass(frozen=True)
class ExportInfo:
    """What an export wrote."""

    step: int
    format: str
    path: Path
    entries: int
    writers: dict[str, int] | None = None
    """Examples per CoT writer (steps 9 and 10)."""
    theorems: int | None = None
    """Theorems (and have sub-theorems) with examples (steps 9 and 10)."""


def card_path(out: Path) -> Path:
    """The card of an export: `<name>_card.md` beside it."""
    return out.with_name(f"{out.stem}_card.md")


def facts(session: Session, info: ExportInfo) -> dict[str, Any]:
    """Everything the card says, as plain data."""
    data: dict[str, Any] = {
        "export": {
            "step": info.step,
            "format": info.format,
            "file": info.path.name,
            "entries": info.entries,
        },
        "libraries": _libraries(session),
        "toolchain": recorded(session),
        "versions": {
            "rocqcot": importlib.metadata.version("rocqcot"),
            "python": platform.python_version(),
        },
    }
    if info.writers is not None:
        data["export"] |= {"theorems": info.theorems, "writers": info.writers}
        data["cots"] = _cots(session)
        data["docstrings_written"] = _docstrings(session)
    return data


def _libraries(session: Session) -> list[dict[str, Any]]:
    rows = session.execute(sa.select(Library).order_by(Library.name)).scalars()
    return [
        {
            "name": library.name,
            "logical_prefix": library.logical_prefix,
            "source": library.input_path,
            "rocq": library.rocq_version,
            "extractor": library.extractor_version,
            "embedding_model": (library.settings.get("best_query") or {}).get("model"),
            "top_k": (library.settings.get("best_query") or {}).get("top_k"),
        }
        for library in rows
    ]


def _cots(session: Session) -> dict[str, Any]:
    """CoTs written, kept and not, by writer."""
    rows = session.execute(
        sa.select(Cot.writer, Cot.valid, sa.func.count()).group_by(Cot.writer, Cot.valid)
    )
    by_writer: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for writer, valid, count in rows:
        state = {True: "kept", False: "invalid", None: "not judged"}[valid]
        by_writer[writer][state] = count
    theorems = session.execute(sa.select(sa.func.count()).select_from(Theorem)).scalar_one()
    return {"theorems_in_database": theorems, "by_writer": dict(sorted(by_writer.items()))}


def _docstrings(session: Session) -> dict[str, int]:
    """Docstrings step 6 wrote, by source (`llm` or `offline`)."""
    rows = session.execute(
        sa.select(LibraryObject.docstring_source, sa.func.count())
        .where(LibraryObject.force_result)
        .group_by(LibraryObject.docstring_source)
    )
    return {source or "unknown": count for source, count in rows}


def write_card(session: Session, info: ExportInfo) -> Path:
    """Write the card beside the export; returns its path."""
    data = facts(session, info)
    lines = [
        "---",
        yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip(),
        "---",
        "",
        f"# rocqcot export: step {info.step}, {info.format}",
        "",
        f"`{info.path.name}` holds {info.entries} entries.",
    ]
    if info.writers is not None:
        writers = ", ".join(f"{count} by {writer}" for writer, count in info.writers.items())
        lines += [
            f"They are training examples from {info.theorems} theorems ({writers or 'none'}).",
            "Every goal and result in them comes from Rocq or the retrieval engine; "
            "`rocqcot verify` replays their scripts in Rocq.",
        ]
    if info.format == "chat":
        lines.append(
            "Each line is `{messages: [system, user, assistant]}`; `ignore_spans` are the "
            "`[start, end)` character ranges of the assistant turn to mask from the loss "
            "(results, and blocks an earlier example trained on)."
        )
    if data["toolchain"]:
        lines.append(f"Made with {summary(data['toolchain'])}.")
    for library in data["libraries"]:
        lines.append(
            f"Library {library['name']} ({library['logical_prefix']}), Rocq "
            f"{library['rocq']}, embeddings {library['embedding_model']}."
        )
    path = card_path(info.path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
