"""Step 5: write the chain of thought of each selected theorem and have sub-theorem.

For a theorem done with step 4 (stage `evaluate`) in step 3's selection (`app.gate`: the
selected theorems and their haves, whatever else `step 4 --all` evaluated), the writer
produces (1) a code explanation per tactic (breaking it down / what happens / summary) from
the goal before it, the tactic and its dependencies with types and docstrings; (2) a proof
explanation (statement / proof) from the statement, the initial goal, the tactic summaries
and the goal diffs; (3) the CoT, in `<think>`, `<search target=…>`, `<script>` and `<have>`
blocks, from all of the above. An
answer missing a section, a CoT that does not parse, or whose scripts and haves are not the
theorem's chains, is asked again, then the theorem fails with the answer kept in `llm_calls`.

With no endpoint configured, the offline writer of `app.cot` writes the same structure from
the evaluation. Stored: `annotations` (kind tactic per proof step, kind proof) and one `cots`
row (blocks as JSON, stage `cot`, done), each with its writer (`offline` or `llm:<model>`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from app import gate, llm
from app.cot import (
    PROOF_SECTIONS,
    TACTIC_SECTIONS,
    Block,
    CotError,
    CotInput,
    CotResult,
    Dependency,
    Step,
    check_cot,
    offline_result,
    parse_cot,
)
from app.db.enums import Stage, Status
from app.db.models import Annotation, Cot, Example, ProofStep, SearchBlock, Theorem
from app.stages import StageSpec, register

Writer = Callable[[CotInput], CotResult]
PARAGRAPHS = "\n\n"


def load(session: Session, row_id: int) -> CotInput:
    """The theorem's statement and evaluation, and its replayed steps in order."""
    fqn, statement, evaluation = session.execute(
        sa.select(Theorem.fqn, Theorem.statement, Theorem.evaluation).where(Theorem.id == row_id)
    ).one()
    evaluation = evaluation or {}
    steps = session.execute(
        sa.select(ProofStep).where(ProofStep.theorem_id == row_id).order_by(ProofStep.index)
    ).scalars()
    return CotInput(
        theorem_id=row_id,
        fqn=fqn,
        statement=statement,
        initial_goal=evaluation.get("initial_goal") or "",
        global_variables=tuple(map(_variable, evaluation.get("global_variables") or ())),
        statement_dependencies=_dependencies(evaluation.get("statement_dependencies")),
        steps=tuple(
            Step(s.index, s.chain, s.goals, s.goal_diff, _dependencies(s.dependencies))
            for s in steps
        ),
    )


def _dependencies(data: list[dict[str, str]] | None) -> tuple[Dependency, ...]:
    return tuple(Dependency.from_json(d) for d in data or ())


def _variable(variable: dict[str, Any] | str) -> str:
    """A section variable as step 4 records it (`{"text": "Variable n : nat.", ...}`)."""
    if isinstance(variable, dict):
        return variable.get("text") or " ".join(variable.get("names") or ())
    return str(variable)


def run(item: CotInput, write: Writer) -> CotResult:
    """Write the theorem's explanations and CoT with the worker's writer."""
    return write(item)


def store(session: Session, row_id: int, result: CotResult) -> None:
    """Upsert the annotations and the CoT; a CoT that changed loses what was derived from it."""
    _store_annotations(session, row_id, result)
    blocks = [block.to_json() for block in result.blocks]
    statement = insert(Cot).values(
        theorem_id=row_id,
        writer=result.writer,
        blocks=blocks,
        stage=Stage.cot,
        status=Status.done,
        attempts=0,
    )
    changed = sa.or_(
        Cot.__table__.c.blocks != statement.excluded.blocks,
        Cot.__table__.c.writer != statement.excluded.writer,
    )
    updated = session.execute(
        statement.on_conflict_do_update(
            index_elements=["theorem_id"],
            set_={
                "writer": statement.excluded.writer,
                "blocks": statement.excluded.blocks,
                "stage": Stage.cot,
                "status": Status.done,
                "attempts": 0,
                "error": None,
                "valid": None,
                "invalid_reason": None,
            },
            where=changed,
        ).returning(Cot.id, sa.text("xmax <> 0"))
    ).first()
    if updated is not None and updated[1]:
        session.execute(sa.delete(SearchBlock).where(SearchBlock.cot_id == updated[0]))
        session.execute(sa.delete(Example).where(Example.cot_id == updated[0]))


def _store_annotations(session: Session, theorem_id: int, result: CotResult) -> None:
    rows = [
        {"kind": "tactic", "step_index": index, "content": note}
        for index, note in result.tactic_notes
    ] + [{"kind": "proof", "step_index": -1, "content": result.proof_note}]
    rows = [row | {"theorem_id": theorem_id, "writer": result.writer} for row in rows]
    statement = insert(Annotation).values(rows)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["theorem_id", "kind", "step_index"],
            set_={"content": statement.excluded.content, "writer": statement.excluded.writer},
        )
    )
    kept = [(row["kind"], row["step_index"]) for row in rows]
    session.execute(
        sa.delete(Annotation).where(
            Annotation.theorem_id == theorem_id,
            sa.tuple_(Annotation.kind, Annotation.step_index).not_in(kept),
        )
    )


