"""Goals as the data shows them: rendered with or without the section's global variables, and
the difference a chain made, in the phrases the chain-of-thought prompts were written for.

Pure text over the Rocq layer's `Goals`: Rocq computes every goal, this module only lays them
out. Goals are numbered from 1 as Rocq numbers them (`goal 2 is: …`). New subgoals come first
in Rocq's goal list and the goals a chain did not touch keep their order at the end, so when
the count changes, the first goals are the ones added or removed and the rest are compared in
order.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.rocq.goals import Goal, Goals, Hypothesis

NO_GOALS = "No more goals."
UNFOCUSED = "This subproof is complete, but there are some unfocused goals:"


def without_names(goal: Goal, hidden: frozenset[str]) -> Goal:
    """The goal without the hypotheses named in `hidden` (the section's global variables)."""
    if not hidden:
        return goal
    kept = []
    for hypothesis in goal.hypotheses:
        names = tuple(name for name in hypothesis.names if name not in hidden)
        if names:
            kept.append(Hypothesis(names, hypothesis.body, hypothesis.type))
    return Goal(tuple(kept), goal.conclusion, goal.name)


def remaining(goals: Goals, hidden: frozenset[str] = frozenset()) -> tuple[Goal, ...]:
    """Every goal left to prove, focused ones first, in proof order."""
    return tuple(without_names(g, hidden) for g in (*goals.foreground, *goals.background))


def render(goals: Goals, hidden: frozenset[str] = frozenset()) -> str:
    """The goals after a chain: the focused ones in full (each numbered when there are several),
    or the unfocused ones when the focused subproof is complete, or `No more goals.`."""
    if goals.foreground:
        return _render_list([without_names(g, hidden) for g in goals.foreground])
    if goals.background:
        rest = _render_list([without_names(g, hidden) for g in goals.background])
        return f"{UNFOCUSED}\n\n{rest}"
    return NO_GOALS


def _render_list(goals: Sequence[Goal]) -> str:
    if len(goals) == 1:
        return goals[0].pretty
    return "\n\n".join(f"Goal {i}:\n{goal.pretty}" for i, goal in enumerate(goals, 1))


def goal_list(text: str) -> list[str]:
    """The goals of a `render`ed text, one string each, as the original's `goals` lists them
    (none when the proof is finished; the unfocused goals when the focused subproof is)."""
    if text.strip() in ("", NO_GOALS):
        return []
    text = text.removeprefix(f"{UNFOCUSED}\n\n")
    if not text.startswith("Goal 1:\n"):
        return [text]
    goals, rest, number = [], text.removeprefix("Goal 1:\n"), 2
    while (cut := rest.find(f"\n\nGoal {number}:\n")) >= 0:
        goals.append(rest[:cut])
        rest, number = rest[cut + len(f"\n\nGoal {number}:\n") :], number + 1
    return [*goals, rest]


def goal_diff(before: Sequence[Goal], after: Sequence[Goal]) -> str:
    """What a chain changed, from the goals left before it to the goals left after it; empty
    when nothing changed."""
    delta = len(after) - len(before)
    parts = []
    if delta < 0:
        parts.append(_removed(-delta, after))
        before = before[-delta:]
    elif delta > 0:
        parts.append("Goals added:\n\n" + "\n\n".join(g.pretty for g in after[:delta]))
        after = after[delta:]
    changes = []
    for i, (old, new) in enumerate(zip(before, after, strict=True)):
        if change := hypotheses_and_conclusion_diff(old, new):
            old_number, new_number = max(0, -delta) + i + 1, max(0, delta) + i + 1
            moved = "" if old_number == new_number else f" and is now the goal {new_number}"
            changes.append(f"The goal {old_number} is changed{moved}:\n{change}")
    if changes:
        parts.append("Goals modified:\n\n" + "\n\n".join(changes))
    return "\n\n".join(parts)


def _removed(count: int, after: Sequence[Goal]) -> str:
    head = "1 goal has been removed." if count == 1 else f"{count} goals have been removed."
    if after:
        return f"{head}\nThe new goal to prove is:\n{after[0].pretty}"
    return f"{head}\nThere is no goal remaining, the proof is finished."


def hypotheses_and_conclusion_diff(before: Goal, after: Goal) -> str:
    """How one goal changed: hypotheses added, modified (shown as they are now) or removed, by
    name, and the new conclusion if it changed."""
    old, new = _by_name(before), _by_name(after)
    sections = (
        ("Hypotheses added", [f"{n} {v}" for n, v in new.items() if n not in old]),
        ("Hypotheses modified", [f"{n} {v}" for n, v in new.items() if old.get(n, v) != v]),
        ("Hypotheses removed", [f"{n} {v}" for n, v in old.items() if n not in new]),
    )
    parts = [f"{title}:\n" + "\n".join(lines) for title, lines in sections if lines]
    if before.conclusion != after.conclusion:
        parts.append(f"The goal changed to:\n{after.conclusion}")
    return "\n\n".join(parts)


def _by_name(goal: Goal) -> dict[str, str]:
    """Each hypothesis name with what Rocq shows after it (`:= body : type` or `: type`)."""
    shown = {}
    for hypothesis in goal.hypotheses:
        body = "" if hypothesis.body is None else f":= {hypothesis.body} "
        for name in hypothesis.names:
            shown[name] = f"{body}: {hypothesis.type}"
    return shown
