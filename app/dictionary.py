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

Step 4 also finds here how a file names objects (`FileNames`: its glob references, sections and
section variables, and the name `Locate` gives an object at a point) and what Rocq says of one
(`check`, `locate`; types are cached in `library_objects.type`).
"""

from __future__ import annotations

import bisect
import functools
import json
import logging
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Library, LibraryObject, SourceFile
from app.errors import RocqcotError
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, State

log = logging.getLogger(__name__)

LOCAL_KINDS = frozenset({"binder", "var", "sec"})
DICTIONARY, HEADER = "dictionary", "header"
VALUE_KEYS = frozenset({"kind", "name", "docstring", "fullname", "line", "historic"})
ORDER_STRIDE = 1 << 32
"""`library_order` is `dependency_order * ORDER_STRIDE + byte offset`."""
_CHUNK = 2000
_OPEN = re.compile(r"(Module|Section)\s+(?:(?:Type|Import|Export)\s+)?([A-Za-z_][\w']*)")
_CLOSE = re.compile(r"End\s+([A-Za-z_][\w']*)\s*\.$")
_LET = re.compile(r"(?:#\[[^\]]*\]\s*)?(?:Local\s+)?Let\b")
_CONTEXT = re.compile(r"(?:#\[[^\]]*\]\s*)?Context\b")


class DictionaryFileError(RocqcotError):
    """A dictionary file that is not valid JSON or not in the LLM4Docq format."""


# --- Modules and sections --------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """A module or section of a file, from its opening sentence to its `End` (bytes)."""

    kind: str
    """`Module` or `Section` (module types count as modules)."""
    name: str
    start: int
    end: int

    def opened_at(self, byte: int) -> bool:
        """Whether the scope is open at a byte offset."""
        return self.start <= byte < self.end


def scope_stacks(sentences: Sequence[dict[str, Any]]) -> list[tuple[Scope, ...]]:
    """For each sentence, the modules and sections around it, outermost first.

    A `Module X.` or `Section X.` sentence (not `Module X := …`) opens a scope, `End X.`
    closes the innermost one; scopes left open run to the end of the file.
    """
    opened: dict[int, tuple[str, str]] = {}
    closed: dict[int, int] = {}
    stack: list[int] = []
    stacks: list[tuple[int, ...]] = []
    for sentence in sentences:
        text = sentence["text"]
        stacks.append(tuple(stack))
        if (m := _OPEN.match(text)) and ":=" not in text:
            opened[sentence["byte_start"]] = (m.group(1), m.group(2))
            stack.append(sentence["byte_start"])
        elif (m := _CLOSE.match(text)) and stack and opened[stack[-1]][1] == m.group(1):
            closed[stack.pop()] = sentence["byte_end"]
    end = sentences[-1]["byte_end"] if sentences else 0
    scopes = {
        start: Scope(kind, name, start, closed.get(start, end))
        for start, (kind, name) in opened.items()
    }
    return [tuple(scopes[start] for start in stack) for stack in stacks]


def sentence_index(sentences: Sequence[dict[str, Any]], starts: Sequence[int], byte: int) -> int:
    """The index of the sentence that contains a byte offset (or the last one before it)."""
    return max(0, bisect.bisect_right(starts, byte) - 1)


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
    stacks = scope_stacks(sentences)
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
                library_order=order * ORDER_STRIDE + definition["byte_start"],
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
        | {"type": sa.case((same_sentence, table.type), else_=None)},
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


# --- The LLM4Docq format ---------------------------------------------------------------------


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


# --- Lookups for the evaluation --------------------------------------------------------------


def object_info(session: Session, fqns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What the dictionary knows of each name: kind, docstring and its source, sentence, cached
    type (a name with several kinds gets the first in library order)."""
    wanted = sorted(set(fqns))
    if not wanted:
        return {}
    rows = session.execute(
        sa.select(
            LibraryObject.fqn,
            LibraryObject.kind,
            LibraryObject.docstring,
            LibraryObject.docstring_source,
            LibraryObject.fullname,
            LibraryObject.type,
        )
        .where(LibraryObject.fqn == sa.any_(sa.literal(wanted, sa.ARRAY(sa.Text))))
        .order_by(LibraryObject.library_order)
    )
    info: dict[str, dict[str, Any]] = {}
    for fqn, kind, docstring, source, fullname, type_ in rows:
        info.setdefault(
            fqn,
            {
                "kind": kind,
                "docstring": docstring,
                "docstring_source": source,
                "fullname": fullname,
                "type": type_,
            },
        )
    return info


