"""Step 2: the text helpers directly, then the step on a slice of MathComp plus a file of our
own, with real Rocq and PostgreSQL: each have form, what is left alone, reruns, a failure, the
export; and (slow) the whole of MathComp."""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.chains import untagged
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Have, SourceFile, Theorem
from app.have_tagging import Tagged
from app.haves import (
    CLOSE_TAG,
    OPEN_TAG,
    Span,
    branches,
    has_candidate,
    have_head,
    mask,
    normalise,
    outer_blocks,
    pieces,
    tactic_count,
)
from app.rocq.toolchain import current
from app.steps import step_2
from tests.test_steps_0_1 import make_slice, rocqcot
from tests.toolchains import LOOP

HAVES_V = """From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.

Lemma inline_by n : 0 < n.+1 /\\ n <= n.
Proof.
have pos: 0 < n.+1 by [].
by split; last exact: leqnn.
Qed.

Lemma later_sentences m n : m <= m + n.
Proof.
have le_mmn: m <= m + n.
  rewrite -{1}[m]addn0.
  by rewrite leq_add2l.
exact: le_mmn.
Qed.

Lemma in_chain : forall n, n + 0 = n.
Proof.
move=> k; have e: k + 0 = k by [rewrite addn0]; exact: e.
Qed.

Lemma chain_proof n : n + 0 = n.
Proof.
have e: n + 0 = n; first by rewrite addn0.
exact: e.
Qed.

Lemma two_in_a_sentence : 0 < 2.
Proof.
have a: 0 < 1 by []; have b: 1 < 2 by []; exact: ltn_trans a b.
Qed.

Lemma in_brackets n : n <= n /\\ 0 < 1.
Proof.
split; [have h: n <= n by []; exact: h | done].
Qed.

Lemma brackets_in_proof m n : m + n = n + m.
Proof.
have comm: forall k, k + 0 = 0 + k.
  case=> [|k]; [by [] | by rewrite addn0].
by rewrite addnC.
Qed.

Lemma braces n : n <= n.+2.
Proof.
have h: n <= n.+1.
{ exact: leqnSn. }
exact: leqW h.
Qed.

Lemma outer_by n : n <= n.+1.
Proof. by have h: n <= n.+1 by [exact: leqnSn]; exact: h. Qed.

Lemma coloneq n : n <= n.+1.
Proof.
have h := leqnSn n.
have h2 : n <= n.+1 := h.
exact: h2.
Qed.

Lemma main_first n : n <= n.+1.
Proof.
have h: n <= n.+1; last first.
  exact: h.
exact: leqnSn.
Qed.

Lemma on_two_goals (b : bool) : b || ~~ b.
Proof.
case: b; have t: true by []; done.
Qed.

Lemma nested m n : m <= m + n + 0.
Proof.
have le: m <= m + n.
  have e: m = m + 0 by rewrite addn0.
  rewrite {1}e.
  by rewrite leq_add2l.
by rewrite addn0.
Qed.

Lemma nested_blocks n : n <= n.+2.
Proof.
have h: n <= n.+2.
  have h1: n <= n.+1.
    exact: leqnSn.
  exact: leqW h1.
exact: h.
Qed.

Lemma given_up n : n <= n.+1 /\\ True.
Proof.
have h: n <= n.+1.
  2: split; [exact: h | done].
exact: leqnSn.
Qed.

Lemma no_have n : n <= n.
Proof. by []. Qed.
"""
SLOW_V = f"""From mathcomp Require Import ssreflect.
Ltac slow := first [timeout 3 ({LOOP.removesuffix(".")}) | idtac].
Lemma slow : True.
Proof.
have h : True by slow; exact I.
exact h.
Qed.
Lemma after : True /\\ True.
Proof.
have t : True by exact I.
by split.
Qed.
"""

