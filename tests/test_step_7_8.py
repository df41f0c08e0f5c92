"""Steps 7 and 8 on the small library of `test_retrieval`: searching the CoTs' blocks,
repairing the failed ones (offline, and through a local OpenAI-compatible server), keeping the
best query."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from app import llm, repairs
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Cot, LibraryObject, SearchBlock, SearchQuery, Theorem
from app.repairs import RepairInput, Target, parse_repair
from app.retrieval import Retrievers
from app.search_index import Entry
from app.steps import step_7, step_8
from app.steps.step_8 import BestInput, BestQueryParams, best_position, seeded_position
from tests.llm_server import LlmServer, Reply
from tests.test_retrieval import THEOREM, SmallLibrary, minilm, small_library  # noqa: F401

WRONG = "reversing a sequence twice"
BLOCKS = [
    {"kind": "think", "content": "I have to prove: d %| m -> m %| n -> d %| n"},
    {"kind": "think", "content": "The goal is now: d %| k * m with d dividing m."},
    {"kind": "search", "content": WRONG, "target": "lib.b.dvdn_mull"},
    {"kind": "think", "content": "A divisor of n divides every multiple of n: that closes it."},
    {"kind": "script", "content": "move=> /dvdnP[k ->]; apply: dvdn_mull."},
    {"kind": "think", "content": "An intermediate fact would help."},
    {"kind": "search", "content": "a fact stating that d divides k * m"},
    {"kind": "think", "content": "The library has no such fact in this form."},
    {"kind": "have", "content": "have h : d %| k * m."},
    {
        "kind": "search",
        "content": "Addition of natural numbers is commutative.",
        "target": "lib.a.addnC",
    },
    {"kind": "think", "content": "Commutativity of addition reorders the sum."},
    {"kind": "search", "content": "concatenating sequences", "target": "lib.b.modn_small"},
    {"kind": "think", "content": "A small number is its own remainder."},
]
WRONG_BLOCK, HAVE_BLOCK, FOUND_BLOCK, FORCED_BLOCK = 2, 6, 9, 11


@pytest.fixture
def cot(small_library: SmallLibrary) -> int:  # noqa: F811
    """The theorem's CoT; the target of its last search had its docstring written in step 6."""
    with db.session_factory().begin() as session:
        session.execute(
            sa.update(LibraryObject)
            .where(LibraryObject.fqn == "lib.b.modn_small")
            .values(docstring_source="llm", force_result=True)
        )
        row = Cot(
            theorem_id=small_library.theorem_id, writer="offline", blocks=BLOCKS,
            stage=Stage.cot, status=Status.done,
        )  # fmt: skip
        session.add(row)
        session.flush()
        return row.id


def _step_7(capsys: pytest.CaptureFixture[str], top_k: int = 3) -> str:
    step_7.command(top_k=top_k, batch_size=16, offline=True, max_workers=2)
    return capsys.readouterr().out


def _step_8(capsys: pytest.CaptureFixture[str], seed: int = 0) -> str:
    step_8.command(top_k=3, batch_size=16, seed=seed)
    return capsys.readouterr().out


def _blocks() -> dict[int, SearchBlock]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(SearchBlock)).scalars()
        return {row.block_index: row for row in rows}


def _draw_key(block: SearchBlock) -> str:
    with db.session_factory()() as session:
        fqn = session.execute(
            sa.select(Theorem.fqn)
            .join(Cot, Cot.theorem_id == Theorem.id)
            .where(Cot.id == block.cot_id)
        ).scalar_one()
    return step_8.draw_key(fqn, block.block_index)


def _candidates(block_id: int) -> list[SearchQuery]:
    with db.session_factory()() as session:
        return list(
            session.execute(
                sa.select(SearchQuery)
                .where(SearchQuery.search_block_id == block_id)
                .order_by(SearchQuery.candidate_index)
            ).scalars()
        )


