"""Step 3: the tokenizer, BM25 against rank_bm25, the greedy selection against a naive
reference, and the step against a real PostgreSQL (flags, stages, reruns, errors, the CLI)."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from rank_bm25 import BM25Okapi

from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Have, Job, Theorem
from app.selection import Similarity, bm25, diverse_selection, first_pick, tokenize
from app.steps import step_3
from tests.rows import add_file

WORDS = ["x", "n", "m", "addn", "mul_n", "GRing.add", "0", "1", "<=", "%|", "*:", "=", "->"]


def random_statements(rng: random.Random, size: int) -> list[str]:
    """Small statements over a small vocabulary, with repeats and permutations (ties)."""
    statements: list[str] = []
    for i in range(size):
        if statements and rng.random() < 0.2:
            words = statements[rng.randrange(len(statements))].split(" : ", 1)[1].split()
            rng.shuffle(words)
        else:
            words = rng.choices(WORDS, k=rng.randint(0, 9))
        statements.append(f"Lemma l{i} : {' '.join(words)}")
    return statements


# The tokenizer


@pytest.mark.parametrize(
    ("statement", "tokens"),
    [
        ("Lemma leq_add2l p m n : (p + m <= p + n) = (m <= n).",
         ["p", "m", "n", ":", "p", "+", "m", "<=", "p", "+", "n", "=", "m", "<=", "n"]),
        ("Lemma dvdn_mull d m n : d %| n -> d %| m * n.",
         ["d", "m", "n", ":", "d", "%|", "n", "->", "d", "%|", "m", "*", "n"]),
        ("Theorem scale : a *: (v : 'rV_n) = GRing.scale a v.",
         [":", "a", "*:", "v", ":", "'", "rV", "n", "=", "GRing", "scale", "a", "v"]),
        ("#[global] Local Fact big_x : \\sum_(i < n.+1) i%:R = 0%N.",
         [":", "\\sum", "i", "<", "n", ".+", "1", "i", "%:R", "=", "0", "%N"]),
        ("Lemma mem_seq {T} : [seq x <- s | p x] = s.",
         ["{", "T", "}", ":", "[", "seq", "x", "<-", "s", "|", "p", "x", "]", "=", "s"]),
        ("Lemma foo: True.", [":", "True"]),
    ],
)  # fmt: skip
def test_tokenize_splits_identifiers_keeps_notations_and_drops_the_name(
    statement: str, tokens: list[str]
) -> None:
    assert tokenize(statement) == tokens


def test_tokenize_drops_the_name_so_names_do_not_make_statements_differ() -> None:
    assert tokenize("Lemma addnC_proof : x = y.") == tokenize("Lemma other_name : x = y.")


# BM25 and the selection, pure


@pytest.mark.parametrize("seed", range(5))
def test_bm25_scores_equal_rank_bm25(seed: int) -> None:
    documents = [tokenize(s) for s in random_statements(random.Random(seed), 25)]
    okapi = BM25Okapi(documents)
    expected = np.array([okapi.get_scores(query) for query in documents])
    index = bm25(documents)
    np.testing.assert_allclose(index.scores(), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(index.self_scores, np.diag(expected), rtol=1e-12, atol=1e-12)


def reference_selection(statements: list[str], k: int, first: int) -> tuple[list[int], list[float]]:
    """The rule, naively: dense rank_bm25 scores, the similarity matrix, O(N^2) per pick."""
    documents = [tokenize(s) for s in statements]
    okapi = BM25Okapi(documents)
    s = np.array([okapi.get_scores(query) for query in documents])  # s[query, document]
    n = len(documents)
    ratio = np.zeros((n, n))
    for a in range(n):
        for b in range(n):
            ratio[a, b] = s[a, b] / s[b, b] if s[b, b] > 0 else 0.0
    sim = np.round((ratio + ratio.T) / 2, 12)
    chosen = [first]
    while len(chosen) < k:
        rest = [i for i in range(n) if i not in chosen]
        chosen.append(min(rest, key=lambda i: (max(sim[i, j] for j in chosen), i)))
    nearest = [max(sim[i, j] for j in chosen if j != i) for i in chosen] if k > 1 else [-np.inf]
    return chosen, nearest


@pytest.mark.parametrize("seed", range(8))
def test_selection_equals_the_naive_reference(seed: int) -> None:
    rng = random.Random(seed)
    statements = random_statements(rng, rng.randint(5, 40))
    k = rng.randint(1, len(statements))
    selection = diverse_selection(statements, k, seed, "pool")
    order, nearest = reference_selection(statements, k, first_pick(seed, "pool", len(statements)))
    assert list(selection.order) == order
    np.testing.assert_allclose(selection.nearest, nearest, atol=1e-9)


def test_similarity_is_symmetric_and_one_on_the_diagonal() -> None:
    statements = random_statements(random.Random(7), 20)
    index = bm25([tokenize(s) for s in statements])
    similarity = Similarity(index)
    matrix = np.array([similarity.column(j) for j in range(20)]).T
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-12)
    positive = index.self_scores > 0
    np.testing.assert_allclose(np.diag(matrix)[positive], 1.0)


# The step, against PostgreSQL


def add_theorems(statements: list[str], with_have: set[int]) -> list[int]:
    """Theorems of 3 tactics done with step 2; those in `with_have` have a tagged have.
    Returns their ids."""
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        theorems = [
            Theorem(
                fqn=f"lib.a.l{i}",
                file_id=file_id,
                kind="Lemma",
                statement=statement,
                proof="Proof. by []. Qed.",
                tagged_proof=f"tagged {i}" if i in with_have else "Proof. by []. Qed.",
                line=i,
                character=0,
                byte_start=100 * i,
                tactics=3,
                stage=Stage.haves,
                status=Status.done,
            )
            for i, statement in enumerate(statements)
        ]
        session.add_all(theorems)
        session.flush()
        session.add_all(
            Have(theorem_id=theorems[i].id, index=0, tactic="have h : x.", statement="x", proof="")
            for i in with_have
        )
        return [theorem.id for theorem in theorems]


def select(reset: bool = False, **options: int) -> None:
    """Run step 3 in this process; small pools by default."""
    defaults = {"k_have": 3, "k_wo_have": 4, "min_tactics": 2, "max_tactics": 14, "seed": 0}
    step_3.command(**(defaults | options), reset=reset)


def theorem_rows() -> list[tuple]:
    with db.session_factory()() as session:
        table = Theorem.__table__
        return [tuple(row) for row in session.execute(sa.select(table).order_by(table.c.id))]


def chosen(pool: str) -> list[int]:
    """Ids of the selected theorems of a pool, by rank."""
    with db.session_factory()() as session:
        return list(
            session.execute(
                sa.select(Theorem.id)
                .where(Theorem.selected, Theorem.pool == pool)
                .order_by(Theorem.select_rank)
            ).scalars()
        )


def job() -> Job:
    with db.session_factory()() as session:
        return session.execute(sa.select(Job)).scalar_one()


@pytest.fixture
def corpus(migrated: str) -> tuple[list[str], list[int], set[int]]:
    """Twenty statements, the even ones of the first twelve with a have."""
    statements = random_statements(random.Random(3), 20)
    with_have = {0, 2, 4, 6, 8, 10}
    return statements, add_theorems(statements, with_have), with_have


def expected(statements: list[str], ids: list[int], members: list[int], k: int, pool: str):
    order = reference_selection(
        [statements[i] for i in members], k, first_pick(0, pool, len(members))
    )[0]
    return [ids[members[i]] for i in order]


def test_step_3_selects_as_the_reference_and_moves_the_candidates(corpus) -> None:
    statements, ids, with_have = corpus
    select()
    without = [i for i in range(20) if i not in with_have]
    assert chosen("with_have") == expected(statements, ids, sorted(with_have), 3, "with_have")
    assert chosen("without_have") == expected(statements, ids, without, 4, "without_have")
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Theorem).order_by(Theorem.id)).scalars().all()
    assert {(t.stage, t.status) for t in rows} == {(Stage.select, Status.done)}
    assert [t.pool for t in rows] == [
        "with_have" if i in with_have else "without_have" for i in range(20)
    ]
    assert sorted(t.select_rank for t in rows if t.selected) == [1, 1, 2, 2, 3, 3, 4]
    assert all(t.select_rank is None for t in rows if not t.selected)
    result = job().result
    assert result["with_have"]["candidates"] == 6 and result["without_have"]["selected"] == 4


def test_same_parameters_do_nothing_and_reset_or_new_ones_select_again(corpus) -> None:
    select(seed=5)
    first, before, job_before = chosen("without_have"), theorem_rows(), job()
    select(seed=5)
    assert theorem_rows() == before, "a rerun with the same parameters changed rows"
    assert job().updated_at == job_before.updated_at

    select(seed=6)
    assert job().params["seed"] == 6 and chosen("without_have") != first
    select(seed=5)
    assert chosen("without_have") == first, "the same seed gives the same selection"

    with db.session_factory().begin() as session:  # a selected theorem drops out of the bounds
        session.execute(sa.update(Theorem).where(Theorem.id == first[0]).values(tactics=40))
    select(seed=5)
    assert chosen("without_have") == first, "same parameters: not selected again"
    select(seed=5, reset=True)
    reselected = chosen("without_have")
    assert first[0] not in reselected and len(reselected) == 4
    with db.session_factory()() as session:
        dropped = session.get(Theorem, first[0])
    assert (dropped.selected, dropped.pool, dropped.select_rank) == (False, None, None)


def test_new_theorems_are_selected_from_with_the_same_parameters(corpus) -> None:
    """A library that grew (theorems added after a selection) is selected from again."""
    select()
    assert job().result["without_have"]["candidates"] == 14
    with db.session_factory().begin() as session:
        file_id = session.execute(sa.select(Theorem.file_id).limit(1)).scalar_one()
        added = [
            Theorem(
                fqn=f"lib.a.new{i}",
                file_id=file_id,
                kind="Lemma",
                statement=statement,
                proof="Proof. by []. Qed.",
                line=100 + i,
                character=0,
                byte_start=10_000 + i,
                tactics=3,
                stage=Stage.haves,
                status=Status.done,
            )
            for i, statement in enumerate(random_statements(random.Random(9), 5))
        ]
        session.add_all(added)
    select()
    assert job().result["without_have"]["candidates"] == 19
    with db.session_factory()() as session:
        stages = session.execute(
            sa.select(Theorem.stage).where(Theorem.fqn.like("lib.a.new%"))
        ).scalars()
        assert set(stages) == {Stage.select}


def test_only_top_level_theorems_done_with_step_2_are_considered(migrated: str) -> None:
    statements = random_statements(random.Random(4), 8)
    ids = add_theorems(statements, with_have={0, 1})
    with db.session_factory().begin() as session:
        waiting, failed, later = (session.get(Theorem, i) for i in ids[5:8])
        waiting.stage = Stage.extract
        failed.status = Status.failed
        later.stage, later.status = Stage.evaluate, Status.failed
        session.add(
            Theorem(
                fqn="lib.a.l0_have_0",
                file_id=waiting.file_id,
                parent_id=ids[0],
                kind="have",
                statement="Lemma l0_have_0 : x.",
                proof="by [].",
                tactics=3,
                stage=Stage.haves,
                status=Status.done,
            )
        )
    select(k_have=2, k_wo_have=4)
    with db.session_factory()() as session:
        rows = {t.fqn: t for t in session.execute(sa.select(Theorem)).scalars()}
    assert set(chosen("without_have")) == {ids[2], ids[3], ids[4], ids[7]}
    assert (rows["lib.a.l5"].stage, rows["lib.a.l5"].pool) == (Stage.extract, None)
    assert (rows["lib.a.l6"].status, rows["lib.a.l6"].pool) == (Status.failed, None)
    assert (rows["lib.a.l7"].stage, rows["lib.a.l7"].status) == (Stage.evaluate, Status.failed)
    assert rows["lib.a.l0_have_0"].pool is None and rows["lib.a.l0_have_0"].stage == Stage.haves
    assert job().result["waiting"] == 2


def test_a_pool_with_fewer_candidates_than_k_gives_all_of_them(
    corpus, capsys: pytest.CaptureFixture[str]
) -> None:
    select(k_have=7, min_tactics=3, max_tactics=5)
    out = capsys.readouterr().out
    assert "6 of 6 with_have" in out
    assert (
        "step 3: pool with_have has 6 candidates (with 3 to 5 tactics), fewer than --k-have 7: "
        "all of them are selected" in out
    )
    assert job().status == Status.done and len(chosen("with_have")) == 6
    assert job().result["with_have"]["wanted"] == 7
    select(k_have=0, min_tactics=4)
    out = capsys.readouterr().out
    assert "pool without_have has 0 candidates" in out and "--k-wo-have 4" in out
    assert chosen("with_have") == [] and chosen("without_have") == []


def test_without_k_the_selection_is_sized_from_the_library(corpus, migrated) -> None:
    with db.session_factory()() as session:
        theorems = session.execute(
            sa.select(sa.func.count()).select_from(Theorem).where(Theorem.parent_id.is_(None))
        ).scalar_one()
        assert theorems < 10 * step_3.SIZE_SHARE and step_3.library_size_k(session) == 10
    step_3.command(min_tactics=2, max_tactics=14, seed=0, reset=False)
    assert (job().params["k_have"], job().params["k_wo_have"]) == (10, 10)


def rocqcot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_step_3_command_and_export(corpus, subprocess_env, tmp_path: Path) -> None:
    statements, _, with_have = corpus
    done = rocqcot(subprocess_env, "step", "3", "--k-have", "2", "--k-wo-have", "3", "--seed", "1")
    assert done.returncode == 0, done.stderr
    assert (
        "step 3: selected 2 of 6 with_have" in done.stdout and "3 of 14 without_have" in done.stdout
    )

    out = tmp_path / "selected.json"
    assert rocqcot(subprocess_env, "export", "--step", "3", "--out", str(out)).returncode == 0
    seed = json.loads(out.read_text())
    assert len(seed) == 5
    for fqn, entry in seed.items():
        i = int(fqn.rsplit(".l", 1)[1])
        assert entry["statement"] == statements[i]
        assert entry["proof"] == (f"tagged {i}" if i in with_have else "Proof. by []. Qed.")

    short = rocqcot(subprocess_env, "step", "3", "--k-have", "9")
    assert short.returncode == 0, short.stderr
    assert "pool with_have has 6 candidates (with 2 to 14 tactics), fewer than --k-have 9" in (
        short.stdout
    )
