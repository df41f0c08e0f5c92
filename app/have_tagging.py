"""Tagging a theorem's haves from its start state, and the rows that record it: step 2's work,
which step 4 also does for a theorem step 2 has not tagged, in the walk that evaluates it (a
trace walks each file once, not once per step).

Text only proposes candidates (`app.haves`); Rocq decides, in the walk of `app.have_rewrite`,
which runs exactly the rewritten sentences (tags are comments), so reaching `Qed.` re-checks the
rewrite.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app.chains import untagged
from app.db.enums import Stage
from app.db.models import Have, Theorem
from app.have_rewrite import HaveWalk, RewriteError
from app.haves import HaveHead, normalise, tactic_count
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, State

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HaveRecord:
    """One tagged have: a row of `haves`."""

    index: int
    tactic: str
    """The have tactic without its proof, e.g. `have x : T`."""
    statement: str
    proof: str
    """What proves the statement: `by tac`, the rest of its chain, or the sentences after it."""


@dataclass(frozen=True)
class Tagged:
    """A theorem's tagged proof, its haves and its size outside them."""

    tagged_proof: str
    haves: tuple[HaveRecord, ...]
    tactics: int


def untouched(proof: str) -> Tagged:
    """The result for a proof without a candidate (`has_candidate`): it never reaches Rocq."""
    return Tagged(proof, (), tactic_count(proof))


def tag(session: RocqSession, fqn: str, proof: str, start: State) -> Tagged:
    """Tag the haves of a proof with a candidate, run from `start` (the state after the
    theorem's statement), and re-check the rewritten proof; raises `RewriteError` or
    `RocqSessionError` if it fails."""
    walk = HaveWalk(session, fqn, proof, start)
    end = walk.rewrite()
    tagged = "".join(walk.out)
    _check(fqn, proof, tagged, start, end)
    haves = tuple(_record(i, head, block, proof) for i, (head, block) in enumerate(walk.haves))
    extra = {"stage": Stage.haves.value, "fqn": fqn, "haves": len(haves)}
    log.info("rewritten with %d haves", len(haves), extra=extra)
    return Tagged(tagged, haves, tactic_count(tagged))


def _check(fqn: str, proof: str, tagged: str, start: State, end: State) -> None:
    """The rewritten proof is the original modulo tags and chain splits, it is what Rocq ran
    from the theorem's start, and Rocq accepted its `Qed.`."""
    if normalise(tagged) != normalise(proof):
        raise RewriteError(f"{fqn}: without its tags the proof is not the original one")
    ran = " ".join(end.steps[len(start.steps) :]).split()
    if ran != untagged(tagged).split():
        raise RewriteError(f"{fqn}: Rocq did not run the rewritten proof as written")
    if end.goals is not None and end.goals.in_proof:
        raise RocqError(f"{fqn}: the proof is still open after its last sentence")


def _record(index: int, head: HaveHead, block: str, proof: str) -> HaveRecord:
    """A `haves` row: the have tactic, its statement, and the rest of its block."""
    tactic = head.head.of(proof)
    rest = block[len(tactic) :].strip()
    if rest[:1] in (";", "."):
        rest = rest[1:].strip()
    return HaveRecord(index, tactic, head.statement, rest)


def store_tags(session: Session, theorem_id: int, result: Tagged) -> None:
    """Write the tagged proof, its size and one `haves` row per tag (upserts; rows of a
    previous run with more haves are dropped). `proof` itself is never touched."""
    session.execute(
        sa.update(Theorem)
        .where(Theorem.id == theorem_id)
        .values(tagged_proof=result.tagged_proof, tactics=result.tactics)
    )
    session.execute(
        sa.delete(Have).where(Have.theorem_id == theorem_id, Have.index >= len(result.haves))
    )
    if not result.haves:
        return
    rows = [dataclasses.asdict(have) | {"theorem_id": theorem_id} for have in result.haves]
    statement = insert(Have).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["theorem_id", "index"],
            set_={key: statement.excluded[key] for key in ("tactic", "statement", "proof")},
        )
    )
