"""The dataset card written next to every export: what is in it and what made it.

A Markdown file whose YAML front matter holds the facts (counts, writers, models, library,
versions) for programs, and whose body says them for people. Nothing in it changes from one
run to the next on the same database (no date), so a rerun exports the same bytes.
"""

from __future__ import annotations

import importlib.metadata
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy.orm import Session

from app.exports import records
from app.exports.turns import system_prompt
from app.plural import plural
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
    left_out: dict[str, int] | None = None
    """Examples left out by the identifier check, by the name they use (steps 9 and 10)."""


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
        "toolchain": records.toolchain(session),
        "versions": {
            "rocqcot": importlib.metadata.version("rocqcot"),
            "python": platform.python_version(),
        },
    }
    if info.writers is not None:
        data["export"] |= {"theorems": info.theorems, "writers": info.writers,
                           "left_out": info.left_out or {}}  # fmt: skip
        data["cots"] = records.cot_counts(session)
        data["docstrings_written"] = records.docstring_counts(session)
    return data


def _libraries(session: Session) -> list[dict[str, Any]]:
    return [
        {
            "name": library.name,
            "logical_prefix": library.logical_prefix,
            "source": library.input_path,
            "ssreflect": library.ssreflect,
            "rocq": library.rocq_version,
            "version": library.version,
            "extractor": library.extractor_version,
            "embedding_model": (library.settings.get("best_query") or {}).get("model"),
            "top_k": (library.settings.get("best_query") or {}).get("top_k"),
            "system_prompt": system_prompt(library),
        }
        for library in records.libraries(session)
    ]


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
        f"`{info.path.name}` holds {plural(info.entries, 'entry', 'entries')}.",
    ]
    if info.writers is not None:
        writers = ", ".join(f"{count} by {writer}" for writer, count in info.writers.items())
        lines += [
            f"They are training examples from {plural(info.theorems or 0, 'theorem')} "
            f"({writers or 'none'}).",
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
    if info.left_out:
        lines.append(
            f"{plural(sum(info.left_out.values()), 'example')} left out: a script uses a name "
            "that neither the prompt, nor an earlier block, nor the library introduces "
            "(`export.left_out`)."
        )
    for library in data["libraries"]:
        version = f" {library['version']}" if library["version"] else ""
        style = "in SSReflect style" if library["ssreflect"] else "without SSReflect"
        lines += [
            "",
            f"## Library {library['name']}{version}",
            "",
            f"Logical path {library['logical_prefix']}, {style}, built with Rocq "
            f"{library['rocq'] or '(unknown version)'}; embeddings {library['embedding_model']}. "
            "The system prompt of its examples:",
            "",
            *(f"> {line}" for line in library["system_prompt"].splitlines()),
        ]
    path = card_path(info.path)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
