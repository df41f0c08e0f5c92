"""The selection decides what goes on to steps 5 to 10 (`app.gate`): after `step 4 --all` (a
trace of every theorem), `rocqcot run` with k 5 + 5 writes CoTs, docstrings and examples for
those 10 theorems and their haves only; another selection moves the gate both ways without
deleting or redoing anything; and an LLM step whose stage would reach beyond the selection
stops before sending a request."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import llm
from app.db import engine as db
from app.db.enums import Stage
from app.db.models import Cot, LibraryObject, Theorem
from app.db.reprocess import NOT_SELECTED, reprocess
from app.errors import RocqcotError
from app.gate import outside_counts
from app.steps import step_5
from tests.conftest import _clear_engine_caches
from tests.llm_server import LlmServer
from tests.test_run import DATASET, Workspace, new_workspace  # noqa: F401
from tests.test_step_4 import make_demo
from tests.test_step_5_6 import (  # noqa: F401
    ADDNCA3,
    ADDNCA3_STEPS,
    add_theorem,
    all_inputs,
    cot_rows,
    evaluated,
    responder,
    use_server,
)

MORE_V = """From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.
From demo Require Import base.

Lemma double0 : double 0 = 0.
Proof. rewrite /double. by []. Qed.

Lemma triple0 : triple 0 = 0.
Proof. rewrite /triple /double. by []. Qed.

Lemma double_add m n : double (m + n) = double m + double n.
Proof. rewrite !doubleE. by rewrite addnACA. Qed.

Lemma double_succ n : double n.+1 = (double n).+2.
Proof. rewrite !doubleE. by rewrite addnS addSn. Qed.

Lemma total1 : total 1 = 1.
Proof. rewrite /=. by []. Qed.

Lemma le_double n : n <= n + n.
Proof. move=> /=. exact: leq_addr. Qed.

Lemma px_point a b : px (Point a b) = a.
Proof. move=> /=. by []. Qed.

Lemma color_cases (c : color) : c = Red \\/ c = Green.
Proof.
case: c.
- by left.
- by right.
Qed.

Lemma mul2_double n : 2 * n = double n.
Proof. rewrite doubleE. by rewrite mul2n addnn. Qed.

Lemma double_pos n : 0 < n -> 0 < double n.
Proof.
move=> pos.
have h : 0 < n + n by rewrite addn_gt0 pos.
by rewrite doubleE.
Qed.

Lemma triple_le n : n <= triple n.
Proof.
rewrite /triple.
have h : n <= n + double n by rewrite leq_addr.
exact: h.
Qed.

Lemma double_eq0 n : (double n == 0) = (n == 0).
Proof.
rewrite doubleE.
have e : (n + n == 0) = (n == 0) && (n == 0) by rewrite addn_eq0.
by rewrite e andbb.
Qed.
"""
"""More theorems for the demo library, so that each pool has more than 5 candidates."""


def run_with(place: Workspace, library: Path, k: int) -> str:
    """`rocqcot run` with k theorems in each pool; its output."""
    args = ("--prefix", "demo", "--k-have", str(k), "--k-wo-have", str(k), "--no-progress")
    result = place.rocqcot("run", "--input", str(library), *args)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    library = make_demo(tmp_path_factory.mktemp("gate") / "in")
    (library / "more.v").write_text(MORE_V)
    return library


@dataclasses.dataclass(frozen=True)
class Traced:
    place: Workspace
    library: Path
    output: str
    """What the first run with k 5 + 5 printed."""


@pytest.fixture(scope="module")
def traced(new_workspace, library: Path) -> Traced:  # noqa: F811
    """Steps 0 to 4 with `--all` (every theorem evaluated, none selected), then a run with
    k 5 + 5."""
    place = new_workspace()
    for args in (("step", "0", "--input", str(library), "--prefix", "demo"), ("step", "1"),
                 ("step", "2"), ("step", "4", "--all")):  # fmt: skip
        result = place.rocqcot(*args)
        assert result.returncode == 0, result.stdout + result.stderr
    return Traced(place, library, run_with(place, library, 5))


@pytest.fixture
def connected(traced: Traced, monkeypatch: pytest.MonkeyPatch) -> Iterator[Traced]:
    """This process on the traced workspace's database too."""
    monkeypatch.setenv("DATABASE_URL", traced.place.env["DATABASE_URL"])
    _clear_engine_caches()
    yield traced
    db.engine().dispose()
    _clear_engine_caches()


