"""Step 0's copy of a library: its sources with comments stripped, and its build files.

Every later offset refers to the text that was built, so comments go before the build (their
header documentation is harvested first, for the dictionary). Only changed files are written,
so the build's skip logic and mtimes stay meaningful.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.rocq.lexer import UnterminatedError, header_docs, strip_comments
from app.rocq.positions import (
    SourceText,
    first_invalid_byte,
    read_source,
    valid_text,
    write_source,
)
from app.serialize import plain

BUILD_FILES = ("_CoqProject", "Makefile", "dune", "dune-project")
BUILD_SUFFIXES = (".mk", ".opam")


@dataclass(frozen=True)
class PreparedFile:
    """A `.v` file of the copy: its cleaned text and the documentation its comments held."""

    path: str
    cleaned_text: str
    """As stored: a byte that is not UTF-8 shown as U+FFFD (the copy keeps the byte)."""
    header_docs: list[dict[str, Any]]
    strip_error: str | None
    encoding_error: str | None = None
    """Where the cleaned text still holds a byte that is not UTF-8 (outside comments): Rocq
    takes one only in a string, and the file fails either way (its texts cannot be stored)."""


def is_kept(path: Path) -> bool:
    """Sources and build files are copied; compiled files and everything else are not."""
    return (
        path.suffix == ".v"
        or path.name in BUILD_FILES
        or path.name.startswith("Makefile")
        or path.suffix in BUILD_SUFFIXES
    )


def prepare_file(source: Path, target: Path) -> PreparedFile:
    """Strip a `.v` file into the copy; a file that does not lex is copied as it is, so that
    Rocq reports the error with its own message. The file is read as Rocq reads it: a byte
    that is not UTF-8 goes with its comment; one left outside comments is copied as it is, for
    Rocq to judge, and noted."""
    text = read_source(source)
    try:
        cleaned, docs, error = strip_comments(text), header_docs(valid_text(text)), None
    except UnterminatedError as lex_error:
        cleaned, docs, error = text, [], str(lex_error)
    write_if_changed(target, cleaned)
    return PreparedFile(
        path=target.as_posix(),
        cleaned_text=valid_text(cleaned),
        header_docs=[plain(doc) | {"head": doc.head} for doc in docs],
        strip_error=error,
        encoding_error=encoding_error(cleaned),
    )


def encoding_error(text: str) -> str | None:
    """Where a text holds a byte that is not UTF-8, if it does."""
    offset = first_invalid_byte(text)
    if offset is None:
        return None
    where = SourceText(text).position(offset)
    byte = text[offset].encode("utf-8", "surrogateescape")[0]
    return (
        f"line {where.line + 1}, character {where.character}: byte 0x{byte:02X} is not UTF-8 "
        "(outside comments, Rocq reads one only in a string; rocqcot keeps texts as UTF-8)"
    )


def write_if_changed(target: Path, text: str) -> None:
    """Rewrite only changed files, so the build's skip logic and mtimes stay meaningful."""
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists() or read_source(target) != text:
        write_source(target, text)


def copy_tree(input_path: Path, output_path: Path) -> dict[str, PreparedFile]:
    """Copy the kept files, stripping `.v` files; remove `.v` files the input no longer has."""
    prepared: dict[str, PreparedFile] = {}
    for source in sorted(p for p in input_path.rglob("*") if p.is_file() and is_kept(p)):
        relative = source.relative_to(input_path).as_posix()
        target = output_path / relative
        if source.suffix == ".v":
            prepared[relative] = prepare_file(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    for stale in output_path.rglob("*.v"):
        if stale.relative_to(output_path).as_posix() not in prepared:
            stale.unlink()
    return prepared
