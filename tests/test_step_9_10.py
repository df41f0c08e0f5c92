"""Steps 9 and 10: judging CoTs and inserting results (pure, then on rows inserted as steps 4,
5 and 8 write them, in the real PostgreSQL), and splitting them into examples as the original
`split_compress` did."""

from __future__ import annotations

import copy
import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.cot import Block, Step
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Cot, Example, Job, LibraryObject, ProofStep, SearchBlock, Theorem
from app.db.reprocess import reprocess
from app.dictionary import ORDER_STRIDE
from app.results import FINISHED, CotData, SearchRow, Verdict, filtered_blocks, judge, load_cots
from app.split import Marked, split_compress
from app.steps import step_9, step_10
from tests.rows import add_file

GOAL = "n : nat\n============================\nn + 0 + 0 = n"
AFTER_REWRITE = "n : nat\n============================\nn + 0 = n"
AFTER_HAVE = "n : nat\nh : n + 0 = n\n============================\nn + 0 = n"
STEPS = [
    ("Proof.", GOAL),
    ("rewrite addnA.", AFTER_REWRITE),
    ("(*<have>*) have h : n + 0 = n (*proof*) (*</have>*).", AFTER_HAVE),
    ("by rewrite addnC h.", "No more goals."),
    ("Qed.", ""),
]
BLOCKS = [
    {"kind": "think", "content": "I have to prove n + 0 + 0 = n."},
    {"kind": "search", "content": "addition is associative", "target": "lib.a.addnA"},
    {"kind": "think", "content": "Associativity regroups the sum."},
    {"kind": "script", "content": "rewrite addnA."},
    {"kind": "think", "content": "An intermediate fact would help."},
    {"kind": "search", "content": "a fact stating that n + 0 = n"},
    {"kind": "think", "content": "The library has no such fact: I state it."},
    {"kind": "have", "content": "have h : n + 0 = n."},
    {"kind": "search", "content": "addition commutes", "target": "lib.a.addnC"},
    {"kind": "think", "content": "Commutativity closes it."},
    {"kind": "script", "content": "by rewrite addnC h."},
]
TOP_K = 3


def hit(name: str) -> dict[str, Any]:
    """A search result as steps 7 and 8 store it."""
    return {
        "fqn": f"lib.a.{name}", "kind": "thm", "name": name,
        "fullname": f"Lemma {name} : statement of {name}.",
        "docstring": f"What {name} says.", "score": 0.5,
    }  # fmt: skip


def row(index: int, target: str | None, names: list[str], rank: int | None, **kw) -> SearchRow:
    query = f"kept query {index}"
    results = tuple(hit(name) for name in names)
    return SearchRow(index, query, target, rank, results, kw.get("forced", False), None)


SEARCHES = (
    row(1, "lib.a.addnA", ["addnA", "addnC", "muln0"], 1),
    row(5, None, ["muln0", "addnC", "subnn"], None),
    row(8, "lib.a.addnC", ["subnn", "addnC", "muln0"], 2),
)


def cot_data(blocks: list[dict[str, Any]] = BLOCKS, searches=SEARCHES) -> CotData:
    steps = tuple(Step(i, chain, goals, "", ()) for i, (chain, goals) in enumerate(STEPS))
    return CotData(
        cot_id=1, name="lib.a.foo", top_level=True, writer="offline", initial_goal=GOAL,
        blocks=tuple(Block.from_json(b) for b in blocks), steps=steps, searches=searches,
    )  # fmt: skip


# --- Step 9, pure ------------------------------------------------------------------------------


