"""Step 4: the text helpers directly, then the step on a small library of our own (two files
over the installed MathComp) with real Rocq and PostgreSQL: sections and their variables,
bullets and braces, every form of tagged have and the sub-theorems they become, a chain split
by step 2, a proof that does not replay, names as `Locate` gives them, reruns, the export;
and (slow) the whole of MathComp."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app import evaluator
from app.chains import Alignment, parse_chains, untagged
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import LibraryObject, ProofStep, SourceFile, Theorem
from app.goal_diff import goal_diff, render
from app.have_in_place import LemmaView, in_place, proved_by
from app.rocq.goals import Goal, Goals, Hypothesis
from app.rocq.session import RocqSession
from app.rocq.state import LoadPath, State
from app.rocq.toolchain import current
from app.steps import step_4
from tests import original_readers
from tests.test_steps_0_1 import rocqcot

OPEN, CLOSE = "(*<have>*) ", " (*</have>*)"

BASE_V = """From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.

(******************************************************************************)
(* Small arithmetic helpers.                                                  *)
(*   double n == twice n                                                      *)
(*   triple n == three times n, as n + double n                               *)
(******************************************************************************)

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

Definition double n := n + n.
Definition triple n := n + double n.
Fixpoint total (n : nat) : nat := if n is m.+1 then n + total m else 0.
Inductive color := Red | Green.
Record point := Point { px : nat; py : nat }.
Notation "n .*2'" := (double n) (at level 2, format "n .*2'") : nat_scope.
Notation twice := double.

Lemma doubleE n : double n = n + n.
Proof. by []. Qed.

Module Sub.
Lemma tripleE n : triple n = n + (n + n).
Proof. by rewrite /triple doubleE. Qed.
End Sub.
"""

PROOFS_V = """From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.
From demo Require Import base.

Set Implicit Arguments.
Unset Strict Implicit.
Unset Printing Implicit Defensive.

Section Doubling.
Variables (k : nat) (T : Type).
Hypothesis k_pos : 0 < k.
Let kk := k + k.

Definition dk := double k.

Lemma dkE : dk = kk.
Proof. by rewrite /dk /kk doubleE. Qed.

Lemma dk_pos : 0 < dk.
Proof.
rewrite dkE /kk.
have h : 0 < k + k.
  by rewrite addn_gt0 k_pos.
exact: h.
Qed.

Lemma double_le n : n <= double n.
Proof.
rewrite doubleE.
have le : n <= n + n.
  rewrite -[n in n <= _]addn0.
  by rewrite leq_add2l.
by [].
Qed.
End Doubling.

Lemma bullets n : n.*2' = twice n /\\ 0 <= n.
Proof.
split.
- by [].
- case: n => [|m].
  + by [].
  + { by []. }
Qed.

Lemma branchy (n : nat) : (n == n) && true.
Proof.
case: n => [|m]; [by [] | have e : m.+1 == m.+1 by rewrite eqxx].
by rewrite e.
Qed.

Lemma byhave n : n + 0 = n.
Proof. by have -> : n + 0 = n by rewrite addn0. Qed.

Lemma nested n : n + 0 = n.
Proof.
have h : n + 0 = n.
  have z : n + 0 = n + 0 by [].
  by rewrite addn0.
exact: h.
Qed.

Lemma anon (n m : nat) : n = m -> m = n.
Proof.
move=> ?.
have e : n = m by [].
by rewrite e.
Qed.

Lemma split_me n : n <= n + n.
Proof.
move=> /=; have h : n <= n + n by rewrite leq_addr.
exact: h.
Qed.

Lemma focused n : n + 0 = n /\\ 0 + n = n.
Proof.
have h : n + 0 = n /\\ 0 + n = n.
  split.
  { by rewrite addn0. }
  by [].
