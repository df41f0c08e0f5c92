"""The seed exports of steps 1 to 4: each step's rows in the original scripts' JSON format,
so downstream training code keeps working."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Library, ProofStep, SourceFile, Theorem
from app.dictionary import export_dictionary
from app.errors import RocqcotError


def seed_theorems(
    session: Session, selected: bool = False, tagged: bool = False
) -> dict[str, dict[str, Any]]:
    """Step 1's seed format: `{qualid: {filepath_prefix, filepath, position, statement, proof}}`;
    with `tagged`, step 2's: every theorem with its tagged proof (the original where step 2 did
    not rewrite it); with `selected`, step 3's: the selected theorems only, with their tagged
    proofs."""
    query = (
        sa.select(Theorem, SourceFile.path, Library.output_path)
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(Theorem.parent_id.is_(None))
        .order_by(SourceFile.dependency_order, Theorem.byte_start)
    )
    rows = session.execute(query.where(Theorem.selected) if selected else query)
    return {
        theorem.fqn: {
            "filepath_prefix": output_path.rstrip("/") + "/",
            "filepath": path,
            "position": {"line": theorem.line, "character": theorem.character},
            "statement": theorem.statement,
            "proof": ((selected or tagged) and theorem.tagged_proof) or theorem.proof,
        }
        for theorem, path, output_path in rows
    }


def have_errors(session: Session) -> dict[str, str]:
    """Step 2's failures, `{qualid: reason}`: the theorems whose rewrite did not re-check."""
    rows = session.execute(
        sa.select(Theorem.fqn, Theorem.error)
        .where(
            Theorem.parent_id.is_(None),
            Theorem.stage == Stage.haves,
            Theorem.status == Status.failed,
        )
        .order_by(Theorem.fqn)
    )
    return {fqn: error or "" for fqn, error in rows}


def seed_evaluations(session: Session) -> dict[str, dict[str, Any]]:
    """Step 4's seed format: `{qualid: {statement, global_variables, initial_goal,
    initial_goal_with_gvars, statement_dependencies, statement_notations, evaluation: [{chain,
    dependencies, goals, goals_with_gvars, goal_diff}]}}` for every theorem and have
    sub-theorem evaluated, in library order."""
    evaluated = (
        sa.select(Theorem.id, Theorem.fqn, Theorem.statement, Theorem.evaluation)
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .where(Theorem.stage == Stage.evaluate, Theorem.status == Status.done)
        .order_by(SourceFile.dependency_order, Theorem.byte_start, Theorem.id)
    )
    seed, by_id = {}, {}
    for theorem_id, fqn, statement, evaluation in session.execute(evaluated):
        keys = ("global_variables", "initial_goal", "initial_goal_with_gvars")
        keys += ("statement_dependencies", "statement_notations")
        entry = {"statement": statement} | {key: (evaluation or {}).get(key) for key in keys}
        seed[fqn] = by_id[theorem_id] = entry | {"evaluation": []}
    steps = sa.select(ProofStep).order_by(ProofStep.theorem_id, ProofStep.index)
    for step in session.execute(steps).scalars():
        if step.theorem_id in by_id:
            by_id[step.theorem_id]["evaluation"].append(
                {"chain": step.chain, "dependencies": step.dependencies, "goals": step.goals,
                 "goals_with_gvars": step.goals_with_gvars, "goal_diff": step.goal_diff}
            )  # fmt: skip
    return seed


EXPORTERS: dict[int, Callable[[Session], Any]] = {
    1: seed_theorems,
    2: lambda session: seed_theorems(session, tagged=True),
    3: lambda session: seed_theorems(session, selected=True),
    4: seed_evaluations,
}

SIDE_EXPORTS: dict[int, dict[str, Callable[[Session], Any]]] = {
    2: {"errors": have_errors},
    4: {"dictionary": export_dictionary},
}
"""Files written next to a step's export, as `<name>_<suffix>.json`."""


def export(session: Session, step: int, out: Path) -> int:
    """Write step `step`'s export to `out`; returns the number of entries."""
    exporter = EXPORTERS.get(step)
    if exporter is None:
        built = ", ".join(str(n) for n in sorted(EXPORTERS))
        raise RocqcotError(f"no export for step {step} yet (exports exist for steps {built})")
    data = exporter(session)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    for suffix, side in SIDE_EXPORTS.get(step, {}).items():
        extra = json.dumps(side(session), indent=2, ensure_ascii=False)
        out.with_name(f"{out.stem}_{suffix}.json").write_text(extra, encoding="utf-8")
    return len(data)