@dataclasses.dataclass(frozen=True)
class Rows:
    selected: set[str]
    """Top-level theorems step 3 selected."""
    family: set[str]
    """They and their have sub-theorems (nested ones too) with an evaluation."""
    with_evaluation: set[str]
    """Every theorem and have with an evaluation."""
    cots: set[str]
    """Theorems and haves with a CoT."""


def rows() -> Rows:
    with db.session_factory()() as session:
        theorems = session.execute(
            sa.select(Theorem.id, Theorem.fqn, Theorem.parent_id, Theorem.selected,
                      Theorem.evaluation.is_not(None))
        ).all()  # fmt: skip
        cots = set(
            session.execute(sa.select(Theorem.fqn).join(Cot, Cot.theorem_id == Theorem.id))
            .scalars()
        )  # fmt: skip
    parent = {row.id: row.parent_id for row in theorems}
    chosen = {row.id for row in theorems if row.selected and row.parent_id is None}

    def root(theorem_id: int) -> int:
        while parent[theorem_id] is not None:
            theorem_id = parent[theorem_id]
        return theorem_id

    with_evaluation = {row.fqn for row in theorems if row[4]}
    family = {row.fqn for row in theorems if row[4] and root(row.id) in chosen}
    selected = {row.fqn for row in theorems if row.id in chosen}
    return Rows(selected, family, with_evaluation, cots)


def dataset_names(place: Workspace) -> set[str]:
    lines = (place.root / DATASET).read_text().splitlines()
    return {json.loads(line)["name"] for line in lines}


def test_after_a_trace_a_run_writes_for_the_selection_only(connected: Traced) -> None:
    found = rows()
    assert len(found.selected) == 10
    assert len(found.family) > 10, "some selected theorems have haves"
    outside = len(found.with_evaluation - found.family)
    assert outside >= 8, "the trace goes well beyond the selection"
    assert found.cots == found.family
    names = dataset_names(connected.place)
    assert names and names <= found.family
    output = connected.output
    assert f"step 5: {len(found.family)} chains of thought written (offline)" in output
    assert f"; {outside} theorems and haves outside the selection (not taken)" in output
    # Docstrings: exactly for the dictionary entries the selection's CoTs search for that
    # had none (the dictionary's own ones are kept).
    with db.session_factory()() as session:
        blocks = session.execute(
            sa.select(Cot.blocks).join(Theorem, Theorem.id == Cot.theorem_id)
            .where(Theorem.fqn.in_(found.family))
        ).scalars()  # fmt: skip
        targets = {b["target"] for bs in blocks for b in bs if b.get("target")}
        entries = session.execute(sa.select(LibraryObject)).scalars().all()
    written = {e.fqn for e in entries if e.docstring_source == "offline"}
    searched = {e.fqn for e in entries if e.fqn in targets}
    assert written and written <= searched
    assert all(e.docstring for e in entries if e.fqn in searched)
    assert any(not e.docstring for e in entries), "entries no selected CoT needs get none"
    assert f"step 6: {len(written)} docstrings written (offline)" in output
    status = json.loads(connected.place.rocqcot("status", "--json").stdout)
    gated = {(r["table_name"], r["stage"]): r["rows"] for r in status
             if r["status"] == "not selected"}  # fmt: skip
    assert gated == {("theorems", "evaluate"): outside}


