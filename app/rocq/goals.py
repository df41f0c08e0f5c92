"""What Rocq shows: goals, hypotheses and messages, as plain immutable text.

Rocq prints a hypothesis as one laid-out string (`x, y := body : type`); the split into names,
body and type happens here, once, so callers never re-parse Rocq's display.
"""

from __future__ import annotations

from dataclasses import dataclass

_RULE = "============================"
_BINDERS = ("forall", "fun", "exists", "exists2", "let", "fix", "cofix", "∀", "∃", "λ")
_OPENERS = frozenset("([{")
_CLOSERS = frozenset(")]}")


@dataclass(frozen=True)
class Location:
    """A range in the text that was sent to Rocq, in bytes (Rocq's unit) and characters."""

    byte_start: int
    byte_end: int
    start: int
    """Character offset of the first character."""
    end: int
    """Character offset just after the last character."""


@dataclass(frozen=True)
class Message:
    """A feedback message Rocq attached to a sentence or query."""

    level: str
    """One of debug, info, notice, warning, error."""
    text: str
    location: Location | None = None


@dataclass(frozen=True)
class Hypothesis:
    """One line of a goal's context; Rocq groups names that share a type (`m n : nat`)."""

    names: tuple[str, ...]
    body: str | None
    """The value of a local definition (`set`, `pose`), else None."""
    type: str

    @property
    def pretty(self) -> str:
        """The hypothesis as Rocq displays it."""
        body = "" if self.body is None else f" := {self.body}"
        return f"{', '.join(self.names)}{body} : {self.type}"

    @classmethod
    def parse(cls, text: str) -> Hypothesis:
        """Split Rocq's display of a hypothesis (`names [:= body] : type`)."""
        names, sep, rest = _split_names(text)
        if sep == ":=":
            body, type_ = _split_body(rest)
            return cls(names, body, type_)
        return cls(names, None, rest)


@dataclass(frozen=True)
class Goal:
    """One goal: its context and what is left to prove."""

    hypotheses: tuple[Hypothesis, ...]
    conclusion: str
    name: str | None = None
    """The user-level name (`[x]:` selectors), when the goal has one."""

    @property
    def pretty(self) -> str:
        """The goal as Rocq displays it: hypotheses, the rule, the conclusion."""
        lines = [h.pretty for h in self.hypotheses]
        return "\n".join([*lines, _RULE, self.conclusion])


@dataclass(frozen=True)
class Goals:
    """All goals of a proof state; empty everywhere outside a proof."""

    foreground: tuple[Goal, ...] = ()
    background: tuple[Goal, ...] = ()
    """Goals hidden by focusing (bullets, braces), in proof order."""
    shelved: tuple[Goal, ...] = ()
    given_up: tuple[Goal, ...] = ()
    in_proof: bool = False
    """Whether a proof is open (a finished proof still needs its Qed)."""

    @property
    def finished(self) -> bool:
        """Whether nothing is left to prove, so `Qed.` would succeed."""
        return not (self.foreground or self.background or self.shelved or self.given_up)

    @property
    def pretty(self) -> str:
        """The goals as Rocq's `Show.` displays them."""
        if not self.in_proof:
            return ""
        if not self.foreground:
            return "No more goals." if self.finished else "This subproof is complete."
        count = len(self.foreground)
        first = self.foreground[0].pretty.replace("\n", "\n  ")
        parts = [f"{count} goal{'s' if count > 1 else ''}\n  \n  {first}"]
        parts += [f"goal {i} is:\n {g.conclusion}" for i, g in enumerate(self.foreground[1:], 2)]
        return "\n\n".join(parts)


def _split_names(text: str) -> tuple[tuple[str, ...], str, str]:
    """Names, separator (`:` or `:=`) and the rest of a hypothesis display."""
    colon = text.index(" :")
    names = tuple(n.strip() for n in text[:colon].split(","))
    sep = ":=" if text.startswith(":=", colon + 1) else ":"
    return names, sep, text[colon + 1 + len(sep) :].strip()


def _split_body(text: str) -> tuple[str, str]:
    """Split `body : type` at the first top-level colon that is not a binder's.

    Rocq's display does not mark the separator, so colons inside brackets and binder colons
    (`fun x : T =>`, `forall x : T,`) are skipped; the first other ` : ` separates, else the
    last top-level one.
    """
    depth, segment_start, colons = 0, 0, []
    for i, char in enumerate(text):
        if char in _OPENERS:
            depth += 1
        elif char in _CLOSERS:
            depth -= 1
        elif char == ":" and depth == 0 and _is_separator(text, i):
            if not _is_binder_colon(text[segment_start:i]):
                return text[:i].rstrip(), text[i + 1 :].strip()
            colons.append(i)
            segment_start = i + 1
    if not colons:
        raise ValueError(f"no type in hypothesis: {text!r}")
    return text[: colons[-1]].rstrip(), text[colons[-1] + 1 :].strip()


def _is_separator(text: str, i: int) -> bool:
    """Whether the colon at i stands alone (` : `), not in `:=`, `::` or `x:`."""
    before = text[i - 1] if i else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return before.isspace() and after.isspace()


def _is_binder_colon(segment: str) -> bool:
    """Whether a segment ends like `... fun x y` so that the following colon types a binder."""
    words = segment.split()
    for k in range(len(words) - 1, -1, -1):
        if words[k] in _BINDERS:
            return k < len(words) - 1
        if not _is_ident(words[k]):
            return False
    return False


def _is_ident(word: str) -> bool:
    """Whether a word can be a bound name (letters, digits, `_`, `'`)."""
    return all(c.isalnum() or c in "_'" for c in word)
