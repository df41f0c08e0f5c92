"""Steps 5 and 6 on evaluated theorems inserted as step 4 writes them: the offline writer,
then the LLM writers against the local OpenAI-compatible server (re-asks, failures kept,
a rerun that sends nothing), and the CoT parser and checker on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
import sqlalchemy as sa

from app import cot, describe, llm
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Annotation, Cot, LibraryObject, ProofStep, Theorem
from app.db.reprocess import reprocess
from app.steps import step_5, step_6
from tests.llm_server import LlmServer, Reply
from tests.rows import add_file

MODEL = "test-model"
GOAL = "m, n, p : nat\n============================\nm + (n + p) = n + (m + p)"


def dep(name: str, type_: str, docstring: str | None = None) -> dict[str, Any]:
    """A dependency as step 4 records it (the docstring in the dictionary's `info`)."""
    info = {"docstring": docstring, "docstring_source": "dictionary", "fullname": None}
    return {"fqn": f"lib.a.{name}", "name": name, "kind": "thm", "type": type_, "info": info}


ADDNA = dep("addnA", "associative addn", "Addition of natural numbers is associative.")
ADDNC = dep("addnC", "commutative addn")
ADDN0 = dep("addn0", "right_id 0 addn")
ADDNCA3 = "Lemma addnCA3 m n p : m + (n + p) = n + (m + p)."
ADDNCA3_STEPS = [
    ("Proof.", GOAL, "", []),
    ("rewrite addnA.", "m, n, p : nat\n====\nm + n + p = n + (m + p)", "- m + (n + p)", [ADDNA]),
    ("by rewrite [m + n]addnC -addnA.", "", "goal closed", [ADDNC]),
    ("Qed.", "", "", []),
]
HAVE = "(*<have>*) have h : n + 0 = n (*proof*) (*</have>*)."
FOO_STEPS = [
    ("move=> n.", "n : nat\n====\nn + 0 + 0 = n", "+ n : nat", []),
    (HAVE, "h : n + 0 = n\n====\nn + 0 + 0 = n", "+ h : n + 0 = n", []),
    ("by rewrite h h.", "", "goal closed", []),
]


def add_theorem(
    session,
    file_id: int,
    fqn: str,
    statement: str,
    steps: list[tuple],
    parent: int | None = None,
    selected: bool = True,
) -> int:
    """A theorem done with step 4: its evaluation and proof steps (chain, goals, diff, deps);
    a top-level one selected by step 3 unless `selected` is false."""
    evaluation = {
        "initial_goal": GOAL,
        "initial_goal_with_gvars": GOAL,
        "global_variables": [{"text": "Variable T : Type.", "names": ["T"]}],
        "statement_dependencies": [],
        "statement_notations": [],
    }
    theorem = Theorem(
        fqn=fqn,
        file_id=file_id,
        parent_id=parent,
        selected=selected and parent is None,
        kind="Lemma",
        statement=statement,
        proof=" ".join(chain for chain, *_ in steps),
        stage=Stage.evaluate,
        status=Status.done,
        evaluation=evaluation,
    )
    session.add(theorem)
    session.flush()
    for index, (chain, goals, diff, deps) in enumerate(steps):
        row = {"chain": chain, "goals": goals, "goals_with_gvars": goals, "goal_diff": diff}
        session.add(ProofStep(theorem_id=theorem.id, index=index, dependencies=deps, **row))
    return theorem.id


def add_object(session, file_id: int, name: str, docstring: str | None, order: int) -> None:
    entry = {"fqn": f"lib.a.{name}", "kind": "thm", "name": name, "type": f"type of {name}"}
    session.add(
        LibraryObject(
            file_id=file_id,
            library_order=order,
            docstring=docstring,
            stage=Stage.evaluate,
            status=Status.done,
            **entry,
        )
    )


@pytest.fixture
def evaluated(migrated: str) -> dict[str, int]:
    """Three evaluated theorems (one with a have and its sub-theorem) and their dictionary."""
    with db.session_factory().begin() as session:
        file_id = add_file(session)
        plain = add_theorem(session, file_id, "lib.a.addnCA3", ADDNCA3, ADDNCA3_STEPS)
        with_have = add_theorem(
            session, file_id, "lib.a.foo", "Lemma foo n : n + 0 + 0 = n.", FOO_STEPS
        )
        sub = [("by rewrite addn0.", "", "goal closed", [ADDN0])]
        statement = "Lemma foo_have_1 n : n + 0 = n."
        add_theorem(session, file_id, "lib.a.foo_have_1", statement, sub, parent=with_have)
        for order, (name, docstring) in enumerate(
            [("addnA", ADDNA["info"]["docstring"]), ("addnC", None), ("addn0", ""), ("muln0", None)]
        ):
            add_object(session, file_id, name, docstring, order)
    return {"plain": plain, "with_have": with_have}


def cot_rows() -> dict[str, Cot]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Theorem.fqn, Cot).join(Cot, Cot.theorem_id == Theorem.id))
        return {fqn: row for fqn, row in rows}