def test_step_7_searches_every_block_and_repairs_the_failed_ones(
    cot: int, capsys: pytest.CaptureFixture[str]
) -> None:
    out = _step_7(capsys)
    assert "4 search blocks created" in out and "targets in the top 3: 1/3" in out
    blocks = _blocks()
    assert set(blocks) == {WRONG_BLOCK, HAVE_BLOCK, FOUND_BLOCK, FORCED_BLOCK}
    assert all(b.stage == Stage.repair and b.status == Status.done for b in blocks.values())
    assert blocks[FOUND_BLOCK].target_rank == 1
    assert blocks[WRONG_BLOCK].target_rank > 3 and blocks[HAVE_BLOCK].target_rank is None
    forced = blocks[FORCED_BLOCK]
    assert forced.target_rank > 3 and len(forced.results) == 3
    assert forced.results[0]["fqn"] == "lib.b.modn_small" and forced.results[0]["forced"]
    for index, repaired in [(WRONG_BLOCK, True), (HAVE_BLOCK, True), (FOUND_BLOCK, False)]:
        candidates = _candidates(blocks[index].id)
        assert [c.candidate_index for c in candidates] == list(range(6 if repaired else 1))
        assert candidates[0].query == BLOCKS[index]["content"] and candidates[0].think is None
        for repair in candidates[1:]:
            assert repair.writer == "offline" and repair.think and repair.query
            assert "dvdn_mull" not in repair.query
    assert len(_candidates(blocks[FORCED_BLOCK].id)) == 1
    assert "0/0" not in out and "4 blocks through repair (offline)" in out


