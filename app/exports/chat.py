"""The `chat` format: one example per line as `{"messages": [system, user, assistant]}`.

The system turn is written from the library (`turns.system_prompt`); the user turn is the
whole proof state when the proof starts (`turns.user_turn`); the assistant turn is the
example's blocks, each written `<kind>\\ncontent\\n</kind>\\n` as the original training code
wrote them.
`ignore_spans` lists the character ranges `[start, end)` of the assistant turn that a trainer
masks (results and blocks an earlier example trained on). Hugging Face `datasets` loads the file
with `load_dataset("json", data_files=...)`; TRL's `SFTTrainer` takes `messages` as a
conversational dataset.
"""

from __future__ import annotations

import re
from typing import Any

from app.cot import Block
from app.exports.examples import TrainingExample
from app.split import Marked

_BLOCK = re.compile(r"<(think|search|script|have|result)>\n(.*?)\n</\1>\n", re.DOTALL)


def render(blocks: tuple[Marked, ...]) -> tuple[str, list[list[int]]]:
    """The assistant turn, and the `[start, end)` ranges of its ignored blocks (adjacent ones
    merged)."""
    text, spans = "", []
    for marked in blocks:
        block = marked.block
        part = f"<{block.kind}>\n{block.content}\n</{block.kind}>\n"
        if marked.ignore:
            if spans and spans[-1][1] == len(text):
                spans[-1][1] += len(part)
            else:
                spans.append([len(text), len(text) + len(part)])
        text += part
    return text, spans


def to_chat(example: TrainingExample, system: str) -> dict[str, Any]:
    """One line of the chat format, with the system prompt of the example's library."""
    assistant, spans = render(example.blocks)
    return {
        "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": example.initial_goal},
            {"role": "assistant", "content": assistant},
        ],
        "ignore_spans": spans,
        "name": example.name,
        "index": example.index,
        "writer": example.writer,
    }


def from_chat(line: dict[str, Any]) -> TrainingExample:
    """An example back from a chat line (blocks from the assistant turn, `ignore` from the
    spans)."""
    messages = {message["role"]: message["content"] for message in line["messages"]}
    assistant = messages["assistant"]
    ignored = [range(start, end) for start, end in line.get("ignore_spans") or []]
    blocks, position = [], 0
    for match in _BLOCK.finditer(assistant):
        if match.start() != position:
            raise ValueError(f"{line.get('name')}: text outside the blocks at {position}")
        ignore = any(match.start() in span for span in ignored)
        blocks.append(Marked(Block(match[1], match[2]), ignore))
        position = match.end()
    if position != len(assistant):
        raise ValueError(f"{line.get('name')}: text outside the blocks at {position}")
    return TrainingExample(
        line["name"],
        line.get("index", 0),
        messages.get("user", ""),
        line.get("writer") or "",
        tuple(blocks),
    )