def objects() -> dict[str, LibraryObject]:
    with db.session_factory()() as session:
        return {o.name: o for o in session.execute(sa.select(LibraryObject)).scalars()}


def load(theorem_id: int) -> cot.CotInput:
    with db.session_factory()() as session:
        return step_5.load(session, theorem_id)


def statuses(model: type) -> set[tuple[Stage, Status]]:
    with db.session_factory()() as session:
        return {tuple(row) for row in session.execute(sa.select(model.stage, model.status))}


@pytest.fixture
def no_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (llm.ENV_BASE_URL, llm.ENV_MODEL, llm.ENV_KEY):
        monkeypatch.delenv(name, raising=False)


def test_offline_cots_parse_and_their_scripts_are_the_chains(evaluated, no_endpoint) -> None:
    step_5.command(max_workers=2)
    rows = cot_rows()
    assert set(rows) == {"lib.a.addnCA3", "lib.a.foo", "lib.a.foo_have_1"}
    assert {row.writer for row in rows.values()} == {"offline"}
    assert statuses(Theorem) == {(Stage.cot, Status.done)}
    for fqn, theorem_id in (
        ("lib.a.addnCA3", evaluated["plain"]),
        ("lib.a.foo", evaluated["with_have"]),
    ):
        blocks = [cot.Block.from_json(b) for b in rows[fqn].blocks]
        reparsed = cot.parse_cot(cot.render_cot(blocks))
        assert cot.check_cot(reparsed, load(theorem_id)) == tuple(blocks)
    plain = [cot.Block.from_json(b) for b in rows["lib.a.addnCA3"].blocks]
    scripts = [b.content for b in plain if b.kind == "script"]
    assert scripts == ["rewrite addnA.", "by rewrite [m + n]addnC -addnA."]
    searches = [b for b in plain if b.kind == "search"]
    assert [s.target for s in searches] == ["lib.a.addnA", "lib.a.addnC"]
    # The describer's words, seeded by theorem and target: not the target's docstring.
    assert searches[0].content == describe.query(
        "thm", "addnA", "associative addn", "lib.a.addnCA3:lib.a.addnA"
    )
    assert searches[0].content != ADDNA["info"]["docstring"]
    assert "addnC" not in searches[1].content and "commutative addn" not in searches[1].content
    have = [cot.Block.from_json(b) for b in rows["lib.a.foo"].blocks]
    at = [b.kind for b in have].index("have")
    assert have[at].content == "have h : n + 0 = n." and have[at - 2].kind == "search"
    assert have[at - 2].target is None
    with db.session_factory()() as session:
        notes = session.execute(
            sa.select(Annotation.kind, Annotation.step_index, Annotation.writer).where(
                Annotation.theorem_id == evaluated["plain"]
            )
        ).all()
    offline = "offline"
    assert sorted(notes) == [("proof", -1, offline), ("tactic", 1, offline), ("tactic", 2, offline)]


def test_offline_docstrings_fill_only_searched_entries(evaluated, no_endpoint) -> None:
    step_6.command()
    assert objects()["addnC"].docstring is None, "no CoT yet: nothing is searched"
    step_5.command()
    step_6.command()
    entries = objects()
    for name in ("addnC", "addn0"):
        entry = entries[name]
        assert (entry.docstring_source, entry.force_result) == ("offline", True)
        assert entry.stage == Stage.docstring
        assert entry.docstring and name not in entry.docstring
    assert entries["muln0"].docstring is None and entries["muln0"].stage == Stage.evaluate
    assert entries["addnA"].docstring_source is None and not entries["addnA"].force_result