exact: h.
Qed.
"""

TAGS = {
    "dk_pos": (
        "have h : 0 < k + k.\n  by rewrite addn_gt0 k_pos.",
        f"{OPEN}have h : 0 < k + k.\n  by rewrite addn_gt0 k_pos{CLOSE}.",
    ),
    "double_le": (
        "have le : n <= n + n.\n  rewrite -[n in n <= _]addn0.\n  by rewrite leq_add2l.",
        f"{OPEN}have le : n <= n + n.\n  rewrite -[n in n <= _]addn0.\n"
        f"  by rewrite leq_add2l{CLOSE}.",
    ),
    "branchy": (
        "have e : m.+1 == m.+1 by rewrite eqxx]",
        f"{OPEN}have e : m.+1 == m.+1 by rewrite eqxx{CLOSE}]",
    ),
    "byhave": (
        "have -> : n + 0 = n by rewrite addn0.",
        f"{OPEN}have -> : n + 0 = n by rewrite addn0{CLOSE}.",
    ),
    "nested": (
        "have h : n + 0 = n.\n  have z : n + 0 = n + 0 by [].\n  by rewrite addn0.",
        f"{OPEN}have h : n + 0 = n.\n  {OPEN}have z : n + 0 = n + 0 by []{CLOSE}.\n"
        f"  by rewrite addn0{CLOSE}.",
    ),
    "anon": ("have e : n = m by [].", f"{OPEN}have e : n = m by []{CLOSE}."),
    "focused": (  # braces in the have's proof: the parent's goal waits in the background
        "have h : n + 0 = n /\\ 0 + n = n.\n  split.\n  { by rewrite addn0. }\n  by [].",
        f"{OPEN}have h : n + 0 = n /\\ 0 + n = n.\n  split.\n  {{ by rewrite addn0. }}\n"
        f"  by []{CLOSE}.",
    ),
    "split_me": (  # step 2 split the chain before the have
        "move=> /=; have h : n <= n + n by rewrite leq_addr.",
        f"move=> /=.\n{OPEN}have h : n <= n + n by rewrite leq_addr{CLOSE}.",
    ),
    "doubleE": ("by [].", "by rewrite nosuchlemma."),  # a proof that does not replay
}


def make_demo(root: Path) -> Path:
    """The `demo` library: helpers with header documentation, then proofs over them."""
    library = root / "demo"
    library.mkdir(parents=True)
    (library / "base.v").write_text(BASE_V)
    (library / "proofs.v").write_text(PROOFS_V)
    return library


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The library and its output folder, shared so that coqc builds it once."""
    root = tmp_path_factory.mktemp("demo")
    return make_demo(root / "in"), root / "out"


def build(demo: tuple[Path, Path], env: dict[str, str]) -> None:
    """Steps 0 and 1 on the demo library."""
    source, output = demo
    args = ("step", "0", "--input", str(source), "--output", str(output), "--prefix", "demo")
    step0 = rocqcot(env, *args)
    assert step0.returncode == 0, step0.stderr
    assert rocqcot(env, "step", "1").returncode == 0


def select_and_tag() -> None:
    """What steps 2 and 3 would leave: every theorem selected, the haves tagged."""
    with db.session_factory().begin() as session:
        for theorem in session.execute(sa.select(Theorem)).scalars():
            theorem.stage, theorem.status, theorem.selected = Stage.select, Status.done, True
            old, new = TAGS.get(theorem.fqn.rpartition(".")[2], ("", ""))
            if old:
                assert old in theorem.proof
                theorem.tagged_proof = theorem.proof.replace(old, new)


def rows() -> dict[str, Theorem]:
    with db.session_factory()() as session:
        return {t.fqn: t for t in session.execute(sa.select(Theorem)).scalars()}


def steps_of(fqn: str) -> list[ProofStep]:
    with db.session_factory()() as session:
        return list(
            session.execute(
                sa.select(ProofStep)
                .join(Theorem, ProofStep.theorem_id == Theorem.id)
                .where(Theorem.fqn == fqn)
                .order_by(ProofStep.index)
            ).scalars()
        )


def dump() -> list[tuple]:
    with db.session_factory()() as session:
        return [
            tuple(row)
            for table in (Theorem.__table__, ProofStep.__table__, LibraryObject.__table__)
            for row in session.execute(sa.select(table).order_by(table.c.id))
        ]


# --- Text ------------------------------------------------------------------------------------


