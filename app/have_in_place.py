"""A have's lemma whose proof need not run again: its goals, read from where the have is.

Step 4 states each tagged have as a lemma and evaluates its proof. The proof already ran inside
the parent's, on the have's very goal (Rocq checked that the statement elaborates to it:
`app.have_checks`). When the lemma displays as that goal did (`HaveStatement.goal`), running
the proof again as the lemma's shows what the parent's walk showed, less the parent's own
goals: Rocq is deterministic. So the lemma's goals are read from the parent's walk when
- its proof is one `by` chain (it closes the goal or fails): no goal is left after it; or
- its chains are single sentences that the parent ran one at a time (its goals fetched after
  each): a tagged block leaves the goals the have left besides its own untouched until its
  goal is closed (step 2 checked it), so the lemma's goals are the parent's without them.
Anything else (bullets or braces inside the proof, a nested have, goals the parent's tactics
did touch) runs as the lemma's, after the parent's `Qed`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.chains import Chain, normalized
from app.rocq.goals import Goal, Goals

_BY = re.compile(r"\s*by(?![\w'])")


@dataclass(frozen=True)
class Walked:
    """A sentence the parent ran, from the have's own on, and the goals after it."""

    sentence: str
    goals: Goals


def walk_each_sentence(goal: Goal | None, chains: tuple[Chain, ...]) -> bool:
    """Whether the parent's walk should fetch the goals after each sentence of the have's
    chain: then the lemma's goals can be read from it (`lemma_goals`), and only then."""
    if goal is None or lemma_goals(goal, chains, ()) is not None:
        return False  # the lemma may display otherwise, or its goals are known without it
    return _single_sentences(chains)


def _single_sentences(chains: tuple[Chain, ...]) -> bool:
    """A proof of chains of one sentence each, none a have: no bullet or brace in it."""
    return bool(chains) and all(len(c.sentences) == 1 and c.have is None for c in chains)


def lemma_goals(
    goal: Goal | None, chains: tuple[Chain, ...], walked: tuple[Walked, ...]
) -> tuple[Goals, ...] | None:
    """The lemma's goals, initial then after each of its chains, read from the parent's walk
    (`walked`: the have's sentence and those after it in its chain); None when its proof must
    run as the lemma's. `goal`: the lemma's goal as Rocq displays it, if known."""
    if goal is None or not chains or any(c.have is not None for c in chains):
        return None
    initial = Goals((goal,), in_proof=True)
    if len(chains) == 1 and _BY.match(chains[0].script):
        return initial, Goals(in_proof=True)
    if not _single_sentences(chains) or len(walked) != len(chains) + 1:
        return None
    texts = [normalized(c.sentences[0]) for c in chains]
    if texts != [normalized(w.sentence) for w in walked[1:]]:
        return None
    opened = walked[0].goals
    if opened.foreground[:1] != (goal,):
        return None
    parent = Goals(opened.foreground[1:], opened.background, opened.shelved, opened.given_up)
    goals = [initial]
    for step in walked[1:]:
        left = _without(step.goals, parent)
        if left is None:
            return None
        goals.append(left)
    return tuple(goals) if goals[-1].finished else None


def _without(goals: Goals, parent: Goals) -> Goals | None:
    """The goals the have's proof left, the parent's own taken away (they follow the have's
    in the foreground and fill the background); None if the proof touched them."""
    kept = len(goals.foreground) - len(parent.foreground)
    untouched = (
        kept >= 0
        and goals.foreground[kept:] == parent.foreground
        and (goals.background, goals.shelved, goals.given_up)
        == (parent.background, parent.shelved, parent.given_up)
    )
    return Goals(goals.foreground[:kept], in_proof=True) if untouched else None
