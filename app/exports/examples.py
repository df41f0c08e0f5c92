"""The training examples of steps 9 and 10, read from the database or from an export file.

Step 9's example of a CoT is the whole CoT with its result blocks (results marked `ignore`);
step 10's are the stored splits. Both come out in library order (file, then position, the
sub-theorems of a have after their theorem), so the same database always exports the same
bytes.
"""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.models import Cot, Example, SourceFile, Theorem
from app.steps import step_9
from app.steps.step_10 import Marked


@dataclass(frozen=True)
class TrainingExample:
    """One example: the theorem's initial goal and the blocks the prover learns to write."""

    name: str
    """The theorem's (or have sub-theorem's) fully qualified name."""
    index: int
    """Its place among the examples of its CoT."""
    initial_goal: str
    writer: str
    """Who wrote the CoT: `offline` or `llm:<model>`."""
    blocks: tuple[Marked, ...]

    def to_json(self) -> dict[str, Any]:
        """As one line of the `jsonl` format."""
        return {
            "name": self.name,
            "index": self.index,
            "initial_goal": self.initial_goal,
            "writer": self.writer,
            "blocks": [marked.to_json() for marked in self.blocks],
        }


def _order() -> list[Any]:
    return [SourceFile.dependency_order, Theorem.byte_start, Theorem.fqn]


def cot_examples(session: Session) -> list[TrainingExample]:
    """Step 9: each kept CoT as one example, with its result blocks."""
    top_k = step_9.job_params(session).top_k
    cots = {cot.cot_id: cot for cot in step_9.load_cots(session, Cot.valid.is_(True))}
    ordered = session.execute(
        sa.select(Cot.id)
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .where(Cot.id.in_(list(cots)))
        .order_by(*_order())
    ).scalars()
    examples = []
    for cot_id in ordered:
        cot = cots[cot_id]
        blocks = step_9.filtered_blocks(cot, top_k)
        marked = tuple(Marked(block, block.kind == "result") for block in blocks)
        examples.append(TrainingExample(cot.name, 0, cot.initial_goal, cot.writer, marked))
    return examples


def split_examples(session: Session) -> list[TrainingExample]:
    """Step 10: the stored examples."""
    rows = session.execute(
        sa.select(Theorem.fqn, Example.index, Theorem.evaluation, Cot.writer, Example.blocks)
        .join(Cot, Cot.id == Example.cot_id)
        .join(Theorem, Theorem.id == Cot.theorem_id)
        .join(SourceFile, SourceFile.id == Theorem.file_id)
        .where(Cot.valid.is_(True))
        .order_by(*_order(), Example.index)
    )
    return [
        TrainingExample(
            fqn,
            index,
            (evaluation or {}).get("initial_goal") or "",
            writer,
            tuple(Marked.from_json(block) for block in blocks),
        )
        for fqn, index, evaluation, writer, blocks in rows
    ]


EXAMPLES = {9: cot_examples, 10: split_examples}
"""The steps whose rows are training examples."""


def seed(step: int, examples: list[TrainingExample]) -> list[dict[str, Any]]:
    """The original scripts' JSON: `[{name, blocks, initial_goal}]`, step 10's blocks with
    `ignore`."""
    entries = []
    for example in examples:
        blocks = [
            marked.to_json() if step == 10 else marked.block.to_json() for marked in example.blocks
        ]
        entries.append(
            {"name": example.name, "blocks": blocks, "initial_goal": example.initial_goal}
        )
    return entries


def read_examples(path: Path) -> list[TrainingExample]:
    """The examples of an export file in any format (seed, jsonl or chat)."""
    from app.exports.chat import from_chat

    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        seen: collections.Counter[str] = collections.Counter()
        examples = []
        for entry in json.loads(text):
            examples.append(_from_seed(entry, seen[entry["name"]]))
            seen[entry["name"]] += 1
        return examples
    return [from_chat(line) if "messages" in line else _from_line(line) for line in _lines(text)]


def _lines(text: str) -> Iterator[dict[str, Any]]:
    for line in text.splitlines():
        if line.strip():
            yield json.loads(line)


def _from_seed(entry: dict[str, Any], index: int) -> TrainingExample:
    """A seed entry; a step-9 seed has no `ignore`: its results are the ignored blocks."""
    blocks = tuple(
        Marked.from_json(b | {"ignore": b.get("ignore", b["kind"] == "result")})
        for b in entry["blocks"]
    )
    return TrainingExample(entry["name"], index, entry.get("initial_goal") or "", "", blocks)


def _from_line(entry: dict[str, Any]) -> TrainingExample:
    blocks = tuple(Marked.from_json(block) for block in entry["blocks"])
    return TrainingExample(
        entry["name"],
        entry.get("index", 0),
        entry.get("initial_goal") or "",
        entry.get("writer") or "",
        blocks,
    )
