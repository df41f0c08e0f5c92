"""`rocqcot export --step N --format seed|jsonl|chat --out PATH`, with a dataset card.

`seed` is the JSON each original script wrote (`seed_steps` for steps 1 to 4; steps 9 and 10
here); `jsonl` and `chat` are for the training examples of steps 9 and 10, one per line. A
file whose content is unchanged is not rewritten.
"""

from __future__ import annotations

import collections
import json
from pathlib import Path

from sqlalchemy.orm import Session

from app.errors import RocqcotError
from app.exports.card import ExportInfo, write_card
from app.exports.chat import to_chat
from app.exports.examples import EXAMPLES, TrainingExample, seed

FORMATS = ("seed", "jsonl", "chat")


def write_export(session: Session, step: int, fmt: str, out: Path) -> ExportInfo:
    """Write step `step` in format `fmt` to `out`, and its card beside it."""
    from app.exports.seed_steps import EXPORTERS, export

    if fmt not in FORMATS:
        raise RocqcotError(f"unknown format {fmt!r}; formats are {', '.join(FORMATS)}")
    if step not in EXAMPLES:
        if step not in EXPORTERS:
            steps = ", ".join(str(n) for n in sorted({*EXPORTERS, *EXAMPLES}))
            raise RocqcotError(f"no export for step {step} (exports exist for steps {steps})")
        if fmt != "seed":
            raise RocqcotError(f"format {fmt} is for training examples: steps 9 and 10")
        info = ExportInfo(step, fmt, out, export(session, step, out))
    else:
        info = _write_examples(session, step, fmt, out)
    write_card(session, info)
    return info


def _write_examples(session: Session, step: int, fmt: str, out: Path) -> ExportInfo:
    examples = EXAMPLES[step](session)
    if fmt == "seed":
        text = json.dumps(seed(step, examples), indent=2, ensure_ascii=False)
    else:
        lines = [to_chat(e) if fmt == "chat" else e.to_json() for e in examples]
        text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    write_if_changed(out, text)
    writers = collections.Counter(example.writer for example in examples)
    theorems = len({example.name for example in examples})
    return ExportInfo(step, fmt, out, len(examples), dict(sorted(writers.items())), theorems)


def write_if_changed(path: Path, text: str) -> None:
    """Write a file unless it already holds exactly this text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


__all__ = ["FORMATS", "ExportInfo", "TrainingExample", "write_export"]
