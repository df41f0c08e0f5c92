"""The library dictionary (`library_objects`): every object the globs define, with docstrings.

Built from the library itself: one row per glob definition except local binders, section
variables and sections (`LOCAL_KINDS`: names that mean nothing outside their proof or
section), keyed by (fully qualified name, glob kind). Each row has its source sentence
(`fullname`), its 0-based line in the built text, its module/section path (`historic`, dotted,
outermost first) and its place in the library (`library_order`: file dependency order, then
byte offset), so later steps can tell what was defined before a theorem.

Docstrings come from, in order of trust: a dictionary file in the LLM4Docq format (source
`dictionary`), the header documentation of the object's file (`header`: `size s == …` entries
whose first identifier is the object's short name), then the LLM (step 6). A rebuild never
replaces a more trusted docstring with a less trusted one, and changes nothing when nothing
changed. `export_dictionary` writes the LLM4Docq format back (`rocqcot export --step 4 --out
DIR/NAME.json` writes it beside the seed file, as `DIR/NAME_dictionary.json`), so a dictionary
file round-trips.

The LLM4Docq format is `app.llm4docq`'s; how step 4 reads a built file's names is
`app.file_names`'s. Types Rocq printed are cached here (`library_objects.type`).
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import LibraryObject, SourceFile
from app.file_names import LOCAL_KINDS, scope_stacks, sentence_index

log = logging.getLogger(__name__)

DICTIONARY, HEADER = "dictionary", "header"
ORDER_STRIDE = 1 << 32
"""`library_order` is `dependency_order * ORDER_STRIDE + byte offset`."""


def library_order(dependency_order: int | None, byte: int) -> int:
    """A place's `library_order` (a file without a dependency order counts as the first)."""
    return (dependency_order or 0) * ORDER_STRIDE + byte


_CHUNK = 2000


# --- Building from the globs -----------------------------------------------------------------


@dataclass(frozen=True)
class DictionaryObject:
    """One object of the library as the glob and the sentences describe it."""

    file_id: int
    fqn: str
    kind: str
    name: str
    """The short name; a notation's notation string (`_ + _`)."""
    fullname: str
    scope: str | None
    line: int | None
    historic: str
    library_order: int


def file_objects(
    file_id: int, order: int, sentences: list[dict[str, Any]], definitions: list[dict[str, Any]]
) -> list[DictionaryObject]:
    """The dictionary objects one file defines, in file order."""
    starts = [s["byte_start"] for s in sentences]
    stacks = scope_stacks(sentences, definitions)
    objects = []
    for definition in definitions:
        if definition["kind"] in LOCAL_KINDS:
            continue
        index = sentence_index(sentences, starts, definition["byte_start"])
        notation = definition.get("notation")
        objects.append(
            DictionaryObject(
                file_id=file_id,
                fqn=definition["fqn"],
                kind=definition["kind"],
                name=notation["notation"] if notation else definition["name"],
                fullname=sentences[index]["text"] if sentences else "",
                scope=(notation["scope"] or None) if notation else None,
                line=(definition.get("start") or {}).get("line"),
                historic=".".join(scope.name for scope in stacks[index]) if stacks else "",
                library_order=library_order(order, definition["byte_start"]),
            )
        )
    return objects


def header_docstrings(
    objects: Sequence[DictionaryObject], docs: Sequence[dict[str, Any]]
) -> dict[tuple[str, str], str]:
    """Header documentation entries matched to the objects whose short name is their head,
    in the same file; several entries for one name are joined, one a line."""
    by_head: dict[str, list[str]] = defaultdict(list)
    for doc in sorted(docs, key=lambda d: d["line"]):
        if doc.get("head"):
            by_head[doc["head"]].append(f"{doc['term']} {doc['relation']} {doc['description']}")
    return {
        (o.fqn, o.kind): "\n".join(by_head[o.name])
        for o in objects
        if o.kind != "not" and o.name in by_head
    }


@dataclass(frozen=True)
class BuildSummary:
    objects: int
    written: int
    removed: int
    header_docstrings: int


def build_dictionary(session: Session) -> BuildSummary:
    """Upsert one row per object of every built file; rows of objects gone are deleted.

    Only rows that changed are written (a row's cached type is dropped when its sentence
    changed), in (fqn, kind) order as every writer of the table, so a rebuild of an unchanged
    library locks and writes nothing, and a rebuild beside running workers cannot deadlock.
    """
    objects, headers, file_ids = _library_objects(session)
    existing = _existing_rows(session)
    rows = []
    for obj in sorted(objects, key=lambda o: (o.fqn, o.kind)):
        old = existing.get((obj.fqn, obj.kind))
        row = _row(obj, headers.get((obj.fqn, obj.kind)), old and old[-2:])
        if old is None or tuple(row[c] for c in _UPDATED) != old:
            rows.append(row)
    written = sum(_upsert(session, rows[i : i + _CHUNK]) for i in range(0, len(rows), _CHUNK))
    keep = {(o.fqn, o.kind) for o in objects}
    stale = sorted(key for key in existing if key not in keep)
    removed = _delete(session, stale, file_ids)
    return BuildSummary(len(objects), written, removed, len(headers))


