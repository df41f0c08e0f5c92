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
    order: int
    """The theorem's `library_order`: a type printed here replaces one printed later."""
    forms: CheckForms = field(default_factory=dict)
    """How each name's type is asked, learnt across the worker's theorems."""
    types: TypeCache = field(default_factory=dict)
    new_types: dict[str, str] = field(default_factory=dict)
    """Types Rocq printed for dictionary objects that had none cached from an earlier theorem,
    for the dictionary."""

    def prefetch(self, spans: list[tuple[int, int]], state: State) -> None:
        """Ask the types of every object ranges name (a theorem's statement and proof, its
        section variables' declarations) in one query: a query per name costs a round trip
        each, many times Rocq's own work."""
        wanted: dict[str, Ref] = {}
        for ref in (ref for span in spans for ref in self.file.refs_between(*span)):
            name = self.file.name_at(ref.fqn, self.point)
            if ref.kind != "not" and name not in self.types:
                wanted.setdefault(name, ref)
        typed, unknown = check_all(self.session, state, list(wanted), self.forms)
        for name, type_ in typed.items():
            self._remember(wanted[name], name, (name, type_))
        self._locate_unknown({name: wanted[name] for name in unknown}, state)

    def _locate_unknown(self, unknown: dict[str, Ref], state: State) -> None:
        """Cache glob names Rocq does not know (the glob drops some module paths) as the objects
        their texts locate, with those objects' types: the texts located in one query, the
        names found checked in another."""
        found = locate_all(self.session, state, [ref.written for ref in unknown.values()])
        elsewhere = {
            name: at for name, at in zip(unknown, found, strict=True) if at not in (None, name)
        }
        located_names = list(dict.fromkeys(elsewhere.values()))
        typed, _ = check_all(self.session, state, located_names, self.forms)
        for name, ref in unknown.items():
            located = elsewhere.get(name)
            if located is None:
                self._remember(ref, name, (name, None))
            else:
                type_ = typed.get(located) or check(self.session, state, located, self.forms)
                self._remember(ref, name, (located, type_))

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
            type_ = check(self.session, state, name, self.forms)
            if type_ is None:
                self._locate_unknown({name: ref}, state)
            else:
                self._remember(ref, name, (name, type_))
        located, type_ = self.types[name]
        return ref.fqn if located == name else located, located, type_

    def _remember(self, ref: Ref, name: str, found: tuple[str, str | None]) -> None:
        """Cache what Rocq said of a name; a dictionary object's type goes to the dictionary too
        (for step 6; the earliest theorem's printing is kept), never back into a trace."""
        self.types[name] = found
        located, type_ = found
        entry = self.file.entries.get(ref.fqn)
        if name == ref.fqn == located and type_ and entry is not None and self._earlier(entry):
            self.new_types[ref.fqn] = type_

    def _earlier(self, entry: dict[str, Any]) -> bool:
        """Whether this theorem comes before the one whose start printed the entry's type (as
        the dictionary was when the file was read: the database decides)."""
        printed_at = entry.get("type_order")
        return not entry.get("type") or printed_at is None or printed_at > self.order


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
) -> tuple[dict[str, str], list[str]]:
    """The types `Check` prints for many names, asked in one query (names known to take only
    `About` left out), and the names Rocq does not know. A name Rocq refuses otherwise is left
    out (`check` asks it alone, with its other forms)."""
    names = [name for name in names if forms.get(name, 0) < 2]
    commands = [CHECK_FORMS[forms.get(name, 0)].format(name) for name in names]
    typed: dict[str, str] = {}
    unknown: list[str] = []
    for name, shown in zip(names, _notices(session, state, commands), strict=True):
        if isinstance(shown, RocqError):
            if "was not found" in shown.message:
                unknown.append(name)
        elif shown is not None and (type_ := _printed_type(shown)) is not None:
            typed[name] = type_
    return typed, unknown


def _notices(
    session: RocqSession, state: State, commands: list[str]
) -> list[str | RocqError | None]:
    """What each query command that prints one notice (`Check`, `Locate`) prints, or the error
    Rocq refuses it with; None where that cannot be told. Rocq stops a query at the first
    command it refuses and the next query goes on after it: a refusal costs one query, not a
    query per command."""
    answers: list[str | RocqError | None] = []
    while len(answers) < len(commands):
        rest = commands[len(answers) :]
        try:
            printed, refused = session.queries(state, rest), None
        except RocqError as error:
            printed, refused = error.printed, error
        notices = [message.text for message in printed if message.level == "notice"]
        failed_at = len(rest) if refused is None else _command_at(rest, refused)
        if failed_at is None or len(notices) != failed_at:
            return answers + [None] * len(rest)
        answers += notices
        if refused is not None:
            answers.append(refused)
    return answers


def _command_at(commands: list[str], error: RocqError) -> int | None:
    """The index of the command a query's error is located in (they ran joined by spaces)."""
    if error.location is None:
        return None
    end = 0
    for index, command in enumerate(commands):
        end += len(command) + 1
        if error.location.start < end:
            return index
    return None


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


def locate_all(session: RocqSession, state: State, written: list[str]) -> list[str | None]:
    """The fully qualified name `Locate` gives first for each name as written, in one query."""
    commands = [f"Locate {name}." for name in written]
    return [_located(shown) for shown in _notices(session, state, commands)]


def _located(shown: str | RocqError | None) -> str | None:
    """The qualified name on `Locate`'s first line (`Constant mathcomp.ssreflect.ssrnat.addnC`),
    None if it found nothing (`No object of suffix …`)."""
    if not isinstance(shown, str):
        return None
    words = shown.split("\n")[0].split()
    return words[1] if len(words) > 1 and words[0][:1].isupper() and "." in words[1] else None