# Each lemma of HAVES_V, rewritten.
EXPECTED = {
    "inline_by": "Proof.\n(*<have>*) have pos: 0 < n.+1 by [] (*</have>*).\n"
    "by split; last exact: leqnn.\nQed.",
    "later_sentences": "Proof.\n(*<have>*) have le_mmn: m <= m + n.\n  rewrite -{1}[m]addn0.\n"
    "  by rewrite leq_add2l (*</have>*).\nexact: le_mmn.\nQed.",
    "in_chain": "Proof.\nmove=> k. (*<have>*) have e: k + 0 = k by [rewrite addn0] (*</have>*). "
    "exact: e.\nQed.",
    "chain_proof": "Proof.\n(*<have>*) have e: n + 0 = n; first by rewrite addn0 (*</have>*).\n"
    "exact: e.\nQed.",
    "two_in_a_sentence": "Proof.\n(*<have>*) have a: 0 < 1 by [] (*</have>*). (*<have>*) have b: "
    "1 < 2 by [] (*</have>*). exact: ltn_trans a b.\nQed.",
    "in_brackets": "Proof.\nsplit; [(*<have>*) have h: n <= n by [] (*</have>*); exact: h | done]."
    "\nQed.",
    "brackets_in_proof": "Proof.\n(*<have>*) have comm: forall k, k + 0 = 0 + k.\n"
    "  case=> [|k]; [by [] | by rewrite addn0] (*</have>*).\nby rewrite addnC.\nQed.",
    "braces": "Proof.\n(*<have>*) have h: n <= n.+1.\n{ exact: leqnSn. } (*</have>*)\n"
    "exact: leqW h.\nQed.",
    "outer_by": "Proof. by (*<have>*) have h: n <= n.+1 by [exact: leqnSn] (*</have>*); "
    "exact: h. Qed.",
    "nested": "Proof.\n(*<have>*) have le: m <= m + n.\n  (*<have>*) have e: m = m + 0 by rewrite "
    "addn0 (*</have>*).\n  rewrite {1}e.\n  by rewrite leq_add2l (*</have>*).\n"
    "by rewrite addn0.\nQed.",
    "nested_blocks": "Proof.\n(*<have>*) have h: n <= n.+2.\n  (*<have>*) have h1: n <= n.+1.\n"
    "    exact: leqnSn (*</have>*).\n  exact: leqW h1 (*</have>*).\nexact: h.\nQed.",
}
UNTAGGED = ("coloneq", "main_first", "on_two_goals", "given_up", "no_have")


# The text helpers


def spans(text: str, found: list[Span]) -> list[str]:
    return [span.of(text) for span in found]


def test_pieces_split_top_level_chains_only() -> None:
    text = "move=> x; have h: kHom K <<K; a>> y by [rewrite (f; g)]; case: x => [|n; m]"
    assert spans(text, pieces(mask(text), Span(0, len(text)))) == [
        "move=> x",
        " have h: kHom K <<K; a>> y by [rewrite (f; g)]",
        " case: x => [|n; m]",
    ]


def test_comments_and_strings_are_not_code() -> None:
    text = 'idtac "a; have x : T"; (* b; have y : U *) done'
    masked = mask(text)
    assert len(masked) == len(text)
    assert len(pieces(masked, Span(0, len(text)))) == 2
    assert not has_candidate(f"Proof. {text}. Qed.")


@pytest.mark.parametrize(
    ("piece", "tactic", "statement", "outer_by"),
    [
        ("have x: T by tac", "have x: T", "T", False),
        ("have ->: a = b", "have ->: a = b", "a = b", False),
        ("  have [y /andP[a b]] : P y && Q by []", "have [y /andP[a b]] : P y && Q", "P y && Q",
         False),
        ("have x (y := 2) : P y", "have x (y := 2) : P y", "P y", False),
        ("have : k = j' :> nat by []", "have : k = j' :> nat", "k = j' :> nat", False),
        ("gen have g, h : x / P x", "gen have g, h : x / P x", "x / P x", False),
        ("by have x0 : T1 by [case: s]", "have x0 : T1", "T1", True),
        ("have{pS} abelSb: T", "have{pS} abelSb: T", "T", False),
    ],
)  # fmt: skip
def test_have_head_finds_haves_that_state_a_lemma(
    piece: str, tactic: str, statement: str, outer_by: bool
) -> None:
    head = have_head(piece, mask(piece), Span(0, len(piece)))
    assert head is not None
    assert (head.head.of(piece), head.statement, head.outer_by) == (tactic, statement, outer_by)


@pytest.mark.parametrize(
    "piece",
    [
        "have := foo x",
        "have x := foo x",
        "have x : T := t",
        "have [a b] := andP h",
        "have{pS} abelSb := Phi_quotient_abelem pS",
        "move=> have_x; apply: have_x",
        "last have x : T",
        "have suff h : T",
    ],
)
def test_have_head_leaves_other_tactics_alone(piece: str) -> None:
    assert have_head(piece, mask(piece), Span(0, len(piece))) is None