def test_chains_group_bullets_and_braces_and_hide_have_proofs() -> None:
    proof = (
        "Proof.\nsplit.\n- by [].\n- case: n => [|m].\n  + { by []. }\n"
        f"  + {OPEN}have e : m = m.\n    by [].\n    all: by []{CLOSE}.\n  by rewrite e.\n"
        f"{{ {OPEN}have f : 0 = 0 by []{CLOSE}. }}\nQed."
    )
    chains = parse_chains(proof)
    assert [c.text for c in chains] == [
        "split.",
        "- by [].",
        "- case: n => [|m].",
        "+ { by []. }",
        f"+ {OPEN}have e : m = m (*proof*){CLOSE}.",
        "by rewrite e.",
        f"{{ {OPEN}have f : 0 = 0 (*proof*){CLOSE}. }}",
    ]
    have = chains[4]
    assert have.have is not None and have.have.proof == "by [].\n    all: by []."
    assert have.lead == f"+ {OPEN}have e : m = m." and have.sentences[-1] == f"all: by []{CLOSE}."
    assert proof[slice(*have.named[0])] == f"+ {OPEN}have e : m = m"
    sub = parse_chains(proof, have.have.proof_start, have.have.proof_end)
    assert [c.text for c in sub] == ["by [].", "all: by []."]
    assert proof[sub[1].start : sub[1].end].rstrip() == "all: by []"  # the `.` is after the tag


@pytest.mark.parametrize(
    ("sentence", "statement", "proof", "lead", "goal"),
    [
        (f"{OPEN}have h : x = x by []{CLOSE}.", "have h : x = x", "by [].", "have h : x = x.", 0),
        (f"by {OPEN}have -> : x = y by t{CLOSE}; done.", "have -> : x = y", "by t.",
         "have -> : x = y.", 0),
        (f"{OPEN}have [a b] : P /\\ Q; first by split{CLOSE}.", "have [a b] : P /\\ Q",
         "by split.", "have [a b] : P /\\ Q.", 0),
        (f"case: n; [by [] | done | {OPEN}have e (k : nat) : k = k by exact: erefl{CLOSE}].",
         "have e (k : nat) : k = k", "by exact: erefl.",
         "case: n. 3: (have e (k : nat) : k = k).", 2),
    ],
)  # fmt: skip
def test_have_forms(sentence: str, statement: str, proof: str, lead: str, goal: int) -> None:
    [chain] = parse_chains(sentence)
    assert chain.have is not None
    assert (chain.have.statement, chain.have.proof) == (statement, proof)
    assert (chain.lead, chain.goal_index) == (lead, goal)
    assert sentence[chain.have.statement_start : chain.have.statement_end] == statement
    assert "(*proof*)" in chain.text and proof.rstrip(".") not in chain.text


def test_alignment_maps_the_tagged_proof_onto_the_file() -> None:
    original = "move=> x; have h : x = x by [].\nexact: h."
    tagged = f"move=> x.\n{OPEN}have h : x = x by []{CLOSE}.\nexact: h."
    alignment = Alignment(original, tagged, 100)
    for word in ("have h", "exact", "by []"):
        assert alignment.to_file(tagged.index(word)) == 100 + original.index(word)
    assert untagged(tagged) == "move=> x.\nhave h : x = x by [].\nexact: h."


def _goal(conclusion: str, *hypotheses: tuple[str, str]) -> Goal:
    return Goal(tuple(Hypothesis((name,), None, type_) for name, type_ in hypotheses), conclusion)