def cache_types(session: Session, types: dict[str, str]) -> None:
    """Remember the types Rocq printed for library objects that had none yet."""
    if types:
        rows = [{"object": fqn, "printed": type_} for fqn, type_ in sorted(types.items())]
        session.execute(_CACHE_TYPE, rows)


_CACHE_TYPE = (
    sa.update(LibraryObject.__table__)
    .where(LibraryObject.fqn == sa.bindparam("object"), LibraryObject.type.is_(None))
    .values(type=sa.bindparam("printed"))
)


# --- What Rocq says of an object ------------------------------------------------------------


def check(session: RocqSession, state: State, name: str) -> str | None:
    """The type Rocq prints for a global name (`About` for an abbreviation); None if unknown."""
    for query in (f"Check @{name}.", f"Check {name}."):
        try:
            shown = session.query(state, query)
        except RocqError as error:
            if "was not found" in error.message:
                return None
            continue
        lines = shown.split("\n")[1:]
        if lines:
            first = lines[0].strip().removeprefix(":").strip()
            return "\n".join([first, *(line.removeprefix("       ") for line in lines[1:])])
    try:
        return session.query(state, f"About {name}.").split("\n")[0] or None
    except RocqError:
        return None


def locate(session: RocqSession, state: State, written: str) -> str | None:
    """The fully qualified name `Locate` gives first for a name as written."""
    try:
        words = session.query(state, f"Locate {written}.").split("\n")[0].split()
    except RocqError:
        return None
    return words[1] if len(words) > 1 and words[0][:1].isupper() and "." in words[1] else None


# --- Where a file names objects --------------------------------------------------------------

OBJECT_KINDS = frozenset(
    {"thm", "def", "prf", "ind", "constr", "rec", "proj", "abbrev", "ax", "defax", "prfax",
     "variant", "coe", "canonstruc", "scheme", "class", "meth", "inst"}
)  # fmt: skip
"""Glob reference kinds of objects a proof can name (not local names, sections, modules)."""


@dataclass(frozen=True)
class Ref:
    """A glob reference to an object or a notation, in file characters."""

    start: int
    end: int
    kind: str
    fqn: str
    written: str
    """The name as the text writes it (a notation: its first token)."""
    notation: str | None = None
    scope: str | None = None


@dataclass(frozen=True)
class FileNames:
    """A built file as the evaluation reads it: sentences, references, sections, variables."""

    file_id: int
    content_hash: str
    path: str
    """The built copy on disk."""
    load_path: tuple[str, str]
    """`(directory, logical prefix)` of its library."""
    sentences: tuple[dict[str, Any], ...]
    starts: tuple[int, ...]
    stacks: tuple[tuple[Scope, ...], ...]
    refs: tuple[Ref, ...]
    ref_starts: tuple[int, ...]
    sections_of: dict[str, tuple[Scope, ...]]
    """Glob name → the sections around its definition (objects defined in sections)."""
    variables: dict[str, tuple[tuple[int, int, int], ...]]
    """Section variable (or `Let`) name → its declarations: sentence, and the characters from
    the name to the next name declared by the sentence (its type, in `Variables (a : A) …`)."""
    entries: dict[str, dict[str, Any]]
    """What the dictionary said of every name the file uses, when the file was read (a
    long-lived worker keeps that snapshot)."""

    def sentence_at(self, byte: int) -> int:
        return sentence_index(self.sentences, self.starts, byte)

    def span(self, index: int) -> tuple[int, int]:
        """A sentence's character range."""
        return self.sentences[index]["char_start"], self.sentences[index]["char_end"]

    def refs_between(self, start: int, end: int) -> list[Ref]:
        """References inside a character range, in order."""
        first = bisect.bisect_left(self.ref_starts, start)
        last = bisect.bisect_left(self.ref_starts, end)
        return [ref for ref in self.refs[first:last] if ref.end <= end]

    def variables_at(self, byte: int) -> dict[str, tuple[int, int]]:
        """The section variables in scope at a byte offset, with where their declaration is."""
        found = {}
        for name, declarations in self.variables.items():
            for sentence, start, end in declarations:
                ends = self.sentences[sentence]["byte_end"]
                if ends <= byte and all(s.opened_at(byte) for s in self.stacks[sentence]):
                    found[name] = (start, end)
        return found

    def name_at(self, fqn: str, byte: int) -> str:
        """The name Rocq gives a glob name at a point: the sections still open are part of it
        (`seq.nth` is `seq.Sequences.nth` inside section `Sequences`). For `Check` there, not
        as an identity: the dictionary knows the object by the glob name."""
        opened = []
        for section in self.sections_of.get(fqn, ()):
            if not section.opened_at(byte):
                break
            opened.append(section.name)
        if not opened:
            return fqn
        head, _, name = fqn.rpartition(".")
        return ".".join([head, *opened, name])


