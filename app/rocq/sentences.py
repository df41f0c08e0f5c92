"""Rocq's sentences in a text, found without Rocq: comments, strings, bullets and braces.

Used to feed coqidetop one sentence at a time (`Add` parses only the first sentence of its
text) and to cut proofs into tactics.
"""

from __future__ import annotations

import re

_WORTH = re.compile(rb'\(\*|"|\.')
_COMMENT_TOKEN = re.compile(rb'\(\*|\*\)|"')
_SELECTOR_BRACE = re.compile(rb"(?:\d+|\[[^\]\s]+\])\s*:\s*\{")
_BLANK = b" \t\r\n"
_END_FOLLOW = (b"", b" ", b"\t", b"\r", b"\n")


def split_sentences(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges (first token, just after the terminator) of the sentences of a Rocq text.

    A sentence ends at a `.` or a `...` followed by a blank (Rocq's lexer ends a command at
    both: `split... Print nat.` is two sentences), or is a bullet (`-`, `++`, `*`), a brace, or
    a goal selector with a brace (`2: {`). Comments and strings are skipped. Matches the ranges
    of `coqc -time` on MathComp; a last unterminated sentence runs to the end of the text.
    """
    sentences, i, n = [], 0, len(data)
    while (start := _skip_blank(data, i)) < n:
        i = _sentence_end(data, start)
        sentences.append((start, i))
    return sentences


def _skip_blank(data: bytes, i: int) -> int:
    """The offset of the next token after blanks and comments."""
    while i < len(data):
        if data[i] in _BLANK:
            i += 1
        elif data.startswith(b"(*", i):
            i = _skip_comment(data, i)
        else:
            break
    return i


def _skip_comment(data: bytes, i: int) -> int:
    """The offset after the (nested) comment opening at i; strings inside are skipped too."""
    depth, i = 1, i + 2
    while depth and (m := _COMMENT_TOKEN.search(data, i)):
        if m.group() == b'"':
            i = _skip_string(data, m.start())
            continue
        depth += 1 if m.group() == b"(*" else -1
        i = m.end()
    return i if depth == 0 else len(data)


def _skip_string(data: bytes, i: int) -> int:
    """The offset after the string opening at i (`""` is an escaped quote)."""
    while (j := data.find(b'"', i + 1)) >= 0:
        if data[j + 1 : j + 2] != b'"':
            return j + 1
        i = j + 1
    return len(data)


def _sentence_end(data: bytes, start: int) -> int:
    """The offset just after the sentence starting at `start`."""
    first = data[start : start + 1]
    if first in (b"-", b"+", b"*"):
        i = start
        while data[i : i + 1] == first:
            i += 1
        return i
    if first in (b"{", b"}"):
        return start + 1
    if m := _SELECTOR_BRACE.match(data, start):
        return m.end()
    i = start
    while m := _WORTH.search(data, i):
        token, i = m.group(), m.start()
        if token == b"(*":
            i = _skip_comment(data, i)
        elif token == b'"':
            i = _skip_string(data, i)
        elif data[i + 1 : i + 2] in _END_FOLLOW and _dots_before(data, i) != 1:
            return i + 1
        else:
            i += 1
    return len(data)


def _dots_before(data: bytes, i: int) -> int:
    """How many dots come just before the one at i. A dot then a blank ends a sentence unless
    it closes `..` (the token of `x .. y`): Rocq's lexer ends a command at `.` and at `...`."""
    j = i
    while j > 0 and data[j - 1 : j] == b".":
        j -= 1
    return i - j