def test_a_have_lemma_s_goals_are_read_from_the_parent_walk() -> None:
    """The lemma's goals are the parent's less the goals the have left besides its own (in the
    foreground, or in the background while the proof focuses), read only when those are
    untouched and the proof is the last sentences of the have's chain."""
    have, rest, outer = (Goal((), text) for text in ("0 < k", "P k", "Q"))
    split = (Goal((), "0 < k.+1"), Goal((), "k != 0"))
    view = LemmaView.opened(Goals((have, rest), (outer,), in_proof=True), have)
    assert view is not None
    assert view.goals(Goals((have, rest), (outer,), in_proof=True)) == Goals((have,), in_proof=True)
    after_case = view.goals(Goals((*split, rest), (outer,), in_proof=True))
    assert after_case == Goals(split, in_proof=True)
    focused = view.goals(Goals(split[:1], (split[1], rest, outer), in_proof=True))  # `{`
    assert focused == Goals(split[:1], split[1:], in_proof=True)
    done = view.goals(Goals((), (split[1], rest, outer), in_proof=True))  # `}` still to come
    assert done == Goals((), split[1:], in_proof=True) and not done.finished
    assert view.goals(Goals((rest,), (outer,), in_proof=True)).finished
    assert view.goals(Goals((split[1], Goal((), "P 0")), (outer,), in_proof=True)) is None
    assert view.goals(Goals((rest,), (), in_proof=True)) is None  # the background touched
    assert LemmaView.opened(Goals((rest, have), in_proof=True), have) is None  # not first
    text = f"{OPEN}have h : 0 < k.\ncase: k.\n{{ by []. }}\nby []{CLOSE}."
    [chain] = parse_chains(text, 0)
    assert chain.have is not None
    proof = parse_chains(text, chain.have.proof_start, chain.have.proof_end)
    assert [c.sentences for c in proof] == [("case: k.",), ("{", "by [].", "}"), ("by [].",)]
    assert in_place(have, chain, proof) == 1  # the have's own sentence comes first
    assert in_place(None, chain, proof) is None  # the lemma may display otherwise
    assert in_place(have, chain, parse_chains("case: k.\nby done.", 0)) is None  # not the chain's
    [by] = parse_chains("by rewrite addn_gt0.", 0)
    assert proved_by(have, (by,)) == (Goals((have,), in_proof=True), Goals(in_proof=True))
    assert in_place(have, chain, (by,)) is None and proved_by(have, proof) is None
    assert proved_by(None, (by,)) is None


def test_goal_diff_phrases() -> None:
    g1 = _goal("P n", ("n", "nat"))
    g2 = _goal("Q n", ("n", "nat"), ("h", "n = 0"))
    g3 = _goal("R", ("m", "nat"))
    assert goal_diff([g1], [g1]) == ""
    assert goal_diff([g1], [g2]) == (
        "Goals modified:\n\nThe goal 1 is changed:\nHypotheses added:\nh : n = 0\n\n"
        "The goal changed to:\nQ n"
    )
    assert goal_diff([g1], [g3, g1]).startswith("Goals added:\n\nm : nat\n")
    assert "The goal 1 is changed and is now the goal 2:" in goal_diff([g1], [g3, g2])
    assert goal_diff([g1, g3], [g3]) == (
        f"1 goal has been removed.\nThe new goal to prove is:\n{g3.pretty}"
    )
    assert goal_diff([g1, g3], []) == (
        "2 goals have been removed.\nThere is no goal remaining, the proof is finished."
    )
    removed = goal_diff([g2], [g1])
    assert "Hypotheses removed:\nh : n = 0" in removed and "The goal changed to:\nP n" in removed
    hidden = frozenset({"n"})
    assert render(Goals((g2,), in_proof=True), hidden).splitlines()[0] == "h : n = 0"
    assert render(Goals((), (g1,), in_proof=True)).startswith("This subproof is complete")
    assert render(Goals(in_proof=True)) == "No more goals."


# --- The step --------------------------------------------------------------------------------


