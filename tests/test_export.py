"""Exports of steps 9 and 10 in the seed, jsonl and chat formats, their dataset cards, and the
chat dataset as Hugging Face `datasets` loads it; on rows inserted as steps 4, 5 and 8 write
them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from app.db import engine as db
from app.errors import RocqcotError
from app.exports import write_export
from app.exports.card import card_path
from app.exports.chat import render, to_chat
from app.exports.examples import read_examples
from app.results import filtered_blocks
from app.split import split_compress
from app.steps import step_9, step_10
from tests import original_readers
from tests.rows import add_file
from tests.test_step_9_10 import GOAL, TOP_K, add_cot, cot_data


@pytest.fixture
def split(migrated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """Two kept CoTs, split; the folder to export to."""
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        add_cot(session, file_id, "lib.a.foo")
        add_cot(session, file_id, "lib.a.bar")
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    step_10.command()
    capsys.readouterr()
    return tmp_path


def export(step: int, fmt: str, out: Path):
    with db.session_factory()() as session:
        return write_export(session, step, fmt, out)


def test_seed_formats_are_the_original_scripts(split: Path) -> None:
    assert export(9, "seed", split / "step_9.json").entries == 2
    cots = json.loads((split / "step_9.json").read_text())
    assert [cot["name"] for cot in cots] == ["lib.a.bar", "lib.a.foo"]  # library order
    assert set(cots[0]) == {"name", "blocks", "initial_goal"} and cots[0]["initial_goal"] == GOAL
    expected = [block.to_json() for block in filtered_blocks(cot_data(), TOP_K)]
    for block in expected:
        if "target" in block:
            fqn = block["target"]
            block["target"] = {"name": fqn.rpartition(".")[2], "force_result": False, "fqn": fqn}
    assert cots[0]["blocks"] == expected
    assert original_readers.read_examples(cots, split=False) == 2 * len(expected)

    assert export(10, "seed", split / "step_10.json").entries == 12
    examples = json.loads((split / "step_10.json").read_text())
    assert all(set(block) >= {"kind", "content", "ignore"} for block in examples[0]["blocks"])
    assert [e["name"] for e in examples] == ["lib.a.bar"] * 6 + ["lib.a.foo"] * 6
    assert original_readers.read_examples(examples, split=True) > 12
    original_readers.no_nulls(examples)


def test_jsonl_has_one_example_per_line(split: Path) -> None:
    export(10, "jsonl", split / "examples.jsonl")
    lines = (split / "examples.jsonl").read_text().splitlines()
    first = json.loads(lines[0])
    assert len(lines) == 12 and first["index"] == 0 and first["writer"] == "offline"
    assert first["blocks"][-1] == {"kind": "search", "content": "kept query 1",
                                   "target": "lib.a.addnA", "ignore": False}  # fmt: skip


def test_chat_lines_mark_what_a_trainer_masks(split: Path) -> None:
    export(10, "chat", split / "chat.jsonl")
    lines = [json.loads(line) for line in (split / "chat.jsonl").read_text().splitlines()]
    last = lines[5]
    roles = [message["role"] for message in last["messages"]]
    assert roles == ["system", "user", "assistant"]
    system = last["messages"][0]["content"]
    assert system.startswith("You are a Rocq prover working with the library lib (logical path")
    assert "without SSReflect" in system and "MathComp" not in system
    assert last["messages"][1]["content"] == GOAL
    assistant = last["messages"][2]["content"]
    assert assistant.endswith("<script>\nby rewrite addnC h.\n</script>\n")
    (start, end), *_ = last["ignore_spans"]
    assert start == 0 and assistant[end:].startswith("<think>\nCommutativity closes it.")
    assert "target=" not in assistant  # the prover never sees the target


def test_render_merges_adjacent_ignored_blocks() -> None:
    examples = split_compress(filtered_blocks(cot_data(), TOP_K))
    text, spans = render(examples[2])
    ignored = "".join(text[start:end] for start, end in spans)
    assert spans == [[0, len(ignored)]] and "<result>" in ignored
    assert not text[len(ignored) :].count("<result>")


@pytest.mark.parametrize("fmt", ["seed", "jsonl", "chat"])
def test_every_format_reads_back_to_the_same_examples(split: Path, fmt: str) -> None:
    out = split / f"examples.{fmt}"
    export(10, fmt, out)
    examples = read_examples(out)
    expected = split_compress(filtered_blocks(cot_data(), TOP_K))
    foo = [example for example in examples if example.name == "lib.a.foo"]
    assert [e.index for e in foo] == list(range(6))
    strip = {"seed": False, "jsonl": False, "chat": True}[fmt]  # chat has no targets
    for example, blocks in zip(foo, expected, strict=True):
        wanted = [(m.block.kind, m.block.content, m.ignore) for m in blocks]
        got = [(m.block.kind, m.block.content, m.ignore) for m in example.blocks]
        assert got == wanted
        assert strip or [m.block.target for m in example.blocks] == [m.block.target for m in blocks]


def test_the_chat_dataset_loads_with_hugging_face_datasets(split: Path) -> None:
    import datasets  # a test requirement (pyproject's `test` extra): missing, the test fails

    export(10, "chat", split / "train.jsonl")
    loaded = datasets.load_dataset(
        "json", data_files=str(split / "train.jsonl"), split="train", cache_dir=str(split / "hf")
    )
    assert loaded.num_rows == 12
    assert loaded[0]["messages"][2]["role"] == "assistant"
    assert loaded[5]["ignore_spans"][0][0] == 0
    system = loaded[0]["messages"][0]["content"]
    assert to_chat(read_examples(split / "train.jsonl")[0], system) == loaded[0]


def test_a_card_goes_next_to_every_export(split: Path) -> None:
    info = export(10, "chat", split / "train.jsonl")
    card = card_path(split / "train.jsonl").read_text()
    assert card_path(split / "train.jsonl").name == "train_card.md"
    facts = yaml.safe_load(card.split("---")[1])
    export_facts = {"step": 10, "format": "chat", "file": "train.jsonl", "entries": 12}
    assert facts["export"] == export_facts | {
        "theorems": 2,
        "writers": {"offline": 12},
        "left_out": {},
    }
    assert facts["cots"]["by_writer"] == {"offline": {"kept": 2}}
    assert facts["libraries"][0]["name"] == "lib" and facts["versions"]["rocqcot"]
    assert "12 entries" in card and info.theorems == 2

    export(1, "seed", split / "theorems.json")
    assert "step 1, seed" in card_path(split / "theorems.json").read_text()


def test_an_unchanged_export_is_not_rewritten(split: Path) -> None:
    out = split / "train.jsonl"
    export(10, "chat", out)
    before = out.stat().st_mtime_ns
    export(10, "chat", out)
    assert out.stat().st_mtime_ns == before


def test_bad_format_or_step_is_a_clear_error(split: Path) -> None:
    with pytest.raises(RocqcotError, match="format chat is for training examples"):
        export(1, "chat", split / "x.jsonl")
    with pytest.raises(RocqcotError, match="unknown format 'csv'"):
        export(9, "csv", split / "x.csv")
    with pytest.raises(RocqcotError, match=r"no export for step 11 \(exports exist for steps 1,"):
        export(11, "seed", split / "x.json")
