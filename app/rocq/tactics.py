"""The one rule for text that comes from outside (a dataset, an LLM) and goes to Rocq: tactics.

Rocq runs whatever it is sent, and its vernacular reaches past the proof: `Redirect` and
`Extraction "file"` write files, `Load` and `Cd` read and move, `Declare ML Module` and
`Require` load code, `Set` and `Notation` change how later text is read. So such a text is
split into Rocq's own sentences (as the session sends them, `...` included) and every sentence
must be a tactic, a bullet or a brace before any of it runs.

Every vernacular command, and every control prefix (`Time`, `Fail`, `Timeout`, `Redirect`),
starts with a capitalised keyword or an attribute `#[…]`, while Rocq's tactics and MathComp's
start with a lowercase name. A sentence is therefore accepted when, after an optional goal
selector (`2:`, `1-3:`, `all:`, `[x]:`), it starts with a lowercase name or with an opening
parenthesis or bracket (`(tac; tac).`, `[> tac | tac ].`). A library tactic named with a capital
is refused too: the safe side.
"""

from __future__ import annotations

import re

from app.rocq.sentences import split_sentences

_STRUCTURAL = re.compile(r"(?:-+|\++|\*+|\{|\}|(?:\d+|\[[^\]\s]+\])\s*:\s*\{)")
_RANGE = r"\d+(?:\s*-\s*\d+)?"
_SELECTOR = re.compile(rf"(?:{_RANGE}(?:\s*,\s*{_RANGE})*|all|par|!|\[[^\]\s]+\])\s*:(?!=)\s*")
_WORD = re.compile(r"[^\W\d_][\w']*")
EXCERPT_CHARS = 80


class NotATactic(ValueError):
    """A sentence that text from a dataset or an LLM may not send to Rocq; says which and why."""


def tactic_sentences(text: str) -> list[str]:
    """The sentences of `text`, each a tactic, a bullet or a brace; `NotATactic` for the first
    sentence that is anything else (nothing of the text may run then)."""
    data = text.encode("utf-8")
    sentences = [data[start:end].decode("utf-8") for start, end in split_sentences(data)]
    for number, sentence in enumerate(sentences, 1):
        if (reason := _refusal(sentence)) is not None:
            excerpt = " ".join(sentence.split())[:EXCERPT_CHARS]
            raise NotATactic(f"sentence {number} `{excerpt}` is not a tactic: {reason}")
    return sentences


def _refusal(sentence: str) -> str | None:
    """Why a sentence may not run, or None for a tactic, a bullet or a brace."""
    if _STRUCTURAL.fullmatch(sentence):
        return None
    body = sentence[m.end() :] if (m := _SELECTOR.match(sentence)) else sentence
    head = body[:1]
    if head in ("(", "[") or head.islower():
        return None
    if body.startswith("#["):
        return "an attribute `#[…]` introduces a vernacular command"
    if (word := _WORD.match(body)) is not None:
        return f"`{word.group()}` is a vernacular command (only tactics, bullets and braces run)"
    return "a tactic starts with its name (only tactics, bullets and braces run)"
