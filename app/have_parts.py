"""A have's goal as text: cut into the parts of a lemma (binders, conclusion) under one
printing, and the rewritings of that text a printing needs (reserved names renamed, local
definitions cast, unary numbers in decimal). Pure text: `app.have_statement` asks Rocq."""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.rocq.goals import Goal, Hypothesis

_RESERVED = re.compile(r"_[\w']*_$")
_BINDERS = frozenset({"forall", "fun", "exists", "exists2", "let", "fix", "cofix"})
WORD = re.compile(r"[\w']+")


@dataclass(frozen=True)
class Binder:
    """A hypothesis of the have's goal as a binder of the lemma (reserved names renamed)."""

    names: tuple[str, ...]
    type: str
    body: str | None = None

    @property
    def text(self) -> str:
        """`(x y : T)`, or `(x : T := (v))` for a local definition."""
        if self.body is None:
            return f"({' '.join(self.names)} : {self.type})"
        return f"({' '.join(self.names)} : {self.type} := ({self.body}))"


@dataclass(frozen=True)
class PrintedGoal:
    """The have's goal under one printing, cut into the lemma's parts."""

    printing: str
    binders: tuple[Binder, ...]
    conclusion: str


def parts(printed: PrintedGoal) -> range:
    """The indices of the lemma's parts: its binders, then its conclusion."""
    return range(len(printed.binders) + 1)


def part_name(printed: PrintedGoal, index: int) -> str:
    """How a part is named in the record: its binder's names, or `the goal`."""
    if index < len(printed.binders):
        return " ".join(printed.binders[index].names)
    return "the goal"


def part_text(printed: PrintedGoal, index: int) -> str:
    """A part as the lemma writes it: its binder (`(x : T)`), or the conclusion."""
    if index < len(printed.binders):
        return printed.binders[index].text
    return printed.conclusion


def printed_goal(goal: Goal, hidden: frozenset[str], printing: str) -> PrintedGoal:
    """The goal printed under `printing` as the lemma's parts, reserved names renamed."""
    return PrintedGoal(printing, *lemma_parts(rename_reserved(goal), hidden))


def cast_lets(printed: PrintedGoal, printing: str) -> PrintedGoal:
    """The printing with each local definition's body cast to the definition's type."""
    binders = tuple(
        b if b.body is None else Binder(b.names, b.type, f"({b.body}) : {b.type}")
        for b in printed.binders
    )
    return PrintedGoal(printing, binders, printed.conclusion)


def decimal_printing(explicit: PrintedGoal, shown: PrintedGoal, printing: str) -> PrintedGoal:
    """The fully explicit printing with its numbers in decimal, part by part (a part whose
    numbers do not line up with the display's stays as it is), labelled `printing`."""

    def part(text: str, display: str) -> str:
        return decimal_numbers(text, display) or text

    binders = tuple(
        Binder(
            b.names,
            part(b.type, d.type),
            None if b.body is None or d.body is None else part(b.body, d.body),
        )
        for b, d in zip(explicit.binders, shown.binders, strict=True)
    )
    return PrintedGoal(printing, binders, part(explicit.conclusion, shown.conclusion))


_UNARY = re.compile(r"(?<![\w'.@])(?:S|O)(?![\w'.])")
_DECIMAL = re.compile(r"(?<![\w'.])\d+(?![\w'])")


def decimal_numbers(explicit: str, display: str) -> str | None:
    """`explicit` (Rocq's text under `Set Printing All`) with each unary number (`O`,
    `S (S O)`, or elided: `S (S (...))`) written `2%nat`; an elided one takes its value from
    the display with notations (`display`), whose decimal numbers come in the same order. None
    when there is nothing to write or the numbers do not line up."""
    numbers, position = [], 0
    while match := _UNARY.search(explicit, position):
        found = _unary(explicit, match.start())
        if found is None:
            position = match.end()
            continue
        numbers.append((match.start(), *found))
        position = found[0]
    shown = [int(n) for n in _DECIMAL.findall(display)]
    elided = any(value is None for _, _, value in numbers)
    if not numbers or (elided and len(shown) != len(numbers)):
        return None
    values = shown if elided else [value for _, _, value in numbers]
    if any(value not in (None, v) for (_, _, value), v in zip(numbers, values, strict=True)):
        return None
    parts, last = [], 0
    for (start, end, _), value in zip(numbers, values, strict=True):
        parts += [explicit[last:start], f"{value}%nat"]
        last = end
    return "".join([*parts, explicit[last:]])