def test_branches_of_a_bracket_piece() -> None:
    text = " [have h : T by []; exact: h | done | rewrite [x]addnC]"
    found = branches(mask(text), Span(0, len(text)))
    assert found is not None
    assert [b.of(text).strip() for b in found] == [
        "have h : T by []; exact: h",
        "done",
        "rewrite [x]addnC",
    ]
    text = " [a | b] && [c | d]"
    assert branches(mask(text), Span(0, len(text))) is None


def test_has_candidate_looks_in_chains_and_branches() -> None:
    assert has_candidate("Proof. move=> x; have h : T by []. Qed.")
    assert has_candidate("Proof. split; [have h : T by [] | done]. Qed.")
    assert not has_candidate("Proof. have h := foo. have h2 : T := h. Qed.")
    assert not has_candidate("Proof. by rewrite behave. Qed.")


def test_normalise_undoes_tags_and_chain_splits_only() -> None:
    original = "Proof.\nmove=> k; have e: k = k by []; exact: e.\nQed."
    tagged = "Proof.\nmove=> k. (*<have>*) have e: k = k by [] (*</have>*). exact: e.\nQed."
    assert untagged(tagged) == "Proof.\nmove=> k. have e: k = k by []. exact: e.\nQed."
    assert normalise(tagged) == normalise(original)
    assert normalise(tagged) != normalise(original.replace("exact: e", "exact e"))
    assert normalise("Proof. by a; b. Qed.") != normalise("Proof. a. by b. Qed.")


def test_tactic_count_skips_have_blocks_proof_and_qed() -> None:
    tagged = EXPECTED["later_sentences"]
    assert tactic_count(tagged) == 1
    assert tactic_count(untagged(tagged)) == 4
    assert tactic_count(EXPECTED["in_chain"]) == 2
    assert tactic_count(EXPECTED["nested_blocks"]) == 1
    assert tactic_count("Proof. by []. Qed.") == 1


def test_outer_blocks_of_nested_haves() -> None:
    tagged = EXPECTED["nested_blocks"]
    (block,) = outer_blocks(tagged)
    assert block.of(tagged).startswith(f"{OPEN_TAG} have h: n <= n.+2.")
    assert block.of(tagged).endswith(f"exact: leqW h1 {CLOSE_TAG}")


# The step on a slice


