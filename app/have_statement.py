"""A tagged have stated as a lemma of its own, `<fqn>_have_<i>`, that is the have's very goal.

The statement is written from Rocq's display of the have's goal: its hypotheses (the section's
variables left out) become binders, its conclusion the lemma's. A display does not always parse
back into the same term (a notation hides an implicit argument, a pattern shows a parameter the
file's `Asymmetric Patterns` refuses, a canonical structure is found through another path, a
deep term is elided), so the goal is printed in turn under more explicit `PRINTINGS` until the
statement is the goal.

"The same goal" is decided by Rocq where the have is, inside the parent's proof: with the
have's hypotheses reverted (the section's variables stay, as after the parent's `Qed`), the
goal must be syntactically the statement's `forall binders, conclusion` elaborated there
(`constr_eq`: the same term up to the names of bound variables, never merely convertible).
The lemma then has to be accepted after the parent's `Qed`, where step 4 proves it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.rocq.goals import Goal, Hypothesis
from app.rocq.session import RocqError, RocqSession, RocqSessionError, State

PRINTINGS = (
    "",
    "Set Printing Coercions. Set Printing Implicit.",
    "Set Printing All.",
    "Set Printing All. Set Printing Fully Qualified.",
)
"""How a have's goal is printed, from the most readable: as Rocq displays it, with coercions
and implicit arguments, fully explicit (numbers in unary), then with every global name
qualified (a hypothesis may shadow a global name the goal uses)."""

_RESERVED = re.compile(r"_[\w']*_$")
_BINDERS = frozenset({"forall", "fun", "exists", "exists2", "let", "fix", "cofix"})
_WORD = re.compile(r"[\w']+")


class NotStated(Exception):
    """No printing of the have's goal gives a lemma that is that goal: why, for each."""


@dataclass(frozen=True)
class HaveStatement:
    """The have's goal as a lemma: binders and conclusion, and the printing they come from."""

    binders: str
    """`(x : T) (y : U := (v)) …`, the section's variables left out; empty when none."""
    conclusion: str
    printing: str
    """The flags of `PRINTINGS` the text was printed under (empty: Rocq's display); when the
    parts need different ones, `per part:` then each part's flags and name."""

    def lemma(self, name: str) -> str:
        """The lemma as Rocq runs it, on one line."""
        head = f"{name} {self.binders}" if self.binders else name
        return f"Lemma {head} : {self.conclusion}."


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
class _Printed:
    """The have's goal under one printing, cut into the lemma's parts."""

    printing: str
    binders: tuple[Binder, ...]
    conclusion: str


class _Have:
    """The have's goal at its state: printed on demand, checked in place."""

    def __init__(
        self, session: RocqSession, state: State, lead: str, goal_index: int, hidden: frozenset[str]
    ) -> None:
        self.session, self.state, self.lead = session, state, lead
        self.goal_index, self.hidden = goal_index, hidden
        self.shown: dict[str, tuple[State, _Printed]] = {}

    def printed(self, printing: str) -> _Printed:
        """The goal under `printing` (raises `RocqSessionError` if Rocq refuses the have)."""
        if printing not in self.shown:
            shown = self.session.run(self.state, f"{printing} {self.lead}")
            assert shown.goals is not None
            goal = shown.goals.foreground[self.goal_index]
            self.shown[printing] = shown, _cut(goal, self.hidden, printing)
        return self.shown[printing][1]

    def check(self, tactic: str) -> str | None:
        """Run a checking tactic on the have's goal: None when it passes, else Rocq's word."""
        state = next(iter(self.shown.values()))[0]
        try:
            self.session.run(state, f"{self.goal_index + 1}: ({tactic}).")
        except RocqSessionError as error:
            return _first_line(_message(error))
        return None


def state_have(
    session: RocqSession, state: State, lead: str, goal_index: int, hidden: frozenset[str]
) -> HaveStatement:
    """The most readable statement of the have that `lead` opens at `state` (its goal is the
    `goal_index`th it leaves) that Rocq elaborates, there, into that very goal: one printing
    for the whole goal when one does, else each binder and the conclusion in the most readable
    printing that gives it back.

    Raises `RocqSessionError` when Rocq refuses the have itself, `NotStated` when no printing
    gives the goal back."""
    have = _Have(session, state, lead, goal_index, hidden)
    problems, tried = [], set()
    for printing in PRINTINGS:
        printed = have.printed(printing)
        if (printed.binders, printed.conclusion) in tried:
            continue
        tried.add((printed.binders, printed.conclusion))
        problem = have.check(_same_goal(printed.binders, printed.conclusion))
        if problem is None:
            return _statement(printed.binders, printed.conclusion, printing)
        problems.append(f"{printing or 'as displayed'}: {problem}")
    return _per_part(have, problems)