def test_a_kept_cot_gets_a_result_after_every_action() -> None:
    blocks = filtered_blocks(cot_data(), TOP_K)
    kinds = [block.kind for block in blocks]
    assert kinds == [
        "think", "search", "result", "think", "script", "result", "think", "search", "result",
        "think", "have", "result", "search", "result", "think", "script", "result",
    ]  # fmt: skip
    assert blocks[1] == Block("search", "kept query 1", "lib.a.addnA")
    assert blocks[2].content.startswith(
        "1. Lemma addnA : statement of addnA.\nWhat addnA says.\n\n2. Lemma addnC"
    )
    assert blocks[2].content.count("\n\n") == TOP_K - 1
    assert blocks[5].content == f"Remaining goals:\n{AFTER_REWRITE}"
    assert blocks[11].content == f"The have is proved.\nRemaining goals:\n{AFTER_HAVE}"
    assert blocks[-1].content == FINISHED
    assert judge(cot_data(), TOP_K) == Verdict(1, True, None)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b, s: (b[:9] + b[10:], s), "no think after a search: search block 9"),
        (lambda b, s: (b, (s[0], s[1], row(8, "lib.a.addnC", ["subnn", "muln0"], 2))),
         "too few results: search block 9 has 2 available, fewer than 3"),
        (lambda b, s: (b, (s[0], s[1], row(8, "lib.a.addnC", ["a", "b", "c"], 7))),
         "target not found: lib.a.addnC is in no search's top 3 (kept query: rank 7)"),
        (lambda b, s: ([*b[:8], {**b[8], "target": "lib.a.addnA"}, *b[9:]],
                       (s[0], s[1], row(8, "lib.a.addnA", ["addnA", "b", "c"], 1))),
         "target found twice: lib.a.addnA by search blocks 2 and 9"),
        (lambda b, s: ([*b[:3], {"kind": "script", "content": "rewrite addnC."}, *b[4:]], s),
         "code not the proof's: script block 4"),
    ],
)  # fmt: skip
def test_invalid_cots_keep_their_reason(change, reason: str) -> None:
    blocks, searches = change(list(BLOCKS), SEARCHES)
    verdict = judge(cot_data(blocks, searches), TOP_K)
    assert not verdict.valid and verdict.reason.startswith(reason), verdict.reason


def test_a_target_whose_docstring_step_6_wrote_comes_first_and_counts_as_found() -> None:
    missed = row(8, "lib.a.addnC", ["subnn", "muln0", "addnA", "addnC"], 4, forced=True)
    blocks = filtered_blocks(cot_data(searches=(SEARCHES[0], SEARCHES[1], missed)), TOP_K)
    assert blocks[13].content.startswith("1. Lemma addnC") and "4. " not in blocks[13].content
    unavailable = dataclasses.replace(missed, rank=None)
    verdict = judge(cot_data(searches=(SEARCHES[0], SEARCHES[1], unavailable)), TOP_K)
    assert verdict.reason.startswith("target not found: lib.a.addnC")


def test_a_smaller_k_cuts_the_results() -> None:
    blocks = filtered_blocks(cot_data(), 2)
    assert "3. " not in blocks[2].content and "2. Lemma addnC" in blocks[2].content
    assert judge(cot_data(), 1).reason.startswith("target not found: lib.a.addnC")


def test_proof_length_counts_scripts_of_top_level_cots_without_haves() -> None:
    assert cot_data().proof_length is None
    plain = [b for b in BLOCKS if b["kind"] != "have"]
    assert cot_data(plain).proof_length == 2
    assert dataclasses.replace(cot_data(plain), top_level=False).proof_length is None


# --- Step 10, pure ------------------------------------------------------------------------------


