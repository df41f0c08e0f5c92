"""A have's lemma whose proof need not run again: its goals, read from where the have is.

Step 4 states each tagged have as a lemma and evaluates its proof. The proof already runs inside
the parent's, on the have's very goal (Rocq checked that the statement elaborates to it:
`app.have_checks`). When the lemma displays as that goal did (`HaveStatement.goal`), running
the proof again as the lemma's shows what the parent's walk shows, less the parent's own goals:
Rocq is deterministic. So
- a proof of one `by` chain (it closes the goal or fails) leaves no goal (`proved_by`);
- a proof of sentences after the have's (`in_place`) is evaluated inside the parent's walk,
  chain by chain, its goals being the parent's without the goals the have left besides its
  own (`LemmaView`): a tagged block leaves those untouched until its goal is closed (step 2
  checked it), whether it focuses (bullets, braces: they then wait in the background) or not.
  Its own haves are stated there too.
Anything else (a `by` inside the have's sentence followed by more, goals the parent's tactics
did touch) runs as the lemma's, after the parent's `Qed`.

The same display is the same term up to the names of bound variables it does not show (a
binder under a notation): elaborating the statement may name one otherwise, and a later goal
then shows it so in the lemma run alone (`fun x0 : nat => E x0` where the parent has `fun i0`).
The rows keep the parent's names, those the proof was written against: one lemma of 756 in
nine of MathComp's files, against a replay of every lemma.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from app.chains import Chain, normalized
from app.rocq.goals import Goal, Goals

_BY = re.compile(r"\s*by(?![\w'])")


def proved_by(goal: Goal | None, chains: tuple[Chain, ...]) -> tuple[Goals, Goals] | None:
    """The lemma's goals, initial and after its proof, when that proof is one `by` chain and
    the lemma displays `goal`; None otherwise."""
    if goal is None or len(chains) != 1 or chains[0].have is not None:
        return None
    if not _BY.match(chains[0].script):
        return None
    return Goals((goal,), in_proof=True), Goals(in_proof=True)


def in_place(goal: Goal | None, chain: Chain, proof: tuple[Chain, ...]) -> int | None:
    """How many of the parent's `chain` sentences come before the have's proof, when that proof
    (`proof`: its chains) is the chain's last sentences and the lemma displays `goal`: then it
    can run in place. None otherwise (a proof inside the have's sentence, or no known display)."""
    if goal is None or not proof or proved_by(goal, proof) is not None:
        return None
    sentences = [normalized(s) for c in proof for s in c.sentences]
    head = len(chain.sentences) - len(sentences)
    if head < 1 or [normalized(s) for s in chain.sentences[head:]] != sentences:
        return None
    return head


@dataclass(frozen=True)
class LemmaView:
    """The have's lemma as seen in its parent's walk: the parent's goals without `rest`, those
    the have left besides its own (they follow the lemma's in the foreground, or wait in the
    background while the lemma's proof focuses, the parent's own background after them)."""

    rest: Goals

    @classmethod
    def opened(cls, goals: Goals, goal: Goal) -> LemmaView | None:
        """The view from the goals after the have's sentence, if its goal, first, is `goal`."""
        if goals.foreground[:1] != (goal,):
            return None
        return cls(Goals(goals.foreground[1:], goals.background, goals.shelved, goals.given_up))

    def goals(self, goals: Goals) -> Goals | None:
        """The lemma's goals within the parent's; None if the parent's own were touched."""
        rest = self.rest.foreground + self.rest.background
        every = goals.foreground + goals.background
        kept = len(every) - len(rest)
        untouched = (
            kept >= 0
            and every[kept:] == rest
            and (goals.shelved, goals.given_up) == (self.rest.shelved, self.rest.given_up)
        )
        if not untouched:
            return None
        foreground = goals.foreground[:kept]
        return Goals(foreground, every[len(foreground) : kept], in_proof=True)