def test_another_selection_moves_the_gate_both_ways(connected: Traced) -> None:
    """One more theorem in each pool flows on; back to 5 + 5, they stop, their rows kept,
    and the dataset is the first one again without any work."""
    place, library = connected.place, connected.library
    first = (place.root / DATASET).read_bytes()
    before = rows()
    more = run_with(place, library, 6)
    grown = rows()
    new = grown.family - before.family
    assert len(grown.selected - before.selected) == 2 and new
    assert grown.cots == before.cots | new, "newly selected theorems flow on"
    assert f"step 5: {len(new)} chains of thought written" in more
    assert dataset_names(place) <= grown.family
    again = run_with(place, library, 5)
    assert rows() == dataclasses.replace(grown, selected=before.selected, family=before.family)
    for nothing in ("step 5: 0 chains of thought written", "0 search blocks created",
                    "step 9: nothing to judge", "step 10: 0 CoTs split now"):  # fmt: skip
        assert nothing in again
    assert (place.root / DATASET).read_bytes() == first
    status = json.loads(place.rocqcot("status", "--json").stdout)
    gated = {r["table_name"] for r in status if r["status"] == "not selected"}
    assert gated == {"theorems", "cots", "search_blocks"}


def test_an_llm_step_beyond_the_selection_stops_before_sending(
    evaluated: dict[str, int],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A stage run without its gate (as a widened command would) would write CoTs for a
    theorem step 3 did not select: the step stops, sending nothing; the step as registered
    writes the selection's CoTs and says what it left out."""
    with db.session_factory().begin() as session:
        file_id = session.execute(sa.select(Theorem.file_id)).scalars().first()
        statement = ADDNCA3.replace("addnCA3", "unselected")
        add_theorem(session, file_id, "lib.a.unselected", statement, ADDNCA3_STEPS, selected=False)
    ungated = dataclasses.replace(step_5.SPEC, gate=None)
    with LlmServer(responder(all_inputs(), [])) as server:
        use_server(monkeypatch, server)
        with pytest.raises(RocqcotError) as stopped:
            llm.run_llm_step(5, ungated, step_5.writer_for, llm.StepFlags(), offline_batch=8)
        assert server.count == 0
        assert cot_rows() == {}
        assert str(stopped.value) == (
            "step 5 would send LLM requests for 4 theorems and haves, 1 of them beyond step 3's "
            "selection (its theorems and their haves): stopped before sending any; step 3 "
            "(--k-have, --k-wo-have) decides what goes on"
        )
        step_5.command(max_workers=2)
        assert server.count > 0
    assert set(cot_rows()) == {"lib.a.addnCA3", "lib.a.foo", "lib.a.foo_have_1"}
    out = capsys.readouterr().out
    assert "3 chains of thought written (llm:test-model)" in out
    assert "; 1 theorems and haves outside the selection (not taken)" in out


def test_reprocessing_a_theorem_outside_the_selection_says_it_waits(
    evaluated: dict[str, int],  # noqa: F811
) -> None:
    with db.session_factory().begin() as session:
        file_id = session.execute(sa.select(Theorem.file_id)).scalars().first()
        statement = ADDNCA3.replace("addnCA3", "unselected")
        add_theorem(session, file_id, "lib.a.unselected", statement, ADDNCA3_STEPS, selected=False)
        outside = reprocess(session, "lib.a.unselected", Stage.cot)
        inside = reprocess(session, "lib.a.foo_have_1", Stage.cot)
    assert outside == f"lib.a.unselected: reset to cot{NOT_SELECTED}"
    assert inside == "lib.a.foo_have_1: reset to cot"
    step_5.command(offline=True)
    assert set(cot_rows()) == {"lib.a.addnCA3", "lib.a.foo", "lib.a.foo_have_1"}
    with db.session_factory()() as session:
        gated = outside_counts(session)
    assert gated == {("theorems", "cot", "pending"): 1}