def _per_part(have: _Have, problems: list[str]) -> HaveStatement:
    """Each part in the most readable printing that gives it back, then the whole checked."""
    every = [have.printed(printing) for printing in PRINTINGS]
    chosen: list[_Printed] = []
    for index in range(len(every[0].binders) + 1):
        found = next((p for p in every if have.check(_same_part(p, index)) is None), None)
        if found is None:
            missing = f"no printing gives back {_part(every[0], index)}"
            raise NotStated("; ".join([*problems, missing]))
        chosen.append(found)
    binders = tuple(p.binders[i] for i, p in enumerate(chosen[:-1]))
    conclusion = chosen[-1].conclusion
    problem = have.check(_same_goal(binders, conclusion))
    if problem is not None:
        raise NotStated("; ".join([*problems, f"per part: {problem}"]))
    explicit = [f"{p.printing} for {_part(p, i)}" for i, p in enumerate(chosen) if p.printing]
    return _statement(binders, conclusion, "per part: " + "; ".join(explicit))


def _part(printed: _Printed, index: int) -> str:
    """How a part is named in the record: its binder's names, or `the goal`."""
    if index < len(printed.binders):
        return " ".join(printed.binders[index].names)
    return "the goal"


def _statement(binders: tuple[Binder, ...], conclusion: str, printing: str) -> HaveStatement:
    return HaveStatement(" ".join(b.text for b in binders), conclusion, printing)


def _cut(goal: Goal, hidden: frozenset[str], printing: str) -> _Printed:
    """The goal's binders and conclusion, reserved names renamed."""
    return _Printed(printing, *lemma_parts(rename_reserved(goal), hidden))


def _same_goal(binders: tuple[Binder, ...], conclusion: str) -> str:
    """A tactic that fails unless the have's goal, with its own hypotheses reverted, is the
    statement's closed term `forall binders, conclusion` (elaborated in a product, as a type,
    as a lemma's statement is)."""
    return _revert(binders) + _is_goal(_term(binders, conclusion))


def _is_goal(term: str) -> str:
    """A tactic that fails unless the goal is `term` (elaborated as a type: in a product)."""
    g, t, u = _fresh(term, "g", "t", "u")
    return (
        f"lazymatch goal with |- ?{g} => let {t} := constr:(forall _ : Prop, {term}) in "
        f"lazymatch {t} with forall _, ?{u} => constr_eq {g} {u} end end"
    )


def _term(binders: tuple[Binder, ...], conclusion: str) -> str:
    """The statement as one closed term (the lemma's type)."""
    return f"forall {' '.join(b.text for b in binders)}, {conclusion}" if binders else conclusion


def _same_part(printed: _Printed, index: int) -> str:
    """A tactic that fails unless binder `index` (the conclusion after the last) is what the
    have's goal has there, elaborated in the context of the binders before it (the goal's
    hypotheses reverted and introduced again under the binders' names)."""
    before = printed.binders[: index + 1]
    intro = f"intros {' '.join(n for b in before for n in b.names)}; " if before else ""
    prelude = _revert(printed.binders) + intro
    if index == len(printed.binders):
        return prelude + _is_goal(printed.conclusion)
    binder = printed.binders[index]
    if binder.body is not None:
        h, b, ty, x, u, v = _fresh(binder.text, "H", "b", "ty", "x", "u", "v")
        return (
            f"{prelude}lazymatch goal with {h} := [?{b}] : ?{ty} |- _ => "
            f"let {x} := constr:(let _ : {binder.type} := ({binder.body}) in Prop) in "
            f"lazymatch {x} with let _ : ?{u} := ?{v} in _ => "
            f"constr_eq {ty} {u}; constr_eq {b} {v} end end"
        )
    h, ty, x, u = _fresh(binder.text, "H", "ty", "x", "u")
    return (
        f"{prelude}lazymatch goal with {h} : ?{ty} |- _ => "
        f"let {x} := constr:(forall _ : {binder.type}, Prop) in "
        f"lazymatch {x} with forall _ : ?{u}, _ => constr_eq {ty} {u} end end"
    )


def _revert(binders: tuple[Binder, ...]) -> str:
    """Revert the hypotheses the binders stand for, the last ones of the goal's context (by
    place: reserved names cannot be written)."""
    count = sum(len(b.names) for b in binders)
    return f"do {count} lazymatch goal with H : _ |- _ => revert H end; " if count else ""


def _fresh(text: str, *names: str) -> list[str]:
    """Ltac variables that `text` never mentions (Ltac would put their values in its place)."""
    used = set(_WORD.findall(text))
    fresh = []
    for name in names:
        while name in used:
            name += "'"
        fresh.append(name)
    return fresh


def _message(error: RocqSessionError) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _first_line(message: str) -> str:
    return " ".join(message.split())[:300]


def rename_reserved(goal: Goal) -> Goal:
    """The goal with the names Rocq reserves (`_x_`, made by intro patterns) renamed, so that
    it can be written as a lemma: to a name no hypothesis has and the goal's text never uses
    (which could be a global name the new binder would hide)."""
    shown = "\n".join([goal.pretty, *(h.body or "" for h in goal.hypotheses)])
    taken = set(_WORD.findall(shown))
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