@pytest.fixture(scope="module")
def built_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A few ssreflect files of MathComp, and HAVES_V as `haves.v`."""
    root = tmp_path_factory.mktemp("haves")
    library = make_slice(root / "in")
    (library / "haves.v").write_text(HAVES_V)
    return library, root / "out"


def build_steps_0_1(env: dict[str, str], source: Path, output: Path, *extra: str) -> None:
    step0 = rocqcot(env, "step", "0", "--input", str(source), "--output", str(output), *extra)
    assert step0.returncode == 0, step0.stderr
    assert rocqcot(env, "step", "1").returncode == 0


def theorems() -> dict[str, Theorem]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Theorem)).scalars()
        return {row.fqn.rsplit(".", 1)[1] if ".haves." in row.fqn else row.fqn: row for row in rows}


def haves_of() -> dict[int, list[tuple[int, str, str, str]]]:
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Have).order_by(Have.theorem_id, Have.index)).scalars()
        found: dict[int, list[tuple[int, str, str, str]]] = {}
        for have in rows:
            found.setdefault(have.theorem_id, []).append(
                (have.index, have.tactic, have.statement, have.proof)
            )
        return found


def check_every_row(rows: dict[str, Theorem], haves: dict[int, list]) -> None:
    """Every theorem done: tags removed give the original back modulo chain splits, one haves
    row per tag, the size counted outside the tags; no candidate, no rewrite."""
    for name, row in rows.items():
        assert (row.stage, row.status) == (Stage.haves, Status.done), (name, row.error)
        assert normalise(row.tagged_proof) == normalise(row.proof), name
        assert len(haves.get(row.id, [])) == row.tagged_proof.count(OPEN_TAG), name
        assert row.tagged_proof.count(OPEN_TAG) == row.tagged_proof.count(CLOSE_TAG), name
        assert row.tactics == tactic_count(row.tagged_proof), name
        if not has_candidate(row.proof):
            assert row.tagged_proof == row.proof, name
        opening = [m.end() + 1 for m in re.finditer(re.escape(OPEN_TAG), row.tagged_proof)]
        rows_of_haves = haves.get(row.id, [])
        for at, (_index, tactic, _statement, _proof) in zip(opening, rows_of_haves, strict=True):
            assert row.tagged_proof.startswith(tactic, at), name


def test_step_2_tags_each_have_form_and_leaves_the_rest(built_slice, subprocess_env) -> None:
    source, output = built_slice
    build_steps_0_1(subprocess_env, source, output)
    step2 = rocqcot(subprocess_env, "step", "2", "--max-workers", "2")
    assert step2.returncode == 0, step2.stderr
    assert "0 failed" in step2.stdout

    rows, haves = theorems(), haves_of()
    check_every_row(rows, haves)
    for name, tagged in EXPECTED.items():
        assert rows[name].tagged_proof == tagged, name
    for name in UNTAGGED:
        assert rows[name].tagged_proof == rows[name].proof, name
        assert rows[name].id not in haves
    assert haves[rows["later_sentences"].id] == [
        (0, "have le_mmn: m <= m + n", "m <= m + n",
         "rewrite -{1}[m]addn0.\n  by rewrite leq_add2l"),
    ]  # fmt: skip
    assert haves[rows["nested_blocks"].id] == [
        (0, "have h: n <= n.+2", "n <= n.+2",
         "(*<have>*) have h1: n <= n.+1.\n    exact: leqnSn (*</have>*).\n  exact: leqW h1"),
        (1, "have h1: n <= n.+1", "n <= n.+1", "exact: leqnSn"),
    ]  # fmt: skip
    assert haves[rows["two_in_a_sentence"].id] == [
        (0, "have a: 0 < 1", "0 < 1", "by []"),
        (1, "have b: 1 < 2", "1 < 2", "by []"),
    ]
    assert rows["in_chain"].tactics == 2 and rows["later_sentences"].tactics == 1
    mathcomp = [r for n, r in rows.items() if n.startswith("mathcomp.ssreflect.") and r.id in haves]
    assert mathcomp, "the MathComp files of the slice have tagged haves"

    before = (dump_theorems(), haves_of())
    again = rocqcot(subprocess_env, "step", "2")
    assert again.returncode == 0 and "0 theorems done" in again.stdout
    name = "mathcomp.haves.later_sentences"
    assert rocqcot(subprocess_env, "reprocess", name, "--from", "haves").returncode == 0
    assert rows_of(name) == (None, [])
    assert rocqcot(subprocess_env, "step", "2").returncode == 0
    assert (dump_theorems(), haves_of()) == before, "a rerun changed rows"

    assert compile_rewritten(output, "mathcomp", output.parent / "rewritten") == {}

    out = output.parent / "seed_have.json"
    assert rocqcot(subprocess_env, "export", "--step", "2", "--out", str(out)).returncode == 0
    seed = json.loads(out.read_text())
    assert seed[name]["proof"] == EXPECTED["later_sentences"]
    assert seed[name]["filepath"] == "out/haves.v"  # the copy's folder, as the original
    assert json.loads(out.with_name("seed_have_errors.json").read_text()) == {}


def dump_theorems() -> list[tuple]:
    with db.session_factory()() as session:
        columns = (Theorem.fqn, Theorem.proof, Theorem.tagged_proof, Theorem.tactics)
        return [tuple(r) for r in session.execute(sa.select(*columns).order_by(Theorem.fqn))]


def rows_of(fqn: str) -> tuple[str | None, list]:
    with db.session_factory()() as session:
        theorem = session.execute(sa.select(Theorem).where(Theorem.fqn == fqn)).scalar_one()
        haves = session.execute(sa.select(Have).where(Have.theorem_id == theorem.id)).all()
        return theorem.tagged_proof, haves


def test_a_proof_that_does_not_recheck_is_a_failed_row(tmp_path: Path, subprocess_env) -> None:
    """A call past `--pet-timeout` fails the theorem with its reason; its proof is kept, and
    the next theorem of the file is still rewritten. The slow sentence takes 3 s of wall time
    on any Rocq (a loop stopped by Rocq's own `timeout`): coqc builds the file, a 1 s limit
    stops it."""
    library = tmp_path / "slowlib"
    library.mkdir()
    (library / "slow.v").write_text(SLOW_V)
    build_steps_0_1(subprocess_env, library, tmp_path / "out")
    step2 = rocqcot(subprocess_env, "step", "2", "--pet-timeout", "1")
    assert step2.returncode == 0, step2.stderr
    assert "1 failed" in step2.stdout
    with db.session_factory()() as session:
        rows = {t.fqn: t for t in session.execute(sa.select(Theorem)).scalars()}
    slow, after = rows["slowlib.slow.slow"], rows["slowlib.slow.after"]
    assert (slow.stage, slow.status, slow.tagged_proof) == (Stage.haves, Status.failed, None)
    assert "RocqTimeout" in slow.error and "more than 1 s" in slow.error
    assert slow.proof.startswith("Proof.\nhave h : True by slow; exact I.")
    assert after.status == Status.done and after.tagged_proof.count(OPEN_TAG) == 1

    out = tmp_path / "seed.json"
    assert rocqcot(subprocess_env, "export", "--step", "2", "--out", str(out)).returncode == 0
    assert list(json.loads(out.read_text())) == ["slowlib.slow.after"]  # as the original
    errors = json.loads((tmp_path / "seed_errors.json").read_text())
    assert list(errors) == ["slowlib.slow.slow"]
    assert "RocqTimeout" in errors["slowlib.slow.slow"]["error"]
    assert errors["slowlib.slow.slow"]["proof"] == slow.proof


def test_proofs_without_a_candidate_never_start_rocq() -> None:
    item = step_2.TheoremInput(
        "lib.f.t", "/nowhere/f.v", "/nowhere", "lib", "Lemma t : True.",
        "Proof.\nhave h := I.\nexact: h.\nQed.", 0, 60,
    )  # fmt: skip
    with step_2.open_cursor() as cursor:
        result = step_2.run(item, cursor)
        assert not cursor.started
    assert result == Tagged(item.proof, (), 2)


# coqc, independently, compiles the files with their proofs rewritten


def compile_rewritten(output: Path, prefix: str, target: Path) -> dict[str, str]:
    """Put every tagged proof in place of its proof in a copy of its file and compile each
    such file with `coqc` against the library's built copy; the failures, by file."""
    with db.session_factory()() as session:
        rows = session.execute(
            sa.select(SourceFile.path, Theorem.byte_end, Theorem.proof, Theorem.tagged_proof)
            .join(SourceFile, Theorem.file_id == SourceFile.id)
            .where(Theorem.tagged_proof.is_not(None), Theorem.tagged_proof != Theorem.proof)
        ).all()
    by_file: dict[str, list[tuple[int, str, str]]] = {}
    for path, end, proof, tagged in rows:
        by_file.setdefault(path, []).append((end, proof, tagged))
    with ThreadPoolExecutor(os.cpu_count()) as pool:
        results = pool.map(lambda item: recompile(output, prefix, target, *item), by_file.items())
    return {path: error for path, error in results if error}


def recompile(
    output: Path, prefix: str, target: Path, path: str, proofs: list[tuple[int, str, str]]
) -> tuple[str, str]:
    data = (output / path).read_bytes()
    for end, proof, tagged in sorted(proofs, reverse=True):
        start = end - len(proof.encode())
        assert data[start:end] == proof.encode()
        data = data[:start] + tagged.encode() + data[end:]
    copy = target / path
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(data)
    arguments = ("-R", str(output), prefix, "-o", str(copy.with_suffix(".vo")), str(copy))
    done = subprocess.run(current().command("coqc", *arguments), capture_output=True, text=True)
    return path, "" if done.returncode == 0 else done.stderr[-2000:]


# The whole library


@pytest.mark.slow
def test_full_mathcomp(tmp_path: Path, subprocess_env, mathcomp_dir: Path) -> None:
    """Steps 0, 1 and 2 on the whole of the machine toolchain's MathComp: at least 99% of the
    theorems with a tagged have re-check, every row gives its proof back without its tags, and
    coqc compiles every file with its proofs rewritten."""
    output = tmp_path / "out"
    build_steps_0_1(subprocess_env, mathcomp_dir, output)
    step2 = rocqcot(subprocess_env, "step", "2")
    assert step2.returncode == 0, step2.stderr
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Theorem).where(Theorem.parent_id.is_(None))).scalars()
        rows = {row.fqn: row for row in rows}
    haves = haves_of()
    failed = {fqn: row.error for fqn, row in rows.items() if row.status == Status.failed}
    check_every_row({f: r for f, r in rows.items() if f not in failed}, haves)
    tagged = sum(1 for row in rows.values() if row.id in haves)
    rate = tagged / (tagged + len(failed))
    reasons = Counter((error or "").split(":", 1)[0] for error in failed.values())
    print(
        f"theorems {len(rows)}, with a candidate "
        f"{sum(has_candidate(r.proof) for r in rows.values())}, with tagged haves {tagged}, "
        f"haves {sum(map(len, haves.values()))}, failed {len(failed)} {dict(reasons)}, "
        f"re-check rate {rate:.4f}"
    )
    assert rate >= 0.99
    assert compile_rewritten(output, "mathcomp", tmp_path / "rewritten") == {}
