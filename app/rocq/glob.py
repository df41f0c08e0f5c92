"""Definitions and references from the `.glob` files that `coqc -dump-glob` writes.

A glob file names every definition and every resolved reference of a library with its fully
qualified name, so later steps never have to guess names from the source with regexes.

The format (Coq 8.16 to Rocq 9, `interp/dumpglob.ml`), one record a line, offsets are UTF-8
BYTE offsets into the source, both ends inclusive:

    DIGEST <md5 of the .v>
    F<library>                                   e.g. Fmathcomp.ssreflect.div
    <kind> <start>:<end> <path> <name>           a definition, e.g. prf 2344:2349 <> edivnP
    R<start>:<end> <library> <path> <name> <kind>  a reference

The digest is `NO` when coqc was given an explicit `-dump-glob FILE` (as the build does).
`<>` stands for an empty path or name. For a definition, `<path>` is the module path inside the
library (sections excluded), except for `var` (section variables) and `sec` (sections), whose
path includes the enclosing sections. `mod`/`modtype` definitions have path `<>` and the whole
module path as name. `binder` lines define local binders named `<ident>:<counter>`, and their
uses are `var` references to the same name. Notations (`not`) are named by an encoded key,
see `decode_notation`. In every case `<library>.<path>.<name>` (empty parts dropped) is the
fully qualified name, and a reference and its definition share it.

One Coq 8.16 bug is undone here: a reference to an object of the same library that sits in a
module other than the current one (or an ancestor) gets its module path cut to the current
module path (`remove_sections` in dumpglob.ml), e.g. `Equality.class` used after `End Equality`
is written `<> class`. `parse_glob` restores the path from the file's own definitions when
exactly one definition fits (same name, defined earlier, in a submodule of the written path,
and, when the source is given, ending with the qualified name as written at the reference).
"""

from __future__ import annotations

import dataclasses
import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from app.rocq.positions import Position, SourceText

EMPTY = "<>"
# Kinds outside the module-path truncation bug: never restored, never used to restore.
_NOT_MODULE_MEMBERS = frozenset({"var", "binder", "sec", "not", "lib", "mod", "modtype"})


class GlobFormatError(ValueError):
    """A line of a glob file does not have the shape Rocq writes."""


@dataclass(frozen=True)
class Notation:
    """A notation named in a glob file, decoded from its space-free key."""

    key: str
    """The key as written in the glob file, e.g. `::nat_scope:x_'+'_x`."""
    entry: str
    """The custom entry the notation lives in; empty for ordinary terms."""
    scope: str
    """The notation scope, e.g. `nat_scope`; empty when the notation has none."""
    notation: str
    """Rocq's own notation string: `_` for each hole, e.g. `_ + _`."""
    symbols: tuple[str, ...]
    """The notation's terminal tokens in order, e.g. `("+",)`."""


@dataclass(frozen=True)
class Definition:
    """Something the library defines at a place in its source."""

    kind: str
    """Glob kind: prf, def, ind, constr, rec, proj, abbrev, ax, not, var, sec, mod, binder..."""
    name: str
    """The short name (a module path for `mod`, the encoded key for `not`)."""
    path: str
    """Module path inside the library (with sections for `var`/`sec`); empty at top level."""
    library: str
    """The library being defined in, e.g. `mathcomp.ssreflect.div`."""
    fqn: str
    """Fully qualified name: library, path and name joined by dots."""
    byte_start: int
    """UTF-8 byte offset of the name in the source."""
    byte_end: int
    """UTF-8 byte offset just after the name (exclusive)."""
    char_start: int | None
    """Character offset of the name, when the source was given."""
    char_end: int | None
    """Character offset just after the name (exclusive), when the source was given."""
    start: Position | None
    """Line and character of the name, when the source was given."""
    notation: Notation | None
    """The decoded notation for kind `not`, else None."""


