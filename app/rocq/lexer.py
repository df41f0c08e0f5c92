"""Comments and strings of Rocq source, lexed the way Rocq lexes them.

Comments nest; strings are delimited by `"` with `""` as an escaped quote; a `(*` inside a
string is not a comment, and inside a comment strings are still lexed (so `"*)"` in a comment
does not close it). Regexes get these wrong, hence a small hand-written scanner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Comment:
    """A comment of the source, with its delimiters."""

    start: int
    """Character offset of `(*`."""
    end: int
    """Character offset just after the matching `*)`."""
    text: str
    """The comment including its delimiters."""


class UnterminatedError(ValueError):
    """A comment or string that never ends: the file is broken."""


def comments(text: str) -> list[Comment]:
    """Every top-level comment of `text`, in order."""
    found, i, n = [], 0, len(text)
    while i < n:
        if text.startswith("(*", i):
            end = _comment_end(text, i)
            found.append(Comment(i, end, text[i:end]))
            i = end
        elif text[i] == '"':
            i = _string_end(text, i)
        else:
            i += 1
    return found


def _string_end(text: str, start: int) -> int:
    """Offset just after the string that opens at `start` (`""` is an escaped quote)."""
    i = start + 1
    while True:
        i = text.find('"', i)
        if i < 0:
            raise UnterminatedError(f"string opened at character {start} never ends")
        if text.startswith('""', i):
            i += 2
            continue
        return i + 1


def _comment_end(text: str, start: int) -> int:
    """Offset just after the comment that opens at `start`, counting nested comments."""
    depth, i, n = 0, start, len(text)
    while i < n:
        if text.startswith("(*", i):
            depth, i = depth + 1, i + 2
        elif text.startswith("*)", i):
            depth, i = depth - 1, i + 2
            if depth == 0:
                return i
        elif text[i] == '"':
            i = _string_end(text, i)
        else:
            i += 1
    raise UnterminatedError(f"comment opened at character {start} never ends")


def strip_comments(text: str) -> str:
    """The source without comments.

    A line left blank by removing its comments disappears (blank lines of the source stay); a
    comment between two tokens becomes a space so they stay apart; trailing spaces go.
    """
    pieces: list[str] = []
    marks: list[int] = []  # where comments were, as offsets in the stripped text
    last, length = 0, 0
    for comment in comments(text):
        before, after = text[last : comment.start], text[comment.end : comment.end + 1]
        pieces.append(before)
        length += len(before)
        marks.append(length)
        if before[-1:] not in ("", " ", "\n", "\t") and after not in ("", " ", "\n", "\t"):
            pieces.append(" ")
            length += 1
        last = comment.end
    pieces.append(text[last:])
    kept, line_start, mark = [], 0, 0
    for line in "".join(pieces).split("\n"):
        line_end = line_start + len(line)
        had_comment = False
        while mark < len(marks) and marks[mark] <= line_end:
            had_comment, mark = True, mark + 1
        if line.strip() or not had_comment:
            kept.append(line.rstrip())
        line_start = line_end + 1
    return "\n".join(kept)


@dataclass(frozen=True)
class HeaderDoc:
    """One entry of a file's header documentation, e.g. `size s == the number of items in s`."""

    term: str
    """The documented form, e.g. `size s` or `x \\in s`."""
    relation: str
    """The separator MathComp uses: `==`, `<=>`, `<->` or `:=`."""
    description: str
    """The explanation, continuation lines joined."""
    line: int
    """0-based line of the entry in the original file."""

    @property
    def head(self) -> str | None:
        """The first identifier of the term: the name the entry documents, if any."""
        match = re.match(r"[A-Za-z_][\w']*", self.term)
        return match.group(0) if match else None


_BOX_LINE = re.compile(r"^\(\*(?P<body>.*?)\*\)\s*$")
_ENTRY = re.compile(r"^(?P<term>\S.*?)\s+(?P<rel>==|<=>|<->|:=)\s+(?P<desc>\S.*)$")


def header_docs(text: str) -> list[HeaderDoc]:
    """The `term == description` entries of documentation comments: MathComp's boxed ones,
    each line `(* ... *)`, and multi-line coqdoc ones, `(** ...` to `*)`, as Rocq's own
    SSReflect files write them. An entry's description continues on following lines indented
    at least to where the description started.
    """
    entries: list[HeaderDoc] = []
    current: dict | None = None
    documented = _coqdoc_lines(text)
    for number, raw in enumerate(text.split("\n")):
        box = _BOX_LINE.match(raw.strip())
        body = box.group("body").rstrip() if box else documented.get(number)
        if body is None or not body.strip() or set(body.strip()) <= {"*"}:
            current = _close(entries, current)
            continue
        entry = _ENTRY.match(body.strip())
        indent = len(body) - len(body.lstrip())
        if entry and not (current and indent >= current["column"]):
            current = _close(entries, current)
            column = body.index(entry.group("desc"), indent + len(entry.group("term")))
            current = {
                "term": entry.group("term"),
                "rel": entry.group("rel"),
                "desc": [entry.group("desc").strip()],
                "line": number,
                "column": column,
            }
        elif current and indent >= current["column"] - 1:
            current["desc"].append(body.strip())
        else:
            current = _close(entries, current)
    _close(entries, current)
    return entries


def _coqdoc_lines(text: str) -> dict[int, str]:
    """The lines of multi-line `(** ... *)` comments by 0-based number, their delimiters and
    what precedes the comment blanked so that columns stay."""
    lines: dict[int, str] = {}
    for comment in comments(text):
        if not comment.text.startswith("(**") or "\n" not in comment.text:
            continue
        first = text.count("\n", 0, comment.start)
        column = comment.start - (text.rfind("\n", 0, comment.start) + 1)
        body = " " * (column + 3) + comment.text[3:-2]
        for offset, line in enumerate(body.split("\n")):
            lines[first + offset] = line.rstrip()
    return lines


def _close(entries: list[HeaderDoc], current: dict | None) -> None:
    if current is not None:
        description = " ".join(current["desc"])
        entries.append(HeaderDoc(current["term"], current["rel"], description, current["line"]))
    return None
