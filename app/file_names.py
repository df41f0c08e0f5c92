"""A built file as step 4 reads it: its modules and sections, the objects it names.

`FileNames` holds a file's sentences, its glob references, the sections around each object it
defines and its section variables, and says the name `Locate` gives an object at a point (the
sections still open are part of it). The dictionary (`app.dictionary`) uses the same scopes for
an object's module path.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.models import Library, LibraryObject, SourceFile

LOCAL_KINDS = frozenset({"binder", "var", "sec"})
"""Glob kinds of names that mean nothing outside their proof or section."""
_OPEN = re.compile(r"(Module|Section)\s+(?:(?:Type|Import|Export)\s+)?([A-Za-z_][\w']*)")
_CLOSE = re.compile(r"End\s+([A-Za-z_][\w']*)\s*\.$")
_LET = re.compile(r"(?:#\[[^\]]*\]\s*)?(?:Local\s+)?Let\b")
_HB_COMMAND = re.compile(r"(?:#\[[^\]]*\]\s*)?HB\.(\w+)")
_HB_END = re.compile(r"HB\.end\s*\.$")
_CONTEXT = re.compile(r"(?:#\[[^\]]*\]\s*)?Context\b")


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


def scope_stacks(
    sentences: Sequence[dict[str, Any]], definitions: Sequence[dict[str, Any]] = ()
) -> list[tuple[Scope, ...]]:
    """For each sentence, the modules and sections around it, outermost first.

    A `Module X.` or `Section X.` sentence (not `Module X := …`) opens a scope, `End X.`
    closes the innermost one; scopes left open run to the end of the file. Hierarchy-Builder's
    `HB.builders Context T of F T.` opens a section that the text does not name, with the
    section variables it declares (`T`, a mixin), until `HB.end.`: its name is the one the
    glob's `sec` definition in that sentence gives (`Builders_41`), when `definitions` are the
    file's glob definitions.
    """
    generated = {d["byte_start"]: d["name"] for d in definitions if d["kind"] == "sec"}
    opened: dict[int, tuple[str, str]] = {}
    closed: dict[int, int] = {}
    builders: set[int] = set()
    stack: list[int] = []
    stacks: list[tuple[int, ...]] = []
    for sentence in sentences:
        text, start = sentence["text"], sentence["byte_start"]
        stacks.append(tuple(stack))
        if (m := _OPEN.match(text)) and ":=" not in text:
            opened[start] = (m.group(1), m.group(2))
            stack.append(start)
        elif _hb_command(text) == "builders":
            opened[start] = ("Section", generated.get(start, ""))
            builders.add(start)
            stack.append(start)
        elif stack and _closes(text, opened[stack[-1]][1], stack[-1] in builders):
            closed[stack.pop()] = sentence["byte_end"]
    end = sentences[-1]["byte_end"] if sentences else 0
    scopes = {
        start: Scope(kind, name, start, closed.get(start, end))
        for start, (kind, name) in opened.items()
    }
    return [tuple(scopes[start] for start in stack) for stack in stacks]


def _closes(text: str, name: str, builders: bool) -> bool:
    """Whether a sentence ends the innermost scope: `End <its name>.`, or `HB.end.` for the
    section of an `HB.builders`."""
    if builders:
        return _HB_END.match(text) is not None
    return (m := _CLOSE.match(text)) is not None and m.group(1) == name


def _hb_command(sentence: str) -> str | None:
    """The Hierarchy-Builder command a sentence runs (`builders`, `instance`, …), if any."""
    command = _HB_COMMAND.match(sentence)
    return command.group(1) if command else None


def sentence_index(sentences: Sequence[dict[str, Any]], starts: Sequence[int], byte: int) -> int:
    """The index of the sentence that contains a byte offset (or the last one before it)."""
    return max(0, bisect.bisect_right(starts, byte) - 1)


# --- Lookups for the evaluation --------------------------------------------------------------


def object_info(session: Session, fqns: Iterable[str]) -> dict[str, dict[str, Any]]:
    """What the dictionary knows of each name: kind, docstring and its source, sentence, cached
    type and where it was printed (a name with several kinds gets the first in library
    order)."""
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
            LibraryObject.type_order,
        )
        .where(LibraryObject.fqn == sa.any_(sa.literal(wanted, sa.ARRAY(sa.Text))))
        .order_by(LibraryObject.library_order)
    )
    info: dict[str, dict[str, Any]] = {}
    for fqn, kind, docstring, source, fullname, type_, type_order in rows:
        info.setdefault(
            fqn,
            {
                "kind": kind,
                "docstring": docstring,
                "docstring_source": source,
                "fullname": fullname,
                "type": type_,
                "type_order": type_order,
            },
        )
    return info


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
    scopes_after: tuple[tuple[Scope, ...], ...]
    """The modules and sections open just after each sentence (`HB.builders` declares
    variables in the section it opens)."""
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
                if ends <= byte and all(s.opened_at(byte) for s in self.scopes_after[sentence]):
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
    definitions, starts = glob.get("definitions", []), [s["byte_start"] for s in sentences]
    stacks = scope_stacks(sentences, definitions)
    after = [*stacks[1:], *stacks[-1:]]  # what a sentence defines is inside what it opens
    refs = sorted(_refs(glob.get("references", []), text.encode("utf-8")), key=lambda r: r.start)
    sections_of: dict[str, tuple[Scope, ...]] = {}
    declared: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for definition in definitions:
        index = sentence_index(sentences, starts, definition["byte_start"])
        around = tuple(s for s in after[index] if s.kind == "Section") if after else ()
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
        tuple(after),
        tuple(refs),
        tuple(ref.start for ref in refs),
        sections_of,
        {name: tuple(places) for name, places in variables.items()},
        entries,
    )


def _is_variable(kind: str, sentence: str) -> bool:
    """Section variables (`Variable`, `Hypothesis`; `Context`, whose glob calls them binders;
    those `HB.builders` declares) and section-local `Let`s. Other Hierarchy-Builder commands
    (`HB.instance Definition _ n := …`, `HB.factory`, `HB.mixin`) declare their parameters as
    variables of a section they close themselves: not in scope after them."""
    if kind == "binder":
        return _CONTEXT.match(sentence) is not None
    if kind == "var":
        return _hb_command(sentence) in (None, "builders")
    return kind == "def" and _LET.match(sentence) is not None


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