def _library_objects(
    session: Session,
) -> tuple[list[DictionaryObject], dict[tuple[str, str], str], list[int]]:
    """Every object of every file with a glob, first definition of each (fqn, kind) kept."""
    query = sa.select(
        SourceFile.id,
        SourceFile.dependency_order,
        SourceFile.sentences,
        SourceFile.glob["definitions"],
        SourceFile.header_docs,
    ).where(SourceFile.glob["definitions"].is_not(None))
    objects: dict[tuple[str, str], DictionaryObject] = {}
    headers: dict[tuple[str, str], str] = {}
    file_ids = []
    for file_id, order, sentences, definitions, docs in session.execute(query):
        file_ids.append(file_id)
        found = file_objects(file_id, order or 0, sentences or [], definitions or [])
        for obj in found:
            objects.setdefault((obj.fqn, obj.kind), obj)
        headers.update(header_docstrings(found, docs or []))
    return list(objects.values()), headers, file_ids


def _existing_rows(session: Session) -> dict[tuple[str, str], tuple[Any, ...]]:
    """The stored values of the columns a build writes (docstring and its source last)."""
    columns = [getattr(LibraryObject, c) for c in _UPDATED]
    rows = session.execute(sa.select(LibraryObject.fqn, LibraryObject.kind, *columns))
    return {(row[0], row[1]): tuple(row[2:]) for row in rows}


def merged_docstring(
    existing: tuple[str | None, str | None] | None, header: str | None
) -> tuple[str | None, str | None]:
    """The docstring and its source after a rebuild: a dictionary file's stays; else the
    header documentation's replaces what a model wrote; a vanished header entry is dropped."""
    docstring, source = existing or (None, None)
    if source == DICTIONARY:
        return docstring, source
    if header:
        return header, HEADER
    if source == HEADER:
        return None, None
    return docstring, source


def _row(
    obj: DictionaryObject, header: str | None, existing: tuple[str | None, str | None] | None
) -> dict[str, Any]:
    docstring, source = merged_docstring(existing, header)
    return {
        "file_id": obj.file_id,
        "fqn": obj.fqn,
        "kind": obj.kind,
        "name": obj.name,
        "fullname": obj.fullname,
        "scope": obj.scope,
        "line": obj.line,
        "historic": obj.historic,
        "library_order": obj.library_order,
        "docstring": docstring,
        "docstring_source": source,
        "stage": Stage.evaluate,
        "status": Status.done,
    }


_UPDATED = (
    "file_id",
    "name",
    "fullname",
    "scope",
    "line",
    "historic",
    "library_order",
    "docstring",
    "docstring_source",
)


def _upsert(session: Session, rows: list[dict[str, Any]]) -> int:
    """Insert new rows, update changed ones; returns how many were written."""
    if not rows:
        return 0
    return len(session.execute(_upsert_statement(), rows).all())


@functools.cache
def _upsert_statement() -> sa.Insert:
    """The upsert, built once and run with many rows (a statement built with the rows' values
    compiles thousands of parameters on every call: most of a first build's time)."""
    statement = insert(LibraryObject)
    table = LibraryObject.__table__.c
    changed = sa.or_(*(table[c].is_distinct_from(statement.excluded[c]) for c in _UPDATED))
    same_sentence = table.fullname.is_not_distinct_from(statement.excluded.fullname)
    return statement.on_conflict_do_update(
        index_elements=["fqn", "kind"],
        set_={c: statement.excluded[c] for c in _UPDATED}
        | {"type": sa.case((same_sentence, table.type), else_=None)}
        | {"type_order": sa.case((same_sentence, table.type_order), else_=None)},
        where=changed,
    ).returning(LibraryObject.id)


def _delete(session: Session, keys: list[tuple[str, str]], file_ids: list[int]) -> int:
    """Delete rows of objects the built files no longer define."""
    removed = 0
    for fqn, kind in keys:
        result = session.execute(
            sa.delete(LibraryObject).where(
                LibraryObject.fqn == fqn,
                LibraryObject.kind == kind,
                LibraryObject.file_id.in_(file_ids),
            )
        )
        removed += result.rowcount
    return removed


def cache_types(session: Session, types: dict[str, str], order: int) -> None:
    """Remember the types Rocq printed for library objects at the start of the theorem at
    `library_order` `order`, where none was printed at an earlier theorem: the types step 6
    shows are then the same whichever order the workers took the theorems in."""
    if types:
        rows = [{"object": fqn, "printed": type_} for fqn, type_ in sorted(types.items())]
        session.execute(_CACHE_TYPE, [row | {"order": order} for row in rows])


_CACHE_TYPE = (
    sa.update(LibraryObject.__table__)
    .where(
        LibraryObject.fqn == sa.bindparam("object"),
        sa.or_(
            LibraryObject.type.is_(None),
            LibraryObject.type_order.is_(None),
            LibraryObject.type_order > sa.bindparam("order"),
        ),
    )
    .values(type=sa.bindparam("printed"), type_order=sa.bindparam("order"))
)
