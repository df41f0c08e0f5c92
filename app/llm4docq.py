"""The LLM4Docq dictionary format: docstrings read from a file, and the dictionary written back.

A dictionary file (`objects`: `{keys, value}` entries; `notations` by scope) sets docstrings with
the source `dictionary`, the most trusted (`app.dictionary`); `export_dictionary` writes the
library's dictionary back in that format, so a dictionary file round-trips.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Stage
from app.db.models import LibraryObject
from app.dictionary import DICTIONARY
from app.errors import RocqcotError

log = logging.getLogger(__name__)

VALUE_KEYS = frozenset({"kind", "name", "docstring", "fullname", "line", "historic"})


class DictionaryFileError(RocqcotError):
    """A dictionary file that is not valid JSON or not in the LLM4Docq format."""


@dataclass(frozen=True)
class DocEntry:
    """One docstring of a dictionary file, for the objects named by `keys`."""

    keys: tuple[str, ...]
    docstring: str | None
    where: str
    """The entry's place in the file, for messages (`objects[3]`, `notations.noscope[…]`)."""


def read_llm4docq(path: Path) -> list[DocEntry]:
    """The entries of an LLM4Docq dictionary file: an `objects` list of `{keys, value}` and
    `notations` as `{scope: {scope_name: {fqn: value}}, noscope: {fqn: value}}`.

    Raises `DictionaryFileError` naming the file and the entry at fault.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise DictionaryFileError(f"{path}: cannot read the dictionary: {error}") from None
    except json.JSONDecodeError as error:
        raise DictionaryFileError(f"{path}: not JSON: {error}") from None
    _expect_keys(path, "the top level", data, {"objects", "notations"})
    entries = [_object_entry(path, i, entry) for i, entry in enumerate(data.get("objects", []))]
    notations = data.get("notations", {})
    _expect_keys(path, "notations", notations, {"scope", "noscope"})
    for scope, table in _dict(path, "notations.scope", notations.get("scope", {})).items():
        entries += _notation_entries(path, f"notations.scope[{scope!r}]", table)
    entries += _notation_entries(path, "notations.noscope", notations.get("noscope", {}))
    return entries


def _dict(path: Path, where: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DictionaryFileError(
            f"{path}: {where}: expected an object, got {type(value).__name__}"
        )
    return value


def _expect_keys(path: Path, where: str, value: Any, allowed: Iterable[str]) -> None:
    unknown = sorted(set(_dict(path, where, value)) - set(allowed))
    if unknown:
        expected = ", ".join(sorted(allowed))
        raise DictionaryFileError(f"{path}: {where}: unknown keys {unknown} (expected {expected})")


def _object_entry(path: Path, index: int, entry: Any) -> DocEntry:
    where = f"objects[{index}]"
    _expect_keys(path, where, entry, {"keys", "value"})
    keys = entry.get("keys")
    if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
        raise DictionaryFileError(f"{path}: {where}: `keys` must be a non-empty list of names")
    return DocEntry(tuple(keys), _docstring(path, where, entry.get("value")), where)


def _notation_entries(path: Path, where: str, table: Any) -> list[DocEntry]:
    return [
        DocEntry((fqn,), _docstring(path, f"{where}[{fqn!r}]", value), f"{where}[{fqn!r}]")
        for fqn, value in _dict(path, where, table).items()
    ]


def _docstring(path: Path, where: str, value: Any) -> str | None:
    _expect_keys(path, f"{where}.value", value, VALUE_KEYS)
    docstring = value.get("docstring")
    if docstring is not None and not isinstance(docstring, str):
        raise DictionaryFileError(f"{path}: {where}: `docstring` must be a string")
    return docstring or None


@dataclass(frozen=True)
class ImportSummary:
    entries: int
    matched: int
    unmatched: tuple[str, ...]
    """Names of the file that no object of the library has."""


def import_dictionary(session: Session, path: Path) -> ImportSummary:
    """Set the docstrings a dictionary file gives (source `dictionary`), overriding any other;
    entries for objects the library does not have are counted and logged, not errors."""
    entries = read_llm4docq(path)
    matched, unmatched = 0, []
    for entry in sorted(entries, key=lambda e: e.keys):  # rows locked in name order
        if entry.docstring is None:
            continue
        result = session.execute(
            sa.update(LibraryObject)
            .where(
                LibraryObject.fqn.in_(entry.keys),
                sa.or_(
                    LibraryObject.docstring.is_distinct_from(entry.docstring),
                    LibraryObject.docstring_source.is_distinct_from(DICTIONARY),
                ),
            )
            .values(docstring=entry.docstring, docstring_source=DICTIONARY)
        )
        found = result.rowcount or _known(session, entry.keys)
        matched += bool(found)
        if not found:
            unmatched.append(entry.keys[0])
    if unmatched:
        log.warning(
            "%s: %d entries name no object of the library (e.g. %s)",
            path,
            len(unmatched),
            ", ".join(unmatched[:5]),
            extra={"stage": Stage.evaluate.value},
        )
    return ImportSummary(len(entries), matched, tuple(unmatched))


def _known(session: Session, fqns: Sequence[str]) -> bool:
    found = session.execute(sa.select(LibraryObject.id).where(LibraryObject.fqn.in_(fqns)))
    return found.first() is not None


def export_dictionary(session: Session) -> dict[str, Any]:
    """The dictionary in the LLM4Docq format, objects in library order."""
    objects: list[dict[str, Any]] = []
    scoped: dict[str, dict[str, Any]] = defaultdict(dict)
    noscope: dict[str, Any] = {}
    rows = session.execute(sa.select(LibraryObject).order_by(LibraryObject.library_order))
    for obj in rows.scalars():
        value = {
            "kind": obj.kind,
            "name": obj.name,
            "docstring": obj.docstring,
            "fullname": obj.fullname,
            "line": obj.line,
            "historic": obj.historic,
        }
        if obj.kind != "not":
            objects.append({"keys": [obj.fqn], "value": value})
        elif obj.scope:
            scoped[obj.scope][obj.fqn] = value
        else:
            noscope[obj.fqn] = value
    return {"objects": objects, "notations": {"scope": dict(scoped), "noscope": noscope}}
