"""The tactics that decide, where the have is, whether printed parts are its very goal.

The have's own hypotheses are reverted (the section's variables stay, as after the parent's
`Qed`) and introduced again one by one under the binders' names, each hypothesis (type and
body) and then the goal compared with the binder or conclusion elaborated at that point, as
Rocq elaborates a lemma's statement; `constr_eq_nounivs`: the same term up to the names of
bound variables and universe levels (a statement has no way to name the parent's universes),
never merely convertible.

Elaboration under a lemma's binders is not elaboration in a context of hypotheses: under a
named binder, Rocq infers the implicit predicate of `{in A, forall x (y := f x), P y}` without
its `let` (and the lemma's `move=> x Ax y` has no `y` to introduce). So each part that follows
a binder is elaborated under a named binder of its own (`_nested`).

A part that no printing gives back may still be accepted as `convertible` (`unify`): on
Hierarchy-Builder's MathComp, a hypothesis typed by an inline structure instance
(`seq (Nmodule.sort (GRing_UnitRing__to__GRing_Nmodule (UnitRing.Pack …)))`) reads back, even
from `Set Printing All`, as another term with the same meaning.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable

from app.have_parts import WORD, Binder, PrintedGoal


def report_parts(
    printed: PrintedGoal, checked: Collection[int] | None = None, convertible: bool = False
) -> str:
    """A tactic that checks parts as `same_part` does (those in `checked`, every one by
    default; the binders between them only introduced), one after the other in one run, and
    says which fail (`idtac`) instead of failing: one Rocq call for all of them."""
    last = len(printed.binders) if checked is None else max(checked)
    steps, unchecked = _revert(printed.binders), []
    for index in range(last + 1):
        if checked is not None and index not in checked:
            unchecked += printed.binders[index].names
            continue
        if unchecked:
            steps.append(f"intros {' '.join(unchecked)}")
            unchecked = []
        steps += _part_steps(
            printed.binders,
            printed.conclusion,
            index,
            reported=True,
            compare=_comparison(convertible),
        )
    return "; ".join(steps)


def reported_failures(messages: Iterable[str]) -> frozenset[int]:
    """The parts that `report_parts` said fail, from the messages of its run."""
    return frozenset(int(found.group(1)) for m in messages if (found := _FAILED_PART.search(m)))


_FAILED_PART_MARK = "rocqcot-failed-part-"
_FAILED_PART = re.compile(rf"{_FAILED_PART_MARK}(\d+)")


def same_part(printed: PrintedGoal, index: int, convertible: bool = False) -> str:
    """A tactic that fails unless binder `index` (the conclusion after the last) is what the
    have's goal has there (the binders before it introduced, not checked), or only
    `convertible` to it."""
    before = printed.binders[:index]
    steps = _revert(printed.binders)
    steps += [f"intros {' '.join(n for b in before for n in b.names)}"] if before else []
    steps += _part_steps(
        printed.binders, printed.conclusion, index, compare=_comparison(convertible)
    )
    return "; ".join(steps)


def _comparison(convertible: bool) -> str:
    """The tactic comparing a part of the goal with its elaborated text."""
    return "unify" if convertible else "constr_eq_nounivs"


def _part_steps(
    binders: tuple[Binder, ...],
    conclusion: str,
    index: int,
    reported: bool = False,
    compare: str = "constr_eq_nounivs",
) -> list[str]:
    """Part `index` introduced and checked, the binders before it introduced: binder `index`
    under each of its names, elaborated under a named binder when one comes before it (as in
    a lemma), or the goal against the conclusion after the last binder, with the `compare`
    tactic. With `reported`, the check says that the part fails (`idtac`) instead of failing."""
    if index == len(binders):
        check = _is_goal(conclusion, nested=bool(binders), compare=compare)
    else:
        check = _is_last(binders[index], nested=index > 0, compare=compare)
    if reported:
        check = f'tryif ({check}) then idtac else idtac "{_FAILED_PART_MARK}{index}"'
    if index == len(binders):
        return [check]
    return [f"intros {name}; {check}" for name in binders[index].names]


def _revert(binders: tuple[Binder, ...]) -> list[str]:
    """The tactic that reverts the hypotheses the binders stand for (the last ones)."""
    count = sum(len(b.names) for b in binders)
    return [f"do {count} lazymatch goal with H : _ |- _ => revert H end"] if count else []


def _is_last(binder: Binder, nested: bool, compare: str) -> str:
    """A tactic that fails unless the last hypothesis is what `binder` says, elaborated there
    (under a named binder when `nested`), as `compare` decides."""
    if binder.body is not None:
        h, b, ty, x, u, v, z = _fresh(binder.text, "H", "b", "ty", "x", "u", "v", "z")
        let = f"let _ : {binder.type} := ({binder.body}) in Prop"
        return (
            f"lazymatch goal with {h} := [?{b}] : ?{ty} |- _ => "
            f"let {x} := constr:({_nested(let, nested, z)}) in "
            f"lazymatch {x} with {_nested(f'let _ : ?{u} := ?{v} in _', nested)} => "
            f"{compare} {ty} {u}; {compare} {b} {v} end end"
        )
    h, ty, x, u, z = _fresh(binder.text, "H", "ty", "x", "u", "z")
    product = f"forall _ : {binder.type}, Prop"
    return (
        f"lazymatch goal with {h} : ?{ty} |- _ => "
        f"let {x} := constr:({_nested(product, nested, z)}) in "
        f"lazymatch {x} with {_nested(f'forall _ : ?{u}, _', nested)} => "
        f"{compare} {ty} {u} end end"
    )


def _is_goal(term: str, nested: bool, compare: str) -> str:
    """A tactic that fails unless the goal is `term` (elaborated as a type: in a product, under
    a named binder when `nested`), as `compare` decides."""
    g, t, u, z = _fresh(term, "g", "t", "u", "z")
    return (
        f"lazymatch goal with |- ?{g} => "
        f"let {t} := constr:({_nested(f'forall _ : Prop, {term}', nested, z)}) in "
        f"lazymatch {t} with {_nested(f'forall _, ?{u}', nested)} => "
        f"{compare} {g} {u} end end"
    )


def _nested(term: str, nested: bool, name: str = "_") -> str:
    """`term` under a binder of `Prop` when `nested`: named `name` in a term to elaborate, `_`
    in the pattern that takes it apart."""
    return f"forall {name} : Prop, {term}" if nested else term


def _fresh(text: str, *names: str) -> list[str]:
    """Ltac variables that `text` never mentions (Ltac would put their values in its place)."""
    used = set(WORD.findall(text))
    fresh = []
    for name in names:
        while name in used:
            name += "'"
        fresh.append(name)
    return fresh