def test_step_8_keeps_the_best_query_and_reports_the_shares(
    cot: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _step_7(capsys)
    out = _step_8(capsys)
    assert "4 blocks chosen" in out and "with the original queries" in out
    blocks = _blocks()
    for block in blocks.values():
        candidates = _candidates(block.id)
        chosen = [c for c in candidates if c.chosen]
        assert len(chosen) == 1 and block.query == chosen[0].query
        assert block.target_rank == chosen[0].target_rank
        if block.target_fqn is not None:
            assert chosen[0] == candidates[best_position([c.target_rank for c in candidates])]
    have = blocks[HAVE_BLOCK]
    expected = seeded_position(0, _draw_key(have), 6)
    assert [c.chosen for c in _candidates(have.id)].index(True) == expected
    assert blocks[FORCED_BLOCK].results[0]["forced"]


def test_the_best_ranked_query_wins_not_the_last_that_finds_the_target(
    cot: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _step_7(capsys)
    block_id = _blocks()[WRONG_BLOCK].id
    with db.session_factory()() as session:
        item = step_8.load(session, block_id)
    queries = (
        "prime numbers",
        "If d divides n then d divides any multiple of n.",
        "natural numbers multiplied",
        "d divides m and n",
        "zero times a number",
    )
    item = BestInput(
        item.block_id,
        item.draw_key,
        tuple(enumerate(queries)),
        item.target,
        item.theorem,
        BestQueryParams(top_k=3),
    )
    result = step_8.run(item, Retrievers())
    ranks = {index: rank for index, rank, _ in result.candidates}
    found = [index for index, rank in ranks.items() if rank is not None and rank <= 3]
    assert found[-1] == 3 and ranks[1] < ranks[3], ranks  # the last match is worse
    assert result.chosen == 1 and result.query == queries[1] and result.rank == 1


def test_every_candidate_keeps_its_results(cot: int, capsys: pytest.CaptureFixture[str]) -> None:
    _step_7(capsys)
    _step_8(capsys)
    for block in _blocks().values():
        candidates = _candidates(block.id)
        assert candidates and all(0 < len(c.results) <= 3 for c in candidates)
        (chosen,) = [c for c in candidates if c.chosen]
        assert chosen.results == block.results
        for candidate in candidates:  # a candidate that ranks the target within k shows it
            if candidate.target_rank is not None and candidate.target_rank <= 3:
                assert block.target_fqn in [r["fqn"] for r in candidate.results]


def test_best_position_lowest_rank_first_on_ties_unranked_last() -> None:
    assert best_position([5, 2, None, 2, 3]) == 1
    assert best_position([None, 7, None]) == 1
    assert best_position([None, None]) == 0
    assert best_position([4, 4, 4]) == 0


def test_the_draw_for_blocks_without_target_is_seeded(
    cot: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _step_7(capsys)
    _step_8(capsys)
    have = _blocks()[HAVE_BLOCK]
    first = [c.chosen for c in _candidates(have.id)]
    _step_8(capsys, seed=7)  # new parameters: every block chosen again
    again = [c.chosen for c in _candidates(have.id)]
    assert again.index(True) == seeded_position(7, _draw_key(have), 6)
    assert first.index(True) == seeded_position(0, _draw_key(have), 6)
    assert sorted({seeded_position(s, _draw_key(have), 6) for s in range(40)}) == list(range(6))


def test_new_parameters_search_again_and_same_ones_do_nothing(
    cot: int, capsys: pytest.CaptureFixture[str]
) -> None:
    _step_7(capsys)
    out = _step_7(capsys)
    assert "0 searched" in out and "0 reset" in out
    out = _step_7(capsys, top_k=20)
    assert "4 searched" in out and "4 reset" in out
    blocks = _blocks()
    assert blocks[WRONG_BLOCK].target_rank <= 20
    assert len(_candidates(blocks[WRONG_BLOCK].id)) == 1  # found now: no repair kept


# --- Repairs through the LLM ------------------------------------------------------------------

TARGET = Target(
    "lib.b.dvdn_mull",
    Entry(1, "lib.b.dvdn_mull", "thm", "dvdn_mull", "Lemma dvdn_mull d m n : d %| n -> d %| m * n.",
          "If d divides n then d divides any multiple of n."),
    False,
)  # fmt: skip
GOOD = "<think>I asked for sequences; I need divisibility of multiples.</think>\n" + "\n".join(
    f"<search>a divisor of a number divides its multiples, variant {i}</search>" for i in range(5)
)


def _item(target: Target | None = TARGET) -> RepairInput:
    results = ({"fqn": "lib.a.rev_rev", "fullname": "Lemma rev_rev", "docstring": "Twice."},)
    return RepairInput(WRONG, results, target, True, "goal", "It closes the goal.")


def test_parse_repair_wants_one_think_and_five_searches_that_do_not_give_the_target_away():
    think, queries = parse_repair(GOOD, TARGET)
    assert think.startswith("I asked") and len(queries) == 5
    for bad, reason in [
        ("<think>x</think><search>q</search>", "1 non-empty <search>"),
        (GOOD.replace("variant 2", "like dvdn_mull"), "search 3 names the target"),
        (GOOD.replace("variant 4", "d %| n -> d %| m * n."), "copies the target's statement"),
        (GOOD + "<think>again</think>", "2 non-empty <think>"),
        (GOOD.replace("I asked", "dvdn_mull is what"), "the think block names the target"),
    ]:
        with pytest.raises(llm.BadAnswer, match=reason):
            parse_repair(bad, TARGET)
    assert parse_repair(GOOD.replace("variant 2", "the size of it"), Target("x.size", None, False))


def test_the_prompt_gives_target_results_and_think_or_before_a_have_results_only() -> None:
    user = repairs.repair_messages(_item())[1]["content"]
    for part in (WRONG, "Lemma dvdn_mull", "any multiple of n", "Lemma rev_rev", "closes the"):
        assert part in user
    have = repairs.repair_messages(_item(None))
    assert have[0]["content"] == llm.prompt("repair_have")
    assert "Lemma rev_rev" in have[1]["content"] and "closes the" not in have[1]["content"]


def _client(server: LlmServer) -> llm.LlmClient:
    settings = llm.LlmSettings(base_url=server.base_url, model="test-model", max_reasks=1)
    return llm.LlmClient(settings)


def test_a_bad_reply_is_asked_again_then_kept(migrated: str) -> None:
    with LlmServer() as server:
        server.script(Reply("<think>only</think><search>one</search>"), Reply(GOOD))
        repair = repairs.LlmRepairWriter(_client(server))(_item())
        assert server.count == 2
    assert repair.writer == "llm:test-model" and len(repair.queries) == 5


def test_a_reply_still_bad_after_the_reask_fails_the_block(migrated: str) -> None:
    with LlmServer() as server:
        server.script(Reply("no blocks"), Reply("<think>x</think>"))
        with pytest.raises(llm.InvalidAnswer, match="non-empty <search>"):
            repairs.LlmRepairWriter(_client(server))(_item())