def original_split(blocks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The original `split_compress` (its list and flag semantics, shared dicts included),
    as the reference: a result answers the last search or script."""
    without_search, without_script, without_result, last = [], [], [], []
    kind, splits = "", []
    for block in blocks:
        block["ignore"] = block["kind"] == "result"
        if block["kind"] in ("search", "script"):
            kind = block["kind"]
        if block["kind"] != "result":
            for kept in (without_script, without_search, without_result, last):
                kept.append(block)
            continue
        if last:
            splits.append(copy.deepcopy(last))
            for kept in (*without_search, *without_script, *last):
                kept["ignore"] = True
        if kind == "search":
            without_script, last = [*without_result, block], [*without_search, block]
        else:
            without_search, last = [*without_result, block], [*without_script, block]
    if blocks[-1]["kind"] != "result":
        splits.append(last)
    return splits


def random_cot(rng: random.Random) -> list[dict[str, Any]]:
    blocks = [{"kind": "think", "content": "t0"}]
    for number in range(rng.randint(1, 8)):
        action = rng.choice(["search", "script"])
        blocks.append({"kind": action, "content": f"{action}{number}"})
        if rng.random() < 0.9:
            blocks.append({"kind": "result", "content": f"r{number}"})
        if rng.random() < 0.7:
            blocks.append({"kind": "think", "content": f"t{number + 1}"})
    return blocks


def test_split_compress_is_the_originals() -> None:
    rng = random.Random(7)
    for _ in range(300):
        blocks = random_cot(rng)
        ours = split_compress([Block(b["kind"], b["content"]) for b in blocks])
        reference = original_split(copy.deepcopy(blocks))
        assert [[m.to_json() for m in example] for example in ours] == reference


def test_examples_keep_the_latest_result_of_each_kind_and_mask_what_was_trained() -> None:
    blocks = filtered_blocks(cot_data(), TOP_K)
    examples = split_compress(blocks)
    assert len(examples) == 6  # one per action: three searches, two scripts, a have
    last = examples[-1]
    assert last[-1].block == Block("script", "by rewrite addnC h.") and not last[-1].ignore
    kept = [m.block.content for m in last if m.block.kind == "result"]
    assert kept == [blocks[11].content, blocks[13].content]  # the have's and the last search's
    assert all(m.ignore for m in last[:-2]) and not last[-2].ignore  # the think before it
    for example in examples:
        assert all(m.ignore for m in example if m.block.kind == "result")
    # Every block the prover wrote is learned exactly once.
    learned = [m.block for example in examples for m in example if not m.ignore]
    assert learned == [b for b in blocks if b.kind != "result"]


# --- Steps 9 and 10 on the database ---------------------------------------------------------------


def add_cot(session, file_id: int, fqn: str = "lib.a.foo", searches=SEARCHES) -> int:
    """A selected theorem evaluated by step 4, its CoT (step 5) and its search blocks done
    with step 8."""
    theorem = Theorem(
        fqn=fqn, file_id=file_id, kind="Lemma", statement="Lemma foo n : n + 0 + 0 = n.",
        proof="Proof. rewrite addnA. have h : n + 0 = n by []. by rewrite addnC h. Qed.",
        stage=Stage.cot, status=Status.done, evaluation={"initial_goal": GOAL}, byte_start=10,
        selected=True,
    )  # fmt: skip
    session.add(theorem)
    session.flush()
    for index, (chain, goals) in enumerate(STEPS):
        session.add(ProofStep(theorem_id=theorem.id, index=index, chain=chain, goals=goals,
                              goals_with_gvars=goals, goal_diff=""))  # fmt: skip
    cot = Cot(theorem_id=theorem.id, writer="offline", blocks=BLOCKS, stage=Stage.cot,
              status=Status.done)  # fmt: skip
    session.add(cot)
    session.flush()
    for search in searches:
        session.add(SearchBlock(
            cot_id=cot.id, block_index=search.block_index, target_fqn=search.target,
            query=search.query, target_rank=search.rank, results=list(search.results),
            stage=Stage.best_query, status=Status.done,
        ))  # fmt: skip
    return cot.id


@pytest.fixture
def cots(migrated: str) -> dict[str, int]:
    """Two CoTs ready for step 9 (one whose target is missed) and one still searching."""
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        missed = (SEARCHES[0], SEARCHES[1], row(8, "lib.a.addnC", ["a", "b", "c"], 9))
        ids = {
            "good": add_cot(session, file_id),
            "missed": add_cot(session, file_id, "lib.a.bar", missed),
            "waiting": add_cot(session, file_id, "lib.a.baz"),
        }
        session.execute(
            sa.update(SearchBlock)
            .where(SearchBlock.cot_id == ids["waiting"], SearchBlock.block_index == 8)
            .values(stage=Stage.repair, status=Status.pending)
        )
        return ids


def verdicts() -> dict[int, tuple[Stage, Status, bool | None, str | None]]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Cot.id, Cot.stage, Cot.status, Cot.valid,
                                         Cot.invalid_reason))  # fmt: skip
        return {cot_id: tuple(rest) for cot_id, *rest in rows}


def test_step_9_judges_the_ready_cots_and_waits_for_the_others(
    cots: dict[str, int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    step_9.command(top_k=TOP_K, plot_hist=True, out_dir=tmp_path)
    out = capsys.readouterr().out
    assert "2 CoTs judged with top 3, 1 kept (invalid: 1 target not found)" in out
    assert "1 waiting for their searches" in out and "1 of 2 CoTs kept in all" in out
    found = verdicts()
    assert found[cots["good"]] == (Stage.filter, Status.done, True, None)
    assert found[cots["missed"]][2] is False
    assert found[cots["missed"]][3].startswith("target not found: lib.a.addnC")
    assert found[cots["waiting"]][:3] == (Stage.cot, Status.done, None)
    assert (tmp_path / step_9.HIST_FILE).read_bytes().startswith(b"\x89PNG")

    step_9.command(top_k=TOP_K, out_dir=tmp_path)  # the waiting CoT still waits: nothing new
    assert verdicts() == found
    with db.session_factory().begin() as session:
        session.execute(sa.update(SearchBlock).values(stage=Stage.best_query, status=Status.done))
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    assert "1 CoTs judged" in capsys.readouterr().out.splitlines()[-1]
    assert verdicts()[cots["waiting"]][2] is True


def test_a_new_top_k_judges_every_cot_again(
    cots: dict[str, int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    step_10.command()
    step_9.command(top_k=1, out_dir=tmp_path)
    assert "2 CoTs judged with top 1, 0 kept" in capsys.readouterr().out
    assert all(valid is not True for *_, valid, _ in verdicts().values())
    with db.session_factory()() as session:
        assert session.execute(sa.select(sa.func.count()).select_from(Example)).scalar() == 0
        assert session.execute(sa.select(Job.params["top_k"])).scalar() == 1


def stored_examples(cot_id: int) -> list[list[dict[str, Any]]]:
    with db.session_factory()() as session:
        return list(
            session.execute(
                sa.select(Example.blocks).where(Example.cot_id == cot_id).order_by(Example.index)
            ).scalars()
        )


def test_step_10_stores_the_examples_of_kept_cots_once(
    cots: dict[str, int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    step_10.command()
    assert "1 CoT split now, 0 failed; 6 examples from 1 CoT in all" in capsys.readouterr().out
    examples = stored_examples(cots["good"])
    expected = split_compress(filtered_blocks(cot_data(), TOP_K))
    assert examples == [[m.to_json() for m in example] for example in expected]
    assert verdicts()[cots["good"]][:2] == (Stage.split, Status.done)
    assert stored_examples(cots["missed"]) == []

    step_10.command()
    assert "0 CoTs split now" in capsys.readouterr().out
    with db.session_factory().begin() as session:
        reprocess(session, "lib.a.foo", Stage.split)
    step_10.command()
    assert "1 CoT split now" in capsys.readouterr().out
    assert stored_examples(cots["good"]) == examples


def test_reprocess_from_filter_judges_one_cot_again(
    cots: dict[str, int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    with db.session_factory().begin() as session:
        reprocess(session, "lib.a.bar", Stage.filter)
        session.execute(
            sa.update(SearchBlock)
            .where(SearchBlock.cot_id == cots["missed"], SearchBlock.block_index == 8)
            .values(results=[hit("addnC"), hit("a"), hit("b")], target_rank=1)
        )
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    assert "1 CoTs judged with top 3, 1 kept" in capsys.readouterr().out.splitlines()[-1]
    assert verdicts()[cots["missed"]][2] is True


def test_forced_targets_are_read_from_the_dictionary(
    cots: dict[str, int], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    with db.session_factory().begin() as session:
        session.add(LibraryObject(
            file_id=add_file(session, "other"), fqn="lib.a.addnC", kind="thm", name="addnC",
            library_order=ORDER_STRIDE, docstring="What addnC says.", docstring_source="llm",
            force_result=True, stage=Stage.docstring, status=Status.done,
        ))  # fmt: skip
        session.execute(
            sa.update(SearchBlock)
            .where(SearchBlock.cot_id == cots["missed"], SearchBlock.block_index == 8)
            .values(results=[hit("a"), hit("b"), hit("addnC")], target_rank=5)
        )
    step_9.command(top_k=TOP_K, out_dir=tmp_path)
    assert verdicts()[cots["missed"]][2] is True
    with db.session_factory()() as session:
        (loaded,) = load_cots(session, Cot.id == cots["missed"])
    assert loaded.searches[2].forced
    assert filtered_blocks(loaded, TOP_K)[13].content.startswith("1. Lemma addnC")


def test_marked_blocks_round_trip() -> None:
    marked = Marked(Block("search", "q", "lib.a.x"), True)
    assert Marked.from_json(marked.to_json()) == marked
    assert marked.to_json() == {"kind": "search", "content": "q", "target": "lib.a.x",
                                "ignore": True}  # fmt: skip
