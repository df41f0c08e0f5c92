"""Training examples (steps 9 and 10) as the exports write them and `verify` reads them back
from a file in any format (seed, jsonl or chat)."""

from __future__ import annotations

import collections
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.split import Marked


@dataclass(frozen=True)
class TrainingExample:
    """One example: the prompt (the whole proof state) and the blocks the prover learns to
    write."""

    name: str
    """The theorem's (or have sub-theorem's) fully qualified name."""
    index: int
    """Its place among the examples of its CoT."""
    initial_goal: str
    """The user turn: the proof state when the proof starts, section variables included."""
    writer: str
    """Who wrote the CoT: `offline` or `llm:<model>`."""
    blocks: tuple[Marked, ...]
    library: str = ""
    """The library of the theorem (its system prompt); empty when read from a file."""

    def to_json(self) -> dict[str, Any]:
        """As one line of the `jsonl` format."""
        return {
            "name": self.name,
            "index": self.index,
            "initial_goal": self.initial_goal,
            "writer": self.writer,
            "blocks": [marked.to_json() for marked in self.blocks],
        }


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
    """A seed entry; a step-9 seed has no `ignore`: its results are the ignored blocks. A
    target is `{name, force_result, fqn}`."""
    blocks = []
    for block in entry["blocks"]:
        target = block.get("target")
        if isinstance(target, dict):
            target = target.get("fqn") or target.get("name")
        data = block | {"target": target, "ignore": block.get("ignore", block["kind"] == "result")}
        blocks.append(Marked.from_json(data))
    return TrainingExample(entry["name"], index, entry.get("initial_goal") or "", "", tuple(blocks))


def _from_line(entry: dict[str, Any]) -> TrainingExample:
    blocks = tuple(Marked.from_json(block) for block in entry["blocks"])
    return TrainingExample(
        entry["name"],
        entry.get("index", 0),
        entry.get("initial_goal") or "",
        entry.get("writer") or "",
        blocks,
    )
