"""What a chain (or a statement) names: its dependencies and notations, for step 4's rows.

Dependencies are the glob references inside a character range of the built file (never
hypotheses or local names), each named by its dictionary fqn (the glob definition's, sections
left out: what the searches of the CoTs look up) and by the name Rocq's `Locate` gives it at
that point (`located`: a section still open is part of it), with its type from `Check` of that
name, its dictionary entry and the spans of the file that name it. Where Rocq does not know the
glob's name (the glob drops some module paths), both are the name it locates.

A type is what Rocq prints in the theorem's own file at its start: the scopes open there, its
`Implicit Types` and the names in reach all shape it. So types are asked for each theorem, all
of its names in one query (`prefetch`), never taken from another theorem or from the database:
a worker's earlier files would otherwise decide them, and two traces of one library differ. A
type is printed without the context of the proof it was checked in (an abbreviation's implicit
arguments are existential variables that Rocq declares with it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from app.file_names import FileNames, Ref
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, State

STEP_6_SOURCES = frozenset({"llm", "offline"})
"""Docstrings step 6 wrote: not the dictionary's, so not recorded here (the same inputs give
the same evaluation, whether step 6 ran before it or not)."""

TypeCache = dict[str, tuple[str, str | None]]
"""The name an object has at a point (its section path while open) → the name Rocq locates and
the type it prints."""


CHECK_FORMS = ("Check @{}.", "Check {}.", "About {}.")
"""How a name's type is asked, in order: `@` prints implicit arguments as binders; an
abbreviation or a notation may take only `Check name`, or only `About` (its first line)."""

CheckForms = dict[str, int]
"""Qualified name → the first of `CHECK_FORMS` Rocq takes for it: a fact of the name, not of
the place, so a worker keeps it across theorems and skips the forms it refuses."""


@dataclass
class ChainNames:
    """Names the objects of a file's ranges at a point of it (a theorem's start)."""

    session: RocqSession
    file: FileNames
    point: int
    forms: CheckForms = field(default_factory=dict)
    """How each name's type is asked, learnt across the worker's theorems."""
    types: TypeCache = field(default_factory=dict)
    new_types: dict[str, str] = field(default_factory=dict)
    """Types Rocq printed for dictionary objects that had none cached, for the dictionary."""

    def prefetch(self, spans: list[tuple[int, int]], state: State) -> None:
        """Ask the types of every object ranges name (a theorem's statement and proof, its
        section variables' declarations) in one query: a query per name costs a round trip
        each, many times Rocq's own work."""
        wanted: dict[str, Ref] = {}
        for ref in (ref for span in spans for ref in self.file.refs_between(*span)):
            name = self.file.name_at(ref.fqn, self.point)
            if ref.kind != "not" and name not in self.types:
                wanted.setdefault(name, ref)
        typed = check_all(self.session, state, list(wanted), self.forms)
        for name, type_ in typed.items():
            self._remember(wanted[name], name, (name, type_))

    def named(self, spans: list[tuple[int, int]], state: State) -> tuple[list[Any], list[Any]]:
        """The objects and the notations named in character ranges of the file, each once, in
        order, by dictionary fqn, with their dictionary entry (objects: also the name located at
        this point, its type, and the character spans in the built file that name it)."""
        objects: dict[str, dict[str, Any]] = {}
        notations: dict[str, dict[str, Any]] = {}
        for ref in (ref for span in spans for ref in self.file.refs_between(*span)):
            info = _info(self.file.entries.get(ref.fqn))
            if ref.kind == "not" and ref.fqn not in notations:
                notations[ref.fqn] = {"notation": ref.notation, "scope": ref.scope,
                                      "fqn": ref.fqn, "info": info}  # fmt: skip
            elif ref.kind != "not" and ref.fqn not in objects:
                fqn, located, type_ = self._resolve(ref, state)
                objects[ref.fqn] = {"name": ref.written, "fqn": fqn, "located": located,
                                    "kind": ref.kind, "type": type_, "info": info,
                                    "spans": [[ref.start, ref.end]]}  # fmt: skip
            elif ref.kind != "not":
                objects[ref.fqn]["spans"].append([ref.start, ref.end])
        return list(objects.values()), list(notations.values())

    def _resolve(self, ref: Ref, state: State) -> tuple[str, str, str | None]:
        """A reference's fqn, the name Rocq locates for it at this point and its type, cached by
        that name (an object of a section still open has another name, and type, once it
        closes). The fqn is the glob's, the dictionary's, unless Rocq does not know that name
        (the glob drops some module paths) and locates the text as another object."""
        name = self.file.name_at(ref.fqn, self.point)
        if name not in self.types:
            self._remember(ref, name, self._query_type(ref, name, state))
        located, type_ = self.types[name]
        return ref.fqn if located == name else located, located, type_

    def _remember(self, ref: Ref, name: str, found: tuple[str, str | None]) -> None:
        """Cache what Rocq said of a name; a dictionary object's first type goes to the
        dictionary too (for step 6), never back into a trace."""
        self.types[name] = found
        located, type_ = found
        entry = self.file.entries.get(ref.fqn)
        if name == ref.fqn == located and type_ and entry is not None and not entry.get("type"):
            self.new_types[ref.fqn] = type_

    def _query_type(self, ref: Ref, name: str, state: State) -> tuple[str, str | None]:
        """`Check @name`; a glob name Rocq does not know is located from the text instead."""
        type_ = check(self.session, state, name, self.forms)
        if type_ is None:
            located = locate(self.session, state, ref.written)
            if located is not None and located != name:
                return located, check(self.session, state, located, self.forms)
        return name, type_


def _info(entry: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dictionary's word on an object, for the data (without step 6's docstrings)."""
    if entry is None:
        return None
    if entry.get("docstring_source") in STEP_6_SOURCES:
        return {"docstring": None, "docstring_source": None, "fullname": entry["fullname"]}
    return {k: entry[k] for k in ("docstring", "docstring_source", "fullname")}


# --- What Rocq says of an object ------------------------------------------------------------


def check(
    session: RocqSession, state: State, name: str, forms: CheckForms | None = None
) -> str | None:
    """The type Rocq prints for a global name; None if unknown. A qualified name's first form
    that Rocq takes goes to `forms`."""
    forms = {} if forms is None else forms
    for number in range(forms.get(name, 0), len(CHECK_FORMS)):
        try:
            shown = session.query(state, CHECK_FORMS[number].format(name))
        except RocqError as error:
            if "was not found" in error.message and number < 2:
                return None
            continue
        type_ = (shown.split("\n")[0] or None) if number == 2 else _printed_type(shown)
        if type_ is not None:
            if number and "." in name:
                forms[name] = number
            return type_
    return None


def check_all(
    session: RocqSession, state: State, names: list[str], forms: CheckForms
) -> dict[str, str]:
    """The types `Check` prints for many names, in one query (names known to take only
    `About` left out); a query that fails is split in halves, so a name Rocq refuses costs a
    few queries and is left out (`check` asks it alone, with its other forms)."""
    names = [name for name in names if forms.get(name, 0) < 2]
    if not names:
        return {}
    try:
        shown = session.queries(state, [CHECK_FORMS[forms.get(n, 0)].format(n) for n in names])
    except RocqError:
        if len(names) == 1:
            return {}
        typed: dict[str, str] = {}
        for half in (names[: len(names) // 2], names[len(names) // 2 :]):
            typed |= check_all(session, state, half, forms)
        return typed
    printed = [message.text for message in shown if message.level == "notice"]
    if len(printed) != len(names):
        return {}
    types = {name: _printed_type(text) for name, text in zip(names, printed, strict=True)}
    return {name: type_ for name, type_ in types.items() if type_ is not None}


def _printed_type(shown: str) -> str | None:
    """The type in `Check`'s answer (`name\n     : type`, continued lines indented)."""
    lines = shown.strip().split("\n")[1:]
    if not lines:
        return None
    first = lines[0].strip().removeprefix(":").strip()
    typed = "\n".join([first, *(line.removeprefix("       ") for line in lines[1:])])
    return without_evar_contexts(typed)


_EVAR_DECLARATION = re.compile(r"(\?\S+) : \[.*\|- (.*)\]\s*", re.DOTALL)


def without_evar_contexts(typed: str) -> str:
    """A type whose `where` block declares each existential variable (an abbreviation's
    implicit argument) without the context Rocq prints with it (`?T : [n : nat  h : n = 0 |-
    Type]` is `?T : Type`): that context is the proof's where the name was first checked, not
    the object's."""
    body, where, block = typed.partition("\nwhere\n")
    if not where:
        return typed
    entries = re.split(r"\n(?=\?)", block)
    declared = [_EVAR_DECLARATION.sub(r"\1 : \2", entry) for entry in entries]
    return f"{body}{where}" + "\n".join(declared)


def locate(session: RocqSession, state: State, written: str) -> str | None:
    """The fully qualified name `Locate` gives first for a name as written."""
    try:
        words = session.query(state, f"Locate {written}.").split("\n")[0].split()
    except RocqError:
        return None
    return words[1] if len(words) > 1 and words[0][:1].isupper() and "." in words[1] else None
