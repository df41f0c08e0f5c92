"""`rocqcot export --step N --format seed|jsonl|chat --out PATH`, with a dataset card.

`seed` is the JSON each original script wrote (`seed`, whose mapping is field by field);
`jsonl` and `chat` are for the training examples of steps 9 and 10, one per line. Every
example passes the identifier check (`app.identifiers`) or is left out, counted on the card.
A file whose content is unchanged is not rewritten.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from app.errors import RocqcotError
from app.exports import records
from app.exports.card import ExportInfo, write_card
from app.exports.chat import to_chat
from app.exports.examples import TrainingExample
from app.exports.turns import system_prompt, user_turn
from app.identifiers import unintroduced

FORMATS = ("seed", "jsonl", "chat")
EXAMPLES = {9: records.cot_examples, 10: records.split_examples}
"""The steps whose rows are training examples."""


def write_export(session: Session, step: int, fmt: str, out: Path) -> ExportInfo:
    """Write step `step` in format `fmt` to `out`, and its card beside it."""
    from app.exports.seed import SEEDS

    if fmt not in FORMATS:
        raise RocqcotError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    if step not in EXAMPLES:
        if step not in SEEDS:
            steps = ", ".join(str(n) for n in sorted({*SEEDS, *EXAMPLES}))
            raise RocqcotError(f"no export for step {step} (exports exist for steps {steps})")
        if fmt != "seed":
            raise RocqcotError(f"format {fmt} is for training examples: steps 9 and 10")
        exported = SEEDS[step](session)
        write_json(out, exported.data)
        for suffix, side in exported.sides.items():
            write_json(out.with_name(f"{out.stem}_{suffix}.json"), side)
        info = ExportInfo(step, fmt, out, len(exported.data))
    else:
        info = _write_examples(session, step, fmt, out)
    write_card(session, info)
    return info


def training_examples(session: Session, step: int) -> list[TrainingExample]:
    """The examples of step 9 or 10, each with its prompt."""
    return [
        TrainingExample(r.name, r.index, user_turn(r.evaluation), r.writer, r.blocks, r.library)
        for r in EXAMPLES[step](session)
    ]


def checked(
    session: Session, examples: list[TrainingExample]
) -> tuple[list[TrainingExample], dict[str, int]]:
    """The examples that pass the identifier check, and the names the others use that nothing
    introduces, with how many examples each left out."""
    library = records.library_names(session, {example.name for example in examples})
    kept, left_out = [], collections.Counter()
    for example in examples:
        blocks = [marked.block for marked in example.blocks]
        trained = [not marked.ignore for marked in example.blocks]
        problems = unintroduced(
            example.initial_goal, blocks, library.get(example.name, ()), trained
        )
        if problems:
            left_out[f"`{problems[0].name}` not introduced"] += 1
        else:
            kept.append(example)
    return kept, dict(sorted(left_out.items()))


def _write_examples(session: Session, step: int, fmt: str, out: Path) -> ExportInfo:
    from app.exports.seed import examples_seed

    examples, left_out = checked(session, training_examples(session, step))
    if fmt == "seed":
        text = _json_text(examples_seed(session, step, examples).data)
    else:
        prompts = {lib.name: system_prompt(lib) for lib in records.libraries(session)}
        lines = [
            to_chat(e, prompts.get(e.library, system_prompt(None))) if fmt == "chat" else
            e.to_json()
            for e in examples
        ]  # fmt: skip
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    write_if_changed(out, text)
    writers = collections.Counter(example.writer for example in examples)
    theorems = len({example.name for example in examples})
    return ExportInfo(step, fmt, out, len(examples), dict(sorted(writers.items())), theorems,
                      left_out)  # fmt: skip


def _json_text(data: Any) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False)


def write_json(path: Path, data: Any) -> None:
    """Write data as indented JSON (unless the file already holds exactly that)."""
    write_if_changed(path, _json_text(data))


def write_if_changed(path: Path, text: str) -> None:
    """Write a file unless it already holds exactly this text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


__all__ = ["FORMATS", "ExportInfo", "TrainingExample", "write_export"]