def test_the_commands_and_the_plain_workers_run_offline(evaluated, subprocess_env) -> None:
    env = {k: v for k, v in subprocess_env.items() if k not in (llm.ENV_BASE_URL, llm.ENV_MODEL)}
    env[llm.ENV_BASE_URL] = "http://127.0.0.1:9/v1"  # --offline wins over the environment

    def rocqcot(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    line = rocqcot("step", "5", "--offline", "--max-workers", "2")
    assert "3 chains of thought written (offline), 0 failed; 0 requests sent" in line
    del env[llm.ENV_BASE_URL]
    assert "2 done, 0 failed" in rocqcot("worker", "--stage", "docstring")
    assert objects()["addn0"].docstring_source == "offline"


def responder(theorems: dict[str, cot.CotInput], bad_cots: list[str]) -> Any:
    """Answers like a good model: sections, CoTs from the offline writer (targets by name),
    JSON docstrings; `bad_cots` are served first for CoT requests."""

    def respond(request: dict[str, Any]) -> Reply:
        system, user = (m["content"] for m in request["messages"][:2])
        if system == llm.prompt("tactic"):
            return Reply("## Breaking it down\nparts\n\n## What happens\nchange\n\n## Summary\nwhy")
        if system == llm.prompt("proof"):
            return Reply("## Statement\nwhat\n\n## Proof\nhow")
        if system == llm.prompt("docstring"):
            return Reply(json.dumps({"docstring": "A fact about natural numbers."}), cost=0.001)
        if bad_cots:
            return Reply(bad_cots.pop(0))
        item = next(t for t in theorems.values() if t.statement in user)
        names = {d.fqn: d.name for _, s in item.tactics() for d in s.dependencies}
        blocks = [cot.Block(b.kind, b.content, names.get(b.target)) for b in cot.offline_cot(item)]
        return Reply(cot.render_cot(blocks), cost=0.01)

    return respond


def use_server(monkeypatch: pytest.MonkeyPatch, server: LlmServer) -> None:
    monkeypatch.setenv(llm.ENV_BASE_URL, server.base_url)
    monkeypatch.setenv(llm.ENV_MODEL, MODEL)
    monkeypatch.setenv(llm.ENV_KEY, "sk-test-key-never-shown-0123456789")


def all_inputs() -> dict[str, cot.CotInput]:
    with db.session_factory()() as session:
        ids = session.execute(sa.select(Theorem.fqn, Theorem.id)).all()
        return {fqn: step_5.load(session, theorem_id) for fqn, theorem_id in ids}


def test_llm_steps_then_a_rerun_sends_zero_requests(evaluated, monkeypatch, subprocess_env):
    inputs = all_inputs()
    with LlmServer(responder(inputs, [])) as server:
        use_server(monkeypatch, server)
        step_5.command(max_workers=4)
        step_6.command(max_workers=4, mean_delay=0.01)
        tactics = sum(1 for item in inputs.values() for _ in item.tactics())
        assert server.count == tactics + 2 * len(inputs) + 2  # + proofs, CoTs, 2 docstrings
        rows = cot_rows()
        assert {row.writer for row in rows.values()} == {f"llm:{MODEL}"}
        assert objects()["addnC"].docstring_source == "llm"
        assert objects()["addnC"].docstring == "A fact about natural numbers."
        sent = server.count
        with db.session_factory().begin() as session:
            reprocess(session, "lib.a.foo", Stage.cot)
            session.execute(
                sa.update(LibraryObject)
                .where(LibraryObject.docstring_source == "llm")
                .values(docstring=None, stage=Stage.evaluate)
            )
        step_5.command(max_workers=4)
        step_6.command(max_workers=4)
        assert server.count == sent, "everything was answered before: nothing is sent"
        assert objects()["addn0"].docstring_source == "llm"
    assert cot_rows()["lib.a.foo"].blocks == rows["lib.a.foo"].blocks
    env = {k: v for k, v in subprocess_env.items() if k != llm.ENV_KEY}
    shown = subprocess.run(
        [sys.executable, "-m", "app", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert f"llm: {sent:,} calls" in shown.stdout and "$0.0320" in shown.stdout


def test_a_cot_that_changes_a_tactic_is_asked_again(evaluated, monkeypatch) -> None:
    inputs = all_inputs()
    good = cot.render_cot(cot.offline_cot(inputs["lib.a.addnCA3"]))
    changed = good.replace("rewrite addnA.", "rewrite addnC.")
    with LlmServer(responder(inputs, [changed])) as server:
        use_server(monkeypatch, server)
        step_5.command(max_workers=1)
        reasked = [r for r in server.requests if len(r["messages"]) == 4]
    assert len(reasked) == 1
    assert reasked[0]["messages"][2] == {"role": "assistant", "content": changed}
    assert "`rewrite addnA.`" in reasked[0]["messages"][3]["content"]
    assert statuses(Theorem) == {(Stage.cot, Status.done)}


def test_a_cot_still_wrong_after_the_re_asks_fails_with_the_answer_kept(
    evaluated, monkeypatch, capsys
):
    """Each theorem is tried three times; the step counts rows, not attempts, and fails."""
    inputs = all_inputs()
    with LlmServer(responder(inputs, ["<think>no code</think>"] * 9)) as server:
        use_server(monkeypatch, server)
        with pytest.raises(llm.StepLeftFailures, match="step 5 left 3 rows failed, most often: "):
            step_5.command(max_workers=1)
    assert "0 chains of thought written (llm:test-model), 3 failed;" in capsys.readouterr().out
    with db.session_factory()() as session:
        query = sa.select(Theorem.error).where(Theorem.status == Status.failed)
        failed = session.execute(query).scalars().all()
    assert len(failed) == 3
    assert all("InvalidAnswer" in e and "stops before the tactic" in e for e in failed)
    assert all("<think>no code</think>" in e and "request_hash" in e for e in failed)
    assert cot_rows() == {}


def test_malformed_docstring_json_is_asked_again(evaluated, monkeypatch, no_endpoint) -> None:
    step_5.command()
    good = Reply('{"docstring": "Adding zero on the right changes nothing."}')
    with LlmServer(lambda _request: good) as server:
        server.script(
            Reply('{"docstring": "unterminated'), Reply('{"docstring": "addnC, a lemma"}')
        )
        use_server(monkeypatch, server)
        step_6.command(max_workers=1)
        assert server.count == 4
    docstrings = {o.docstring for o in objects().values() if o.docstring_source == "llm"}
    assert docstrings == {"Adding zero on the right changes nothing."}


def test_the_budget_stops_the_step_and_a_larger_one_resumes(evaluated, monkeypatch, tmp_path):
    """A CoT costs $0.01 (as reported), the most an answer of `max_tokens` can cost at the
    prices: the step stops before the budget would be exceeded, not after."""
    config = tmp_path / "step_5.yaml"
    config.write_text(
        "request_config: {max_tokens: 100}\n"
        "prompt_usd_per_million: 1.0\ncompletion_usd_per_million: 100.0\n"
    )
    inputs = all_inputs()
    with LlmServer(responder(inputs, [])) as server:
        use_server(monkeypatch, server)
        with pytest.raises(llm.StepLeftFailures, match="BudgetReached: budget reached"):
            step_5.command(max_workers=4, budget_usd=0.025, config=config)
        with db.session_factory()() as session:
            assert 0.01 < llm.usage(session).cost_usd <= 0.025
        assert Status.failed in {status for _, status in statuses(Theorem)}
        step_5.command(max_workers=4, budget_usd=10.0, config=config)
    assert statuses(Theorem) == {(Stage.cot, Status.done)}


def test_parse_cot_is_strict() -> None:
    good = (
        '<think>a < b</think>\n<search target="addnC">commutativity</search>'
        "<script>move=> <-.</script>"
    )
    assert [b.kind for b in cot.parse_cot(good)] == ["think", "search", "script"]
    assert cot.parse_cot(good)[1].target == "addnC"
    for bad, reason in [
        ("<think>x</think> stray", "outside any block"),
        ("<think>x</think><result>r</result>", "unknown tag <result>"),
        ("<think>x", "never closed"),
        ("<think>x <script>y</script></think>", "cannot nest"),
        ("<script>x</script><think> </think>", "empty"),
        ('<think kind="x">y</think>', "attributes"),
        ("", "no block"),
    ]:
        with pytest.raises(cot.CotError, match=reason):
            cot.parse_cot(bad)


def test_check_cot_finds_changed_dropped_invented_and_unsearched_code(evaluated) -> None:
    item = load(evaluated["with_have"])
    good = list(cot.offline_cot(item))
    assert cot.check_cot(good, item) == tuple(good)
    scripts = [i for i, b in enumerate(good) if b.kind == "script"]
    merged = cot.Block("script", "by rewrite h\n   h.")
    assert cot.check_cot([*good[: scripts[-1]], merged], item)[-1] == merged
    cases = {
        "not the proof's next tactic": [*good[: scripts[0]], cot.Block("script", "move=> m.")],
        "stops before the tactic `by rewrite h h.`": good[: scripts[-1]],
        "after the last tactic": [*good, cot.Block("script", "done.")],
        "does not follow a search": [b for b in good if b.kind != "search"],
        "targets `nothing`": [cot.Block("search", "q", "nothing"), *good],
    }
    for reason, blocks in cases.items():
        with pytest.raises(cot.CotError, match=reason):
            cot.check_cot(blocks, item)


def test_step_6_all_writes_every_missing_docstring_after_an_estimate(
    evaluated, monkeypatch, capsys
) -> None:
    """The LLM4Docq-style dictionary: entries no CoT searches get a docstring too, never
    forced into results."""
    step_6.command(offline=True)
    assert objects()["muln0"].docstring is None, "not searched: no docstring without --all"
    step_5.command(offline=True)
    with LlmServer(responder(all_inputs(), [])) as server:
        use_server(monkeypatch, server)
        step_6.command(all_entries=True, max_workers=2)
        missing = [o for o in objects().values() if o.docstring_source == "llm"]
        failed = [(o.name, o.error) for o in objects().values() if o.status == Status.failed]
        assert not failed
        assert server.count == len(missing) >= 3
    out = capsys.readouterr().out
    assert f"step 6: {len(missing)} entries without a docstring: about " in out
    entries = objects()
    assert entries["muln0"].docstring == "A fact about natural numbers."
    assert not entries["muln0"].force_result
    assert entries["addnC"].force_result and entries["addnC"].docstring_source == "llm"
    assert entries["addnA"].docstring_source is None  # it had one already
