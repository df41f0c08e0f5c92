"""The command line against the real database: status, reprocess, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Cot, Example, Have, ProofStep, Theorem
from app.db.reprocess import reprocess
from app.errors import RocqcotError, UnknownTheorem
from app.plural import plural
from app.steps import probe
from tests.rows import add_file


def rocqcot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=120
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("rocqcot: error: ")
    return lines[0]


def test_status_counts_rows_per_stage_and_status(
    migrated: str, subprocess_env: dict[str, str]
) -> None:
    with db.session_factory().begin() as session:
        probe.add_probes(session, [{}] * 5)
    assert (
        rocqcot(subprocess_env, "worker", "--stage", "probe", "--concurrency", "2").returncode == 0
    )
    with db.session_factory().begin() as session:
        probe.add_probes(session, [{}] * 2)
    result = rocqcot(subprocess_env, "status", "--json")
    assert result.returncode == 0, result.stderr
    counts = {
        (r["table_name"], r["stage"], r["status"]): r["rows"] for r in json.loads(result.stdout)
    }
    assert counts == {("probes", "probe", "done"): 5, ("probes", "probe", "pending"): 2}
    text = rocqcot(subprocess_env, "status").stdout
    assert "probes" in text and "pending" in text


def test_every_command_brings_a_fresh_database_to_head(
    database_url: str, subprocess_env: dict[str, str]
) -> None:
    assert db.current_revision() is None
    assert rocqcot(subprocess_env, "status").returncode == 0
    assert db.current_revision() is not None


def test_unknown_stage_is_a_one_line_error(database_url: str, subprocess_env: dict[str, str]):
    error = one_line_error(rocqcot(subprocess_env, "worker", "--stage", "nonsense"))
    assert "unknown stage 'nonsense'" in error and "probe" in error


def test_unreachable_database_is_a_one_line_error(subprocess_env: dict[str, str]) -> None:
    env = dict(subprocess_env, DATABASE_URL="postgresql://nobody@127.0.0.1:9/nowhere")
    error = one_line_error(rocqcot(env, "status"))
    assert "cannot connect to" in error and "127.0.0.1" in error


def test_reprocess_unknown_fqn_is_a_one_line_error(migrated: str, subprocess_env: dict[str, str]):
    error = one_line_error(rocqcot(subprocess_env, "reprocess", "no.such.lemma", "--from", "haves"))
    assert "no theorem named 'no.such.lemma'" in error


def test_every_step_is_built(subprocess_env: dict[str, str]) -> None:
    result = rocqcot(subprocess_env, "step", "--help")
    assert result.returncode == 0 and "not built yet" not in result.stdout
    assert "split the CoTs into training examples" in result.stdout


def _theorem_with_derived_rows() -> int:
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        theorem = Theorem(
            fqn="lib.a.foo",
            file_id=file_id,
            kind="Lemma",
            statement="Lemma foo : True.",
            proof="Proof. by []. Qed.",
            tagged_proof="tagged",
            stage=Stage.cot,
            status=Status.done,
            attempts=1,
            evaluation={"initial_goal": "True"},
        )
        session.add(theorem)
        session.flush()
        session.add(
            Theorem(
                fqn="lib.a.foo_have_0",
                file_id=file_id,
                parent_id=theorem.id,
                kind="Lemma",
                statement="s",
                proof="p",
                stage=Stage.evaluate,
                status=Status.done,
            )
        )
        session.add(Have(theorem_id=theorem.id, index=0, tactic="have", statement="s", proof="p"))
        session.add(
            ProofStep(
                theorem_id=theorem.id,
                index=0,
                chain="by [].",
                goals="",
                goals_with_gvars="",
                goal_diff="",
            )
        )
        cot = Cot(theorem_id=theorem.id, writer="offline", stage=Stage.split, status=Status.done)
        session.add(cot)
        session.flush()
        session.add(Example(cot_id=cot.id, index=0))
        return theorem.id


def _count(model: type, **where: object) -> int:
    with db.session_factory()() as session:
        query = sa.select(sa.func.count()).select_from(model).filter_by(**where)
        return session.execute(query).scalar_one()


def test_reprocess_from_evaluate_keeps_haves_and_drops_later_rows(migrated: str) -> None:
    theorem_id = _theorem_with_derived_rows()
    with db.session_factory().begin() as session:
        reprocess(session, "lib.a.foo", Stage.evaluate)
    with db.session_factory()() as session:
        theorem = session.get(Theorem, theorem_id)
    assert (theorem.stage, theorem.status, theorem.attempts) == (Stage.evaluate, Status.pending, 0)
    assert theorem.tagged_proof == "tagged" and theorem.evaluation is None
    assert _count(Have) == 1
    assert _count(ProofStep) == _count(Cot) == _count(Example) == 0
    assert _count(Theorem) == 1, "the have sub-theorem is derived by step 4"


def test_reprocess_from_haves_drops_the_haves_too(migrated: str) -> None:
    theorem_id = _theorem_with_derived_rows()
    with db.session_factory().begin() as session:
        reprocess(session, "lib.a.foo", Stage.haves)
    with db.session_factory()() as session:
        theorem = session.get(Theorem, theorem_id)
    assert theorem.stage == Stage.haves and theorem.tagged_proof is None
    assert _count(Have) == 0


def test_reprocess_from_split_resets_only_the_cot(migrated: str) -> None:
    _theorem_with_derived_rows()
    with db.session_factory().begin() as session:
        reprocess(session, "lib.a.foo", Stage.split)
    assert _count(Example) == 0
    assert _count(Cot, stage=Stage.split, status=Status.pending) == 1
    assert _count(ProofStep) == 1


def test_reprocess_refuses_file_level_stages_and_unknown_names(migrated: str) -> None:
    _theorem_with_derived_rows()
    with db.session_factory().begin() as session, pytest.raises(RocqcotError, match="per-theorem"):
        reprocess(session, "lib.a.foo", Stage.build)
    with db.session_factory().begin() as session, pytest.raises(UnknownTheorem):
        reprocess(session, "lib.a.bar", Stage.haves)


def test_status_says_which_theorems_are_not_selected(
    migrated: str, subprocess_env: dict[str, str]
) -> None:
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        for index in range(3):
            session.add(Theorem(fqn=f"lib.a.t{index}", file_id=file_id, kind="Lemma",
                                statement="s", proof="p", stage=Stage.select, status=Status.done,
                                selected=index == 0))  # fmt: skip
    rows = json.loads(rocqcot(subprocess_env, "status", "--json").stdout)
    counts = {(r["table_name"], r["stage"], r["status"]): r["rows"] for r in rows}
    assert counts[("theorems", "select", "not selected")] == 2
    assert counts[("theorems", "select", "done")] == 1
    assert "not selected" in rocqcot(subprocess_env, "status").stdout


def test_the_embedded_server_is_reachable_with_psql_and_stops(tmp_path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"ROCQCOT_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    url = rocqcot(env, "db", "url")
    assert url.returncode == 0, url.stderr
    assert (
        url.stdout.startswith("postgresql://postgres@/rocqcot?host=")
        and "+psycopg" not in url.stdout
    )
    psql = rocqcot(env, "db", "psql", "--", "-At", "-c", "SELECT 6 * 7")
    assert psql.returncode == 0 and psql.stdout.strip() == "42", psql.stderr
    stopped = rocqcot(env, "db", "stop")
    assert stopped.returncode == 0 and stopped.stdout.startswith("stopped the embedded server")
    again = rocqcot(env, "db", "stop")
    assert "is not running" in again.stdout
    assert rocqcot(env, "status").returncode == 0  # a command starts it again
    stopped = rocqcot(env, "db", "stop")
    assert stopped.stdout.startswith("stopped"), stopped.stderr


def test_db_stop_refuses_a_server_it_does_not_run(subprocess_env: dict[str, str]) -> None:
    assert "DATABASE_URL is set" in one_line_error(rocqcot(subprocess_env, "db", "stop"))


def test_step_0_run_and_trace_take_the_same_library_by_default() -> None:
    from app.steps.step_0 import default_library, library_arguments

    assert library_arguments(False, None, None) == default_library(False)
    assert default_library(False)["prefix"] == "mathcomp.ssreflect"
    assert default_library(True)["source"] == default_library(False)["source"].parent


def test_counts_are_plural_only_when_not_one() -> None:
    assert [plural(n, "example") for n in (0, 1, 2)] == ["0 examples", "1 example", "2 examples"]
    assert (
        plural(1, "entry", "entries") == "1 entry" and plural(3, "entry", "entries") == "3 entries"
    )
