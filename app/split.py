"""Splitting a CoT with its result blocks into training examples, as the original
`split_compress` did (pure).

A CoT with its result blocks is cut before each result: an example is everything the prover
wrote up to an action (search, script or have), and the environment answers it next. Each
example keeps every block the prover wrote before, but only the latest result of each kind
(search, or Rocq's answer to a script or a have), so a long proof does not carry every earlier
answer. Results are always marked `ignore` (they come from Rocq or the retrieval engine, not
from the prover), and so is every block an earlier example already trained on: a trainer masks
them, and each block is learned once, in the example where it is new.

(The original counted a have's result as the kind of the action before it, a search; here it
is Rocq's answer, like a script's.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from app.cot import Block


@dataclass(frozen=True)
class Marked:
    """A block of an example, and whether a trainer masks it."""

    block: Block
    ignore: bool

    def to_json(self) -> dict[str, Any]:
        return self.block.to_json() | {"ignore": self.ignore}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Marked:
        return cls(Block.from_json(data), bool(data.get("ignore")))


def result_kind(blocks: Sequence[Block], index: int) -> str:
    """What a result answers: `search`, or `script` for Rocq's answer to a script or a have."""
    for block in reversed(blocks[:index]):
        if block.kind == "search":
            return "search"
        if block.kind in ("script", "have"):
            return "script"
    return "script"


def split_compress(blocks: Sequence[Block]) -> list[tuple[Marked, ...]]:
    """The examples of a CoT with result blocks: one ending before each result (and one with
    the whole CoT when it does not end with a result)."""
    cuts = [i for i, block in enumerate(blocks) if block.kind == "result"]
    if blocks and blocks[-1].kind != "result":
        cuts.append(len(blocks))
    examples, trained = [], 0
    for cut in cuts:
        if not any(block.kind != "result" for block in blocks[:cut]):
            continue
        examples.append(_example(blocks, cut, trained))
        trained = cut
    return examples


def _example(blocks: Sequence[Block], cut: int, trained: int) -> tuple[Marked, ...]:
    """The blocks before `cut`, with the latest result of each kind; blocks before `trained`
    (in an earlier example) and results are ignored."""
    latest: dict[str, int] = {}
    for index in range(cut):
        if blocks[index].kind == "result":
            latest[result_kind(blocks, index)] = index
    kept = set(latest.values())
    return tuple(
        Marked(block, block.kind == "result" or index < trained)
        for index, block in enumerate(blocks[:cut])
        if block.kind != "result" or index in kept
    )
