"""The tactics that decide, where the have is, whether printed parts are its very goal.

The have's own hypotheses are reverted (the section's variables stay, as after the parent's
`Qed`) and introduced again one by one under the binders' names, each hypothesis (type and
body) and then the goal compared with the binder or conclusion elaborated at that point, as
Rocq elaborates a lemma's statement; `constr_eq_nounivs`: the same term up to the names of
bound variables and universe levels (a statement has no way to name the parent's universes),
never merely convertible.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.have_parts import WORD, Binder, PrintedGoal


def same_goal(binders: tuple[Binder, ...], conclusion: str) -> str:
    """A tactic that fails unless the statement is the have's goal: its hypotheses reverted,
    then introduced again one by one under the binders' names, each checked against its
    binder elaborated in the context of those before it, then the goal against the conclusion
    (as Rocq elaborates a lemma's binders and statement)."""
    return _checks(binders, binders, conclusion)


def report_parts(printed: PrintedGoal) -> str:
    """A tactic that checks every part as `same_part` does, one after the other in one run,
    and says which fail (`idtac`) instead of failing: one Rocq call for all the parts."""
    steps = _revert(printed.binders)
    for index, binder in enumerate(printed.binders):
        steps += [f"intros {name}; {_reported(_is_last(binder), index)}" for name in binder.names]
    steps.append(_reported(_is_goal(printed.conclusion), len(printed.binders)))
    return "; ".join(steps)


def reported_failures(messages: Iterable[str]) -> frozenset[int]:
    """The parts that `report_parts` said fail, from the messages of its run."""
    return frozenset(int(found.group(1)) for m in messages if (found := _FAILED_PART.search(m)))


def _reported(check: str, index: int) -> str:
    return f'tryif ({check}) then idtac else idtac "{_FAILED_PART_MARK}{index}"'


_FAILED_PART_MARK = "rocqcot-failed-part-"
_FAILED_PART = re.compile(rf"{_FAILED_PART_MARK}(\d+)")


def same_part(printed: PrintedGoal, index: int) -> str:
    """A tactic that fails unless binder `index` (the conclusion after the last) is what the
    have's goal has there (the binders before it introduced, not checked)."""
    before = printed.binders[:index]
    intro = [f"intros {' '.join(n for b in before for n in b.names)}"] if before else []
    if index == len(printed.binders):
        return _checks(printed.binders, (), printed.conclusion, intro)
    return _checks(printed.binders, (printed.binders[index],), None, intro)


def _checks(
    every: tuple[Binder, ...],
    checked: tuple[Binder, ...],
    conclusion: str | None,
    intro: list[str] | None = None,
) -> str:
    """Revert the hypotheses of `every` binder, run `intro`, introduce and check each of
    `checked`, then check the goal against `conclusion` (when given)."""
    steps = _revert(every)
    steps += intro or []
    steps += [f"intros {name}; {_is_last(b)}" for b in checked for name in b.names]
    if conclusion is not None:
        steps.append(_is_goal(conclusion))
    return "; ".join(steps) or "idtac"


def _revert(binders: tuple[Binder, ...]) -> list[str]:
    """The tactic that reverts the hypotheses the binders stand for (the last ones)."""
    count = sum(len(b.names) for b in binders)
    return [f"do {count} lazymatch goal with H : _ |- _ => revert H end"] if count else []


def _is_last(binder: Binder) -> str:
    """A tactic that fails unless the last hypothesis is what `binder` says, elaborated there."""
    if binder.body is not None:
        h, b, ty, x, u, v = _fresh(binder.text, "H", "b", "ty", "x", "u", "v")
        return (
            f"lazymatch goal with {h} := [?{b}] : ?{ty} |- _ => "
            f"let {x} := constr:(let _ : {binder.type} := ({binder.body}) in Prop) in "
            f"lazymatch {x} with let _ : ?{u} := ?{v} in _ => "
            f"constr_eq_nounivs {ty} {u}; constr_eq_nounivs {b} {v} end end"
        )
    h, ty, x, u = _fresh(binder.text, "H", "ty", "x", "u")
    return (
        f"lazymatch goal with {h} : ?{ty} |- _ => "
        f"let {x} := constr:(forall _ : {binder.type}, Prop) in "
        f"lazymatch {x} with forall _ : ?{u}, _ => constr_eq_nounivs {ty} {u} end end"
    )


def _is_goal(term: str) -> str:
    """A tactic that fails unless the goal is `term` (elaborated as a type: in a product)."""
    g, t, u = _fresh(term, "g", "t", "u")
    return (
        f"lazymatch goal with |- ?{g} => let {t} := constr:(forall _ : Prop, {term}) in "
        f"lazymatch {t} with forall _, ?{u} => constr_eq_nounivs {g} {u} end end"
    )


def _fresh(text: str, *names: str) -> list[str]:
    """Ltac variables that `text` never mentions (Ltac would put their values in its place)."""
    used = set(WORD.findall(text))
    fresh = []
    for name in names:
        while name in used:
            name += "'"
        fresh.append(name)
    return fresh