@dataclass(frozen=True)
class Reference:
    """A use, at a place in the source, of something defined here or in another library."""

    kind: str
    """Glob kind of the target: thm, def, not, var, lib, mod, constr, ind, abbrev..."""
    name: str
    """Short name of the target; empty for `lib`, `mod` and `sec` references."""
    path: str
    """Module path of the target inside its library; empty at top level."""
    library: str
    """The library that defines the target, e.g. `mathcomp.ssreflect.ssrnat`."""
    fqn: str
    """Fully qualified name of the target (equal to the defining `Definition.fqn`)."""
    byte_start: int
    """UTF-8 byte offset of the reference in the source."""
    byte_end: int
    """UTF-8 byte offset just after the reference (exclusive)."""
    char_start: int | None
    """Character offset of the reference, when the source was given."""
    char_end: int | None
    """Character offset just after the reference (exclusive), when the source was given."""
    start: Position | None
    """Line and character of the reference, when the source was given."""
    notation: Notation | None
    """The decoded notation for kind `not`, else None."""


@dataclass(frozen=True)
class Glob:
    """Everything one glob file says about one library."""

    library: str
    """Logical name of the library, e.g. `mathcomp.ssreflect.div`."""
    digest: str | None
    """MD5 hex digest of the source Coq compiled, or None when Coq wrote `NO`."""
    definitions: tuple[Definition, ...]
    """Definitions in file order."""
    references: tuple[Reference, ...]
    """References in file order, exact duplicates (Coq repeats some) removed, module paths
    restored where Coq truncated them (see the module docstring)."""


def fully_qualified(library: str, path: str, name: str) -> str:
    """Join the non-empty parts of a glob name, as Rocq prints qualified names."""
    return ".".join([part for part in (library, path, name) if part])


@functools.cache
def decode_notation(key: str) -> Notation:
    """Decode a glob notation key `:<entry>:<scope>:<encoded notation>`.

    The encoding (`cook_notation` in dumpglob.ml): tokens joined by `_`, `x` for a hole, a
    terminal between single quotes with inner quotes doubled and control characters as `'^A`.
    """
    parts = key.split(":", 3)
    if len(parts) != 4 or parts[0]:
        raise GlobFormatError(f"not a notation key: {key!r}")
    tokens = _notation_tokens(parts[3], key)
    return Notation(
        key=key,
        entry=parts[1],
        scope=parts[2],
        notation=" ".join("_" if token is None else token for token in tokens),
        symbols=tuple(token for token in tokens if token is not None),
    )


def _notation_tokens(encoded: str, key: str) -> list[str | None]:
    """Split an encoded notation into terminals (strings) and holes (None)."""
    tokens: list[str | None] = []
    i = 0
    while i < len(encoded):
        if encoded[i] == "x":
            tokens.append(None)
            i += 1
        elif encoded[i] == "'":
            token, i = _terminal(encoded, i + 1, key)
            tokens.append(token)
        else:
            raise GlobFormatError(f"bad notation key {key!r} at {i}")
        if i < len(encoded):
            if encoded[i] != "_":
                raise GlobFormatError(f"bad notation key {key!r} at {i}")
            i += 1
    return tokens


def _terminal(encoded: str, i: int, key: str) -> tuple[str, int]:
    """Read a quoted terminal whose opening quote is just before `i`; return it and the next
    index."""
    chars: list[str] = []
    while i < len(encoded):
        char = encoded[i]
        if char != "'":
            chars.append(char)
            i += 1
        elif encoded.startswith("''", i):
            chars.append("'")
            i += 2
        elif encoded.startswith("'^", i) and i + 2 < len(encoded) and encoded[i + 2].isupper():
            chars.append(chr(ord(encoded[i + 2]) - ord("A") + 1))
            i += 3
        else:
            return "".join(chars), i + 1
    raise GlobFormatError(f"unterminated terminal in notation key {key!r}")


def read_glob(path: Path, source: SourceText | None = None) -> Glob:
    """Parse a glob file; give the source to also get character offsets and positions."""
    return parse_glob(path.read_text(encoding="utf-8"), source)


def parse_glob(text: str, source: SourceText | None = None) -> Glob:
    """Parse the text of a glob file; give the source to also get characters and positions."""
    digest: str | None = None
    library = ""
    definitions: list[Definition] = []
    references: dict[str, Reference] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line:
            continue
        try:
            if line.startswith("DIGEST "):
                digest = _digest(line)
            elif line.startswith("F"):
                library = line[1:]
            elif line.startswith("R"):
                if line not in references:
                    references[line] = _reference(line, source)
            else:
                definitions.append(_definition(line, library, source))
        except (ValueError, IndexError) as error:
            raise GlobFormatError(f"glob line {number}: {line!r}: {error}") from error
    restored = _restore_paths(library, definitions, references.values(), source)
    return Glob(library, digest, tuple(definitions), restored)