def test_step_4_replays_annotates_and_reruns(
    demo, subprocess_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build(demo, subprocess_env)
    select_and_tag()
    read: dict[str, int] = {}  # the have lemmas evaluated inside the parent's walk: their steps
    original = evaluator.Evaluator._in_place

    def spy(self: evaluator.Evaluator, parent: str, have: Any, *args: Any) -> Any:
        state, have = original(self, parent, have, *args)
        if have.in_place is not None:
            read[f"{parent}_have_{have.index}"] = len(have.in_place.steps)
        return state, have

    monkeypatch.setattr(evaluator.Evaluator, "_in_place", spy)
    step_4.command(dictionary=None, max_workers=1, pet_timeout=60.0, all_=False)
    # double_le's two sentences, braces in focused's, nested's own have
    assert {name.rpartition(".")[2]: n for name, n in read.items()} == {
        "double_le_have_1": 2, "focused_have_1": 3, "nested_have_1": 2,
    }  # fmt: skip
    theorems = rows()
    assert theorems["demo.base.doubleE"].status == Status.failed
    error = theorems["demo.base.doubleE"].error or ""
    assert "chain 1 of 1 `by rewrite nosuchlemma.`" in error and "nosuchlemma" in error
    top = {fqn: t for fqn, t in theorems.items() if t.parent_id is None}
    assert sum(t.status == Status.done for t in top.values()) == len(top) - 1
    subs = {fqn for fqn, t in theorems.items() if t.parent_id is not None}
    assert subs == {
        f"demo.proofs.{name}_have_1"
        for name in (
            "dk_pos",
            "double_le",
            "branchy",
            "byhave",
            "nested",
            "anon",
            "split_me",
            "focused",
        )
    } | {"demo.proofs.nested_have_1_have_1"}
    for fqn, theorem in theorems.items():
        if theorem.status == Status.done:
            last = steps_of(fqn)[-1]
            assert last.goals == "No more goals.", fqn
            assert last.goal_diff.endswith("There is no goal remaining, the proof is finished.")
    check_sections_and_variables(theorems)
    check_haves(theorems)
    assert check_haves_as_lemmas(theorems, demo[1] / "proofs.v") == len(subs)
    assert check_dependencies(demo[1]) >= 5
    unknown, total = check_dictionary_fqns("demo")
    assert unknown == [] and total >= 5
    before = dump()
    step_4.command(dictionary=None, max_workers=1, pet_timeout=60.0, all_=False)
    assert dump() == before, "a rerun changed rows"
    check_export(tmp_path / "result.json")


def check_sections_and_variables(theorems: dict[str, Theorem]) -> None:
    evaluation = theorems["demo.proofs.dk_pos"].evaluation or {}
    variables = evaluation["global_variables"]
    assert [v["text"] for v in variables] == [
        "Variable k : nat.",
        "Variable T : Type.",
        "Variable k_pos : 0 < k.",
        "Let kk : nat := k + k.",
    ]
    nat = f"{current().core_prefix}.Init.Datatypes.nat"  # `Corelib.…` since Rocq 9
    assert [d["fqn"] for d in variables[0]["dependencies"]] == [nat]
    assert variables[1]["dependencies"] == [] and variables[2]["notations"][0]["scope"]
    assert evaluation["initial_goal"] == "============================\n0 < dk"
    assert evaluation["initial_goal_with_gvars"].startswith("k : nat\nT : Type\nk_pos : 0 < k")
    first = steps_of("demo.proofs.dk_pos")[0]
    assert first.chain == "rewrite dkE /kk." and "k_pos" in first.goals_with_gvars
    assert "k_pos" not in first.goals
    [dke] = first.dependencies  # used inside its own section: its fqn leaves the section out
    assert (dke["fqn"], dke["kind"], dke["type"]) == ("demo.proofs.dkE", "thm", "dk = kk")
    assert dke["located"] == "demo.proofs.Doubling.dkE"
    bullets = [s.chain for s in steps_of("demo.proofs.bullets")]
    assert bullets == ["split.", "- by [].", "- case: n => [|m].", "+ by [].", "+ { by []. }"]
    notations = theorems["demo.proofs.bullets"].evaluation["statement_notations"]
    mine = next(n for n in notations if n["notation"] == "_ .*2'")
    assert mine["scope"] == "nat_scope" and mine["info"]["fullname"].startswith("Notation")


def check_haves(theorems: dict[str, Theorem]) -> None:
    parent, sub = theorems["demo.proofs.dk_pos"], theorems["demo.proofs.dk_pos_have_1"]
    assert (sub.parent_id, sub.have_index) == (parent.id, 1)
    assert sub.statement == "Lemma dk_pos_have_1 : 0 < k + k."
    assert sub.proof == "by rewrite addn_gt0 k_pos."
    assert steps_of(parent.fqn)[1].chain == f"{OPEN}have h : 0 < k + k (*proof*){CLOSE}."
    assert parent.evaluation["haves"] == [{"index": 1, "chain": 1, "fqn": sub.fqn}]
    [only] = steps_of(sub.fqn)
    assert only.chain == "by rewrite addn_gt0 k_pos." and only.dependencies[0]["name"] == "addn_gt0"
    anon = theorems["demo.proofs.anon_have_1"]
    assert anon.statement == "Lemma anon_have_1 (n m : nat) (Hyp : n = m) : n = m."  # was _Hyp_
    nested = theorems["demo.proofs.nested_have_1"]
    assert nested.tagged_proof and nested.proof.startswith("have z : n + 0 = n + 0 by [].")
    assert theorems["demo.proofs.nested_have_1_have_1"].parent_id == nested.id
    assert theorems["demo.proofs.split_me"].evaluation["replay"] == "script"
    assert steps_of("demo.proofs.split_me")[0].chain == "move=> /=."
    branchy = steps_of("demo.proofs.branchy")[0].chain
    assert branchy == f"case: n => [|m]; [by [] | {OPEN}have e : m.+1 == m.+1 (*proof*){CLOSE}]."


def check_haves_as_lemmas(theorems: dict[str, Theorem], file: Path) -> int:
    """Each have sub-theorem's rows are what Rocq shows when its statement runs as a lemma after
    the parent's `Qed` and its chains run after it, whether step 4 ran its proof again or took
    it from where the have is (one `by` chain, or its chains inside the parent's walk);
    returns how many were checked."""
    checked = 0
    with RocqSession() as session:
        start = session.start(file, [LoadPath(str(file.parent), "demo")])
        for fqn, sub in theorems.items():
            if sub.parent_id is None:
                continue
            steps = steps_of(fqn)
            chains = parse_chains(sub.tagged_proof or sub.proof)
            assert [c.text for c in chains] == [step.chain for step in steps], fqn
            assert sub.evaluation is not None, fqn
            state = session.run(State(start.file, sub.byte_end), sub.evaluation["statement"])
            assert state.goals is not None
            assert render(state.goals) == sub.evaluation["initial_goal_with_gvars"], fqn
            for chain, step in zip(chains, steps, strict=True):
                state = session.run(state, chain.script)
                assert state.goals is not None
                assert render(state.goals) == step.goals_with_gvars, (fqn, step.chain)
            assert state.proof_finished, fqn
            checked += 1
    return checked


def check_dependencies(output: Path, prefix: str = "demo", files: int = 1) -> int:
    """Every dependency's located name is one `Locate` gives for the name as written, at that point
    (in the proof of the theorem it was found in, its sections open), for the chains of the
    evaluated theorems of the first `files` files that have some; returns how many."""
    with db.session_factory()() as session:
        found = session.execute(
            sa.select(SourceFile.path, Theorem.byte_end, ProofStep.dependencies)
            .join(Theorem, Theorem.file_id == SourceFile.id)
            .join(ProofStep, ProofStep.theorem_id == Theorem.id)
            .where(sa.func.jsonb_array_length(ProofStep.dependencies) > 0)
            .order_by(SourceFile.dependency_order.desc(), Theorem.byte_end)
        ).all()
    paths = list(dict.fromkeys(path for path, _, _ in found))[:files]
    checked = 0
    with RocqSession() as session:
        for path in paths:
            file = session.start(output / path, [LoadPath(str(output), prefix)]).file
            for _, end, dependencies in (row for row in found if row[0] == path):
                state = State(file, end - len("Qed."))  # inside the proof, its sections open
                for dependency in dependencies:
                    located = session.query(state, f"Locate {dependency['name']}.")
                    assert dependency["located"] in re.findall(r"\S+\.\S+", located), located
                    assert dependency["type"]
                    checked += 1
    return checked


def check_dictionary_fqns(prefix: str) -> tuple[list[str], int]:
    """The fqns of the library's dependencies (chains, statements, section variables) that
    are no dictionary entry's (the searches cannot find them), and how many there are in all."""
    with db.session_factory()() as session:
        known = set(session.execute(sa.select(LibraryObject.fqn)).scalars())
        chains = session.execute(sa.select(ProofStep.dependencies)).scalars()
        evaluations = session.execute(sa.select(Theorem.evaluation)).scalars()
        fqns = [d["fqn"] for deps in chains for d in deps]
        for evaluation in filter(None, evaluations):
            fqns += [d["fqn"] for d in evaluation.get("statement_dependencies") or []]
            variables = evaluation.get("global_variables") or []
            fqns += [d["fqn"] for v in variables for d in v.get("dependencies") or []]
    ours = [fqn for fqn in fqns if fqn.startswith(f"{prefix}.")]
    return sorted(set(ours) - known), len(ours)


def check_export(out: Path) -> None:
    result = rocqcot_export(out)
    seed = json.loads(result.read_text())
    entry = seed["demo.proofs.dk_pos"]
    assert set(entry) >= {
        "global_variables",
        "initial_goal",
        "initial_goal_with_gvars",
        "statement_dependencies",
        "statement_notations",
        "evaluation",
    }
    assert set(entry["evaluation"][0]) == {
        "chain",
        "dependencies",
        "goals",
        "goals_with_gvars",
        "goal_diff",
    }
    assert "demo.proofs.nested_have_1_have_1" in seed and "demo.base.doubleE" not in seed
    gvars = {variable["pp"] for variable in entry["global_variables"]}
    assert {"Variable k : nat.", "Variable k_pos : 0 < k.", "Let kk : nat := k + k."} <= gvars
    assert "kk := k + k : nat" in entry["initial_goal_with_gvars"]
    assert "k_pos" not in entry["initial_goal"]
    assert entry["evaluation"][-1]["goals"] == [] and entry["evaluation"][0]["goals"]
    assert original_readers.read_evaluations(seed) > 0
    original_readers.no_nulls(seed)
    dictionary = json.loads(out.with_name("result_dictionary.json").read_text())
    assert any(o["keys"] == ["demo.base.double"] for o in dictionary["objects"])


def rocqcot_export(out: Path) -> Path:
    from app.exports import write_export

    with db.session_factory()() as session:
        assert write_export(session, 4, "seed", out).entries > 0
    return out


def test_all_flag_and_a_missing_built_file(demo, subprocess_env) -> None:
    """`--all` takes every theorem without a selection; a built copy that changed since step 0
    fails its theorems with a clear reason."""
    build(demo, subprocess_env)
    proofs = demo[1] / "proofs.v"
    saved = proofs.read_text()
    try:
        proofs.write_text(saved + "\n")
        step_4.command(dictionary=None, max_workers=1, pet_timeout=60.0, all_=True)
    finally:
        proofs.write_text(saved)
    theorems = rows()
    assert theorems["demo.base.doubleE"].status == Status.done
    failed = theorems["demo.proofs.dkE"]
    assert failed.status == Status.failed and "changed since step 0" in (failed.error or "")


@pytest.mark.slow
def test_full_mathcomp(tmp_path: Path, subprocess_env, mathcomp_dir: Path) -> None:
    """Steps 0 to 4 on the whole of the machine toolchain's MathComp with the default selection
    (about 20 minutes on two cores): at least 98% of the selected theorems evaluate, every
    evaluated proof's last chain leaves no goals, the dependencies of the last three files are
    named as `Locate` names them, and almost all dependencies are dictionary entries."""
    output = tmp_path / "out"
    step0 = rocqcot(
        subprocess_env, "step", "0", "--input", str(mathcomp_dir), "--output", str(output)
    )
    assert step0.returncode == 0, step0.stderr
    for step in ("1", "2", "3"):
        assert rocqcot(subprocess_env, "step", step).returncode == 0
    assert rocqcot(subprocess_env, "step", "4", "--max-workers", "2").returncode == 0
    theorems = rows()
    selected = [t for t in theorems.values() if t.selected and t.parent_id is None]
    done = [t for t in selected if t.stage == Stage.evaluate and t.status == Status.done]
    assert len(done) >= 0.98 * len(selected), [t.error for t in selected if t not in done]
    evaluated = (t for t in theorems.values() if t.stage == Stage.evaluate)
    for theorem in (t for t in evaluated if t.status == Status.done):
        assert steps_of(theorem.fqn)[-1].goals == "No more goals."
    assert check_dependencies(output, "mathcomp", files=3) > 100
    unknown, total = check_dictionary_fqns("mathcomp")
    assert total > 1000 and len(unknown) <= total // 200, unknown  # a few the glob misnames
    shutil.rmtree(output, ignore_errors=True)