def _facts(dependencies: tuple[Dependency, ...]) -> str:
    if not dependencies:
        return "Library facts it uses: none."
    lines = ["Library facts it uses (NAME (kind) : type, then its docstring if known):"]
    for dep in dependencies:
        lines.append(f"- {dep.name} ({dep.kind_word}) : {dep.type or '(type unknown)'}")
        if dep.docstring:
            lines.append(f"  {dep.docstring}")
    return "\n".join(lines)


def _coq(label: str, code: str) -> str:
    return f"{label}:\n```coq\n{code.strip() or '(none)'}\n```"


def tactic_messages(goal: str, step: Step) -> list[dict[str, str]]:
    """The request for one tactic's code explanation."""
    user = PARAGRAPHS.join(
        [_coq("Goal before the step", goal), _coq("Tactic", step.code), _facts(step.dependencies)]
    )
    return [
        {"role": "system", "content": llm.prompt("tactic")},
        {"role": "user", "content": user},
    ]


def _sections(note: str, headings: tuple[str, ...]) -> dict[str, str]:
    """The sections of an explanation (offline, or from the LLM once it passed this check)."""
    return llm.require_sections(note, headings)


def _theorem_header(item: CotInput) -> list[str]:
    return [
        _coq("Statement", item.statement),
        _coq("Initial goal", item.initial_goal),
        _coq("Section variables in scope", "\n".join(item.global_variables)),
    ]


def proof_messages(item: CotInput, notes: dict[int, str]) -> list[dict[str, str]]:
    """The request for the proof explanation: statement, initial goal, tactics, summaries."""
    parts = _theorem_header(item)
    for number, (_, step) in enumerate(item.tactics(), 1):
        summary = _sections(notes[step.index], TACTIC_SECTIONS)["Summary"]
        parts.append(
            PARAGRAPHS.join(
                [
                    f"### Step {number}{' (HAVE)' if step.is_have else ''}",
                    _coq("Tactic", step.code),
                    _facts(step.dependencies),
                    f"Summary: {summary}",
                    _coq("Change of goals", step.goal_diff),
                ]
            )
        )
    return [
        {"role": "system", "content": llm.prompt("proof")},
        {"role": "user", "content": PARAGRAPHS.join(parts)},
    ]


def cot_messages(item: CotInput, notes: dict[int, str], proof_note: str) -> list[dict[str, str]]:
    """The request for the CoT: everything known about the theorem and each step."""
    proof = _sections(proof_note, PROOF_SECTIONS)
    parts = [*_theorem_header(item), f"What the statement says:\n{proof['Statement']}"]
    for number, (goal, step) in enumerate(item.tactics(), 1):
        note = _sections(notes[step.index], TACTIC_SECTIONS)
        marker = " (HAVE: state it in a have block; its proof is done elsewhere)"
        parts.append(
            PARAGRAPHS.join(
                [
                    f"### Step {number}{marker if step.is_have else ''}",
                    _coq("Goal before", goal),
                    _coq("Tactic", step.code),
                    _facts(step.dependencies),
                    f"Explanation:\n{note['Breaking it down']}\n\n{note['What happens']}",
                    _coq("Change of goals", step.goal_diff),
                ]
            )
        )
    parts.append(f"How the proof goes:\n{proof['Proof']}")
    return [
        {"role": "system", "content": llm.prompt("cot")},
        {"role": "user", "content": PARAGRAPHS.join(parts)},
    ]


@dataclass(frozen=True)
class LlmCotWriter:
    """Writes explanations and the CoT through the LLM client, checking every answer."""

    client: llm.LlmClient

    def __call__(self, item: CotInput) -> CotResult:
        notes = {
            step.index: self._explained(tactic_messages(goal, step), TACTIC_SECTIONS)
            for goal, step in item.tactics()
        }
        proof_note = self._explained(proof_messages(item, notes), PROOF_SECTIONS)

        def checked_cot(text: str) -> tuple[Block, ...]:
            try:
                return check_cot(parse_cot(text), item)
            except CotError as error:
                raise llm.BadAnswer(str(error)) from None

        blocks = self.client.ask(cot_messages(item, notes, proof_note), checked_cot)
        writer = self.client.settings.writer
        return CotResult(writer, tuple(notes.items()), proof_note, blocks)

    def _explained(self, messages: list[dict[str, str]], headings: tuple[str, ...]) -> str:
        """An explanation, once it has all its sections."""

        def checked(text: str) -> str:
            llm.require_sections(text, headings)
            return text.strip()

        return self.client.ask(messages, checked)


def writer_for(settings: llm.LlmSettings) -> Writer:
    """The LLM writer when an endpoint is configured, else the offline one."""
    return LlmCotWriter(llm.LlmClient(settings)) if settings.online else offline_result


SPEC = register(
    StageSpec(
        stage=Stage.cot,
        model=Theorem,
        input_stage=Stage.evaluate,
        load=load,
        run=run,
        store=store,
        ready_filter=lambda: Theorem.evaluation.is_not(None),
        gate=gate.theorem_selected,
        resources=llm.default_writer(5, writer_for),
    )
)


command = llm.step_command(
    5, SPEC, writer_for, "chains of thought written", offline_batch=8,
    doc="Write the chains of thought of the selected theorems and their haves (offline without "
        "an endpoint).",
)  # fmt: skip


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