def _restore_paths(
    library: str,
    definitions: list[Definition],
    references: Iterable[Reference],
    source: SourceText | None,
) -> tuple[Reference, ...]:
    """Undo Coq's truncation of same-library module paths where only one definition fits."""
    known = {definition.fqn for definition in definitions}
    by_name: dict[str, list[Definition]] = defaultdict(list)
    for definition in definitions:
        if definition.kind not in _NOT_MODULE_MEMBERS:
            by_name[definition.name].append(definition)
    return tuple(
        _restored(reference, by_name[reference.name], source)
        if reference.library == library
        and reference.kind not in _NOT_MODULE_MEMBERS
        and reference.fqn not in known
        and reference.name in by_name
        else reference
        for reference in references
    )


def _restored(
    reference: Reference, namesakes: list[Definition], source: SourceText | None
) -> Reference:
    """The reference with the one fitting definition's path, or unchanged when none or many."""
    prefix = reference.path + "." if reference.path else ""
    fits = {
        d.fqn: d
        for d in namesakes
        if d.byte_start < reference.byte_start and d.path.startswith(prefix) and d.path
    }
    if source is not None:
        written = "." + source.byte_slice(reference.byte_start, reference.byte_end)
        fits = {fqn: d for fqn, d in fits.items() if ("." + fqn).endswith(written)}
    if len(fits) != 1:
        return reference
    (definition,) = fits.values()
    return dataclasses.replace(reference, path=definition.path, fqn=definition.fqn)


def _digest(line: str) -> str | None:
    """The source digest of a `DIGEST` line (`NO` when Coq could not compute it)."""
    value = line.removeprefix("DIGEST ").strip()
    return None if value == "NO" else value


def _definition(line: str, library: str, source: SourceText | None) -> Definition:
    """Parse `<kind> <start>:<end> <path> <name>` (8.20 writes some `var` lines with two
    spaces after the kind: fields are separated by runs of blanks)."""
    kind, span, path, name = line.split(None, 3)
    path, name = _field(path), _field(name)
    byte_start, byte_end = _span(span)
    char_start, char_end, start = _locate(source, byte_start, byte_end)
    return Definition(
        kind=kind,
        name=name,
        path=path,
        library=library,
        fqn=fully_qualified(library, path, name),
        byte_start=byte_start,
        byte_end=byte_end,
        char_start=char_start,
        char_end=char_end,
        start=start,
        notation=decode_notation(name) if kind == "not" else None,
    )


def _reference(line: str, source: SourceText | None) -> Reference:
    """Parse `R<start>:<end> <library> <path> <name> <kind>`."""
    span, library, path, rest = line[1:].split(None, 3)
    name, kind = rest.rsplit(" ", 1)
    path, name = _field(path), _field(name)
    byte_start, byte_end = _span(span)
    char_start, char_end, start = _locate(source, byte_start, byte_end)
    return Reference(
        kind=kind,
        name=name,
        path=path,
        library=library,
        fqn=fully_qualified(library, path, name),
        byte_start=byte_start,
        byte_end=byte_end,
        char_start=char_start,
        char_end=char_end,
        start=start,
        notation=decode_notation(name) if kind == "not" else None,
    )


def _field(value: str) -> str:
    """A glob name or path field, with `<>` as the empty string."""
    return "" if value == EMPTY else value


def _span(span: str) -> tuple[int, int]:
    """Byte start and exclusive byte end of a glob `start:end` span (inclusive end)."""
    start, end = span.split(":")
    return int(start), int(end) + 1


def _locate(
    source: SourceText | None, byte_start: int, byte_end: int
) -> tuple[int | None, int | None, Position | None]:
    """Character offsets and start position of a byte span, when the source is known."""
    if source is None:
        return None, None, None
    char_start = source.byte_to_char(byte_start)
    return char_start, source.byte_to_char(byte_end), source.position(char_start)