_FILES: dict[tuple[str, int, str], FileNames] = {}


def file_names(session: Session, file_id: int, content_hash: str) -> FileNames:
    """The file's names, read once per process (again when its text changed)."""
    key = (str(session.get_bind().url), file_id, content_hash)
    if key not in _FILES:
        if len(_FILES) >= 8:
            _FILES.clear()
        _FILES[key] = _read_names(session, file_id, content_hash)
    return _FILES[key]


def _read_names(session: Session, file_id: int, content_hash: str) -> FileNames:
    text, path, sentences, glob, output, prefix = session.execute(
        sa.select(
            SourceFile.cleaned_text,
            SourceFile.path,
            SourceFile.sentences,
            SourceFile.glob,
            Library.output_path,
            Library.logical_prefix,
        )
        .join(Library, SourceFile.library_id == Library.id)
        .where(SourceFile.id == file_id)
    ).one()
    stacks, starts = scope_stacks(sentences), [s["byte_start"] for s in sentences]
    refs = sorted(_refs(glob.get("references", []), text.encode("utf-8")), key=lambda r: r.start)
    sections_of: dict[str, tuple[Scope, ...]] = {}
    declared: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for definition in glob.get("definitions", []):
        index = sentence_index(sentences, starts, definition["byte_start"])
        around = tuple(s for s in stacks[index] if s.kind == "Section") if stacks else ()
        if around and definition["kind"] not in LOCAL_KINDS:
            sections_of.setdefault(definition["fqn"], around)
        if around and _is_variable(definition["kind"], sentences[index]["text"]):
            declared[index].append(definition)
    variables: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
    for index, names in declared.items():
        ends = [d["char_start"] for d in names[1:]] + [sentences[index]["char_end"]]
        for definition, end in zip(names, ends, strict=True):
            name = definition["name"].partition(":")[0]  # `Context` binders are `T:748`
            variables[name].append((index, definition["char_start"], end))
    entries = object_info(session, {ref.fqn for ref in refs})
    return FileNames(
        file_id,
        content_hash,
        str(Path(output) / path),
        (output, prefix),
        tuple(sentences),
        tuple(starts),
        tuple(stacks),
        tuple(refs),
        tuple(ref.start for ref in refs),
        sections_of,
        {name: tuple(places) for name, places in variables.items()},
        entries,
    )


def _is_variable(kind: str, sentence: str) -> bool:
    """Section variables (`Variable`, `Hypothesis`; `Context`, whose glob calls them binders)
    and section-local `Let`s."""
    if kind == "binder":
        return _CONTEXT.match(sentence) is not None
    return kind == "var" or (kind == "def" and _LET.match(sentence) is not None)


def _refs(references: list[dict[str, Any]], data: bytes) -> Iterable[Ref]:
    """The references to objects and notations."""
    for r in references:
        kind = r["kind"]
        if (kind in OBJECT_KINDS and ":" not in r["name"]) or kind == "not":
            notation = r.get("notation") or {}
            yield Ref(
                r["char_start"],
                r["char_end"],
                kind,
                r["fqn"],
                data[r["byte_start"] : r["byte_end"]].decode("utf-8", "replace"),
                notation.get("notation"),
                notation.get("scope") or None,
            )