def _unary(text: str, start: int) -> tuple[int, int | None] | None:
    """The end of the unary number at `start` and its value (None when elided), if one is."""
    if text.startswith("O", start):
        return start + 1, 0
    if text.startswith("...", start):
        return start + 3, None
    if text.startswith("(...)", start):
        return start + 5, None
    if not text.startswith("S ", start):
        return None
    inner = start + 2
    if text.startswith("(", inner) and not text.startswith("(...)", inner):
        found = _unary(text, inner + 1)
        if found is None or not text.startswith(")", found[0]):
            return None
        end, value = found[0] + 1, found[1]
    else:
        found = _unary(text, inner)
        if found is None:
            return None
        end, value = found
    return end, None if value is None else value + 1


def rename_reserved(goal: Goal) -> Goal:
    """The goal with the names Rocq reserves (`_x_`, made by intro patterns) renamed, so that
    it can be written as a lemma: to a name no hypothesis has and the goal's text never uses
    (which could be a global name the new binder would hide)."""
    shown = "\n".join([goal.pretty, *(h.body or "" for h in goal.hypotheses)])
    taken = set(WORD.findall(shown))
    renames: dict[str, str] = {}
    for old in (name for h in goal.hypotheses for name in h.names):
        if _RESERVED.match(old):
            new = old.strip("_") or "x"
            while new in taken:
                new += "'"
            renames[old] = new
            taken.add(new)
    if not renames:
        return goal

    def fix(text: str) -> str:
        for old, new in renames.items():
            text = re.sub(rf"(?<![\w']){re.escape(old)}(?![\w'])", new, text)
        return text

    hypotheses = tuple(
        Hypothesis(
            tuple(renames.get(n, n) for n in h.names),
            None if h.body is None else fix(h.body),
            fix(h.type),
        )
        for h in goal.hypotheses
    )
    return Goal(hypotheses, fix(goal.conclusion), goal.name)


def lemma_parts(goal: Goal, hidden: frozenset[str]) -> tuple[tuple[Binder, ...], str]:
    """The binders of a goal without reserved names, the section variables (`hidden`) left out,
    and its conclusion; line breaks become spaces."""
    binders = []
    for h in goal.hypotheses:
        names = tuple(n for n in h.names if n not in hidden)
        if names and h.body is not None:
            body, type_ = let_parts(h.body, h.type)
            binders.append(Binder(names, _one_line(type_), _one_line(body)))
        elif names:
            binders.append(Binder(names, _one_line(h.type)))
    return tuple(binders), _one_line(goal.conclusion)


def let_parts(body: str, type_: str) -> tuple[str, str]:
    """A local definition's body and type, split at the last top-level ` : ` that does not type
    a binder: Rocq's display `x := body : type` has no other mark, and a body may hold colons
    of its own (`fix f (n : nat) {struct n} : nat := …`)."""
    text = f"{body} : {type_}"
    depth, colons = 0, []
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == ":" and depth == 0 and text[i - 1 : i] == " " and text[i + 1 : i + 2] == " ":
            colons.append(i)
    for i in reversed(colons):
        words = text[:i].split()
        while words and re.fullmatch(r"[\w']+", words[-1]) and words[-1] not in _BINDERS:
            words.pop()
        if not words or words[-1] not in _BINDERS:
            return text[:i].rstrip(), text[i + 1 :].strip()
    return body, type_


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text)
