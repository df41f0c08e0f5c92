"""`rocqcot trace` end to end with real Rocq and PostgreSQL: on the small `demo` library of the
step-4 tests (one record per theorem and have with its steps and premises, the haves tagged by
step 4's own walk as step 2 tags them, positions that are
the built text's, the card, a second run that redoes nothing and rewrites nothing, an edited
proof that alone is redone); a proof that does not replay (a sentence slower than the
limit) shows with its step and error; and (slow) a slice of MathComp with a broken
file, whose dependents show on the card."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml

from app.db.models import Have, Theorem
from app.exports.trace import failure_reason
from tests.test_step_4 import make_demo
from tests.test_steps_0_1 import make_slice
from tests.toolchains import LOOP

DEMO_THEOREMS = {
    "demo.base.doubleE", "demo.base.Sub.tripleE", "demo.proofs.dkE", "demo.proofs.dk_pos",
    "demo.proofs.double_le", "demo.proofs.bullets", "demo.proofs.branchy", "demo.proofs.byhave",
    "demo.proofs.nested", "demo.proofs.anon", "demo.proofs.split_me", "demo.proofs.focused",
}  # fmt: skip

SLOW_V = f"""From mathcomp Require Import ssreflect.
Ltac slow := first [timeout 3 ({LOOP.removesuffix(".")}) | idtac].
Lemma after : True /\\ True.
Proof.
have t : True by exact I.
by split.
Qed.
Lemma slow : True.
Proof.
have h : True by slow; exact I.
exact h.
Qed.
"""
"""A sentence that takes 3 s on any Rocq (a loop Rocq's own `timeout` stops): coqc builds the
file, a 1 s limit stops it. `after` comes first: step 4 walks a file's prefix to reach a
theorem, so a theorem after the slow one would fail too."""


@dataclass(frozen=True)
class Place:
    """A database and a folder for the trace."""

    env: dict[str, str]
    out: Path

    def trace(self, library: Path, *args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "app", "trace", "--input", str(library),
                   "--out", str(self.out), *args]  # fmt: skip
        result = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def records(self, name: str) -> list[dict[str, Any]]:
        lines = (self.out / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines]

    def card(self, name: str) -> dict[str, Any]:
        text = (self.out / f"{name}_card.md").read_text(encoding="utf-8")
        return yaml.safe_load(text.split("---\n")[1])


@pytest.fixture(scope="module")
def new_place(pg_server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Place]]:
    """Makes fresh databases and trace folders (module-scoped: `database_url` is per test)."""
    names = []

    def make() -> Place:
        name = f"test_trace_{uuid.uuid4().hex[:10]}"
        pg_server.psql(f"CREATE DATABASE {name};")
        names.append(name)
        env = dict(os.environ, DATABASE_URL=pg_server.get_uri(database=name, driver="psycopg"))
        env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
        return Place(env, tmp_path_factory.mktemp("trace") / "out")

    yield make
    for name in names:
        pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "in")


@pytest.fixture(scope="module")
def traced(new_place, demo: Path) -> tuple[Place, subprocess.CompletedProcess[str]]:
    place = new_place()
    return place, place.trace(demo, "--prefix", "demo")


def test_one_record_per_theorem_and_have_with_steps_and_premises(traced) -> None:
    place, _ = traced
    records = place.records("demo")
    top = [r for r in records if r["parent"] is None]
    assert {r["fqn"] for r in top} == DEMO_THEOREMS
    assert all(r["status"] == "traced" and r["error"] is None for r in records)
    for record in records:
        assert record["steps"] and record["steps"][-1]["goals"] == "No more goals."
        assert [s["index"] for s in record["steps"]] == list(range(len(record["steps"])))
        assert record["initial_goal"] and record["initial_goal_with_gvars"]
    tripled = next(r for r in records if r["fqn"] == "demo.base.Sub.tripleE")
    assert tripled["file"] == "base.v" and tripled["logical_path"] == "demo.base"
    premises = {p["fqn"]: p for p in tripled["steps"][0]["premises"]}
    double = premises["demo.base.doubleE"]
    assert (double["name"], double["kind"]) == ("doubleE", "thm")
    assert double["type"] == "forall n : nat, twice n = n + n"
    assert double["defined_in"] == {"logical_path": "demo.base", "line": 15}
    assert double["spans"] and all(end - start == len("doubleE") for start, end in double["spans"])
    dk = next(r for r in records if r["fqn"] == "demo.proofs.dkE")
    assert dk["global_variables"][0]["names"] == ["k"]
    assert dk["initial_goal_with_gvars"] != dk["initial_goal"]


def test_step_4_tags_the_haves_as_step_2_does(traced, new_place, demo: Path) -> None:
    """The trace runs no step 2: step 4 tags each theorem in its own walk. Step 2 run on the
    same library writes the same tagged proofs, sizes and `haves` rows."""
    place, result = traced
    assert "trace: step 2" not in result.stdout
    alone = new_place()
    for step in (["0", "--input", str(demo), "--prefix", "demo"], ["1"], ["2"]):
        command = [sys.executable, "-m", "app", "step", *step]
        ran = subprocess.run(command, env=alone.env, capture_output=True, text=True, timeout=600)
        assert ran.returncode == 0, ran.stdout + ran.stderr
    tagged = [tags_and_haves(where.env["DATABASE_URL"]) for where in (place, alone)]
    assert tagged[0] == tagged[1]
    proofs, haves = tagged[0]
    assert {fqn for fqn, _, _ in proofs} == DEMO_THEOREMS
    assert len(haves) >= 5 and sum("(*<have>*)" in proof for _, proof, _ in proofs) >= 4


def tags_and_haves(url: str) -> tuple[list[tuple[str, str, int]], list[tuple[str, ...]]]:
    """Each top-level theorem's tagged proof and size, and each `haves` row, by name."""
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        proofs = connection.execute(
            sa.select(Theorem.fqn, Theorem.tagged_proof, Theorem.tactics)
            .where(Theorem.parent_id.is_(None))
            .order_by(Theorem.fqn)
        )
        haves = connection.execute(
            sa.select(Theorem.fqn, Have.index, Have.tactic, Have.statement, Have.proof)
            .join(Theorem, Have.theorem_id == Theorem.id)
            .order_by(Theorem.fqn, Have.index)
        )
        found = [tuple(row) for row in proofs], [tuple(row) for row in haves]
    engine.dispose()
    return found


def test_haves_follow_their_parent_depth_first(traced) -> None:
    place, _ = traced
    order = [(r["fqn"], r["parent"], r["haves"]) for r in place.records("demo")]
    nested = [fqn for fqn, *_ in order if fqn.startswith("demo.proofs.nested")]
    assert nested == ["demo.proofs.nested", "demo.proofs.nested_have_1",
                      "demo.proofs.nested_have_1_have_1"]  # fmt: skip
    for index, (fqn, parent, haves) in enumerate(order):
        if haves:
            assert order[index + 1][0] == haves[0] and order[index + 1][1] == fqn
        if parent:
            assert fqn.startswith(f"{parent}_have_")
    have = next(r for r in place.records("demo") if r["fqn"] == "demo.proofs.byhave_have_1")
    assert have["position"] is None and have["parent_chain"] == 0  # the parent's first chain
    assert have["statement"].startswith("Lemma byhave_have_1")


def test_positions_are_those_of_the_built_text(traced) -> None:
    place, result = traced
    built = Path(result.stdout.split("output: ")[1].split()[0])
    for record in (r for r in place.records("demo") if r["parent"] is None):
        text = (built / record["file"]).read_text(encoding="utf-8")
        position = record["position"]
        whole = text.encode()[position["byte_start"] : position["byte_end"]].decode()
        assert whole.startswith(record["statement"]) and whole.endswith(record["proof"])
        line = text.splitlines()[position["line"]]
        assert line[position["column"] :].startswith(record["statement"].splitlines()[0])


def test_the_card_counts_and_says_what_made_it(traced) -> None:
    place, _ = traced
    facts = place.card("demo")
    assert facts["trace"]["records"] == len(place.records("demo"))
    assert facts["trace"]["theorems"] == {"traced": len(DEMO_THEOREMS), "failed": 0, "pending": 0}
    assert facts["trace"]["haves"]["traced"] == 9 and facts["failures"] == []
    assert facts["library"]["name"] == "demo" and facts["toolchain"]["rocq"]
    text = (place.out / "demo_card.md").read_text(encoding="utf-8")
    assert "## The record format" in text and "## Failures\n\nNone." in text


def test_a_second_run_redoes_nothing_and_rewrites_nothing(traced, demo: Path) -> None:
    place, _ = traced
    files = [place.out / "demo.jsonl", place.out / "demo_card.md"]
    before = [(path.read_bytes(), path.stat().st_mtime_ns) for path in files]
    again = place.trace(demo, "--prefix", "demo")
    assert "nothing rebuilt" in again.stdout
    assert "0 theorems queued by --all; evaluated 0 now" in again.stdout
    assert [(path.read_bytes(), path.stat().st_mtime_ns) for path in files] == before


def test_an_edited_proof_alone_is_traced_again(new_place, tmp_path: Path) -> None:
    library = make_demo(tmp_path / "in")
    place = new_place()
    place.trace(library, "--prefix", "demo")
    before = {r["fqn"]: r for r in place.records("demo")}
    proofs = library / "proofs.v"
    old = "  by rewrite addn0.\nexact: h.\nQed."  # the end of `nested`
    assert proofs.read_text().count(old) == 1
    proofs.write_text(
        proofs.read_text().replace(old, "  by rewrite addn0.\nidtac.\nexact: h.\nQed.")
    )
    again = place.trace(library, "--prefix", "demo")
    assert "1 theorems queued by --all; evaluated 1 now" in again.stdout
    after = {r["fqn"]: r for r in place.records("demo")}
    edited = "demo.proofs.nested"
    moved = {"demo.proofs.anon", "demo.proofs.split_me", "demo.proofs.focused"}
    changed = {fqn for fqn in after if after[fqn] != before.get(fqn)}
    assert {fqn.split("_have_")[0] for fqn in changed} == {edited} | moved
    for fqn in moved:  # after the edit in the file: only their place changed
        assert after[fqn]["position"]["line"] == before[fqn]["position"]["line"] + 1
        assert {**after[fqn], "position": None} == {**before[fqn], "position": None}
    assert "idtac." in [step["chain"] for step in after[edited]["steps"]]


def test_a_proof_that_does_not_replay_shows_with_its_error(new_place, tmp_path: Path) -> None:
    library = tmp_path / "slowlib"
    library.mkdir()
    (library / "slow.v").write_text(SLOW_V)
    place = new_place()
    result = place.trace(library, "--pet-timeout", "1")
    assert "1 theorems traced, 1 failed" in result.stdout
    records = {r["fqn"]: r for r in place.records("slowlib")}
    slow = records["slowlib.slow.slow"]
    assert (slow["status"], slow["failed_stage"]) == ("failed", "evaluate")
    assert "tagging its haves (step 2): RocqTimeout" in slow["error"] and slow["steps"] == []
    assert slow["proof"].startswith("Proof.\nhave h : True by slow; exact I.")
    assert records["slowlib.slow.after"]["status"] == "traced"
    failures = place.card("slowlib")["failures"]
    assert [(f["stage"], f["count"], f["examples"]) for f in failures] == [
        ("evaluate", 1, ["slowlib.slow.slow"])
    ]
    assert "RocqTimeout" in failures[0]["reason"]
    text = (place.out / "slowlib_card.md").read_text(encoding="utf-8")
    assert "- step evaluate: 1 x " in text


def test_failure_reasons_leave_out_the_theorem_and_its_chain() -> None:
    first = failure_reason("a.b.c", "a.b.c: chain 2 `by [].`: Error: no\nmore")
    second = failure_reason("a.b.d", "a.b.d: chain 2 `done.`: Error: no")
    assert first == second == "chain 2 `…`: Error: no"
    assert failure_reason("a.b.c", None) == "no reason recorded"


@pytest.mark.slow
def test_a_slice_of_mathcomp_with_a_broken_file(new_place, tmp_path: Path) -> None:
    """ssrnat.v and what it requires, with eqtype.v broken: the theorems of the files before it
    are traced (a have that is not has its error), eqtype.v and its dependents are on the card."""
    library = make_slice(tmp_path / "in", broken=True)
    place = new_place()
    place.trace(library, "--prefix", "mathcomp")
    records = place.records("mathcomp")
    assert all(r["status"] == "traced" for r in records if r["parent"] is None)
    assert all(r["error"] for r in records if r["status"] != "traced")
    files = {r["file"] for r in records}
    assert "ssreflect/ssrbool.v" in files
    assert files <= {f"ssreflect/{name}.v" for name in ("ssreflect", "ssrfun", "ssrbool")}
    assert len(records) > 30
    assert sum(len(step["premises"]) for r in records for step in r["steps"]) > 10
    not_traced = {f["file"]: f["status"] for f in place.card("mathcomp")["files_not_traced"]}
    assert not_traced["ssreflect/eqtype.v"] == "build failed"
    assert not_traced["ssreflect/ssrnat.v"] == "build dependency-failed"
