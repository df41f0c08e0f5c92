"""Sessions go past proofs they do not need as `Admitted.`, and reach the same states.

A file of our own, built by the Rocq layer (so its `-time` output records the section
variables each proof used), with the cases that make skipping wrong if done naively: a proof
that uses a section hypothesis its statement does not mention (the lemma's arity after the
section closes depends on it), a section with an explicit `Proof using`, a section without
variables (Rocq suggests nothing there), a statement with a `let` binder, an opaque definition
and a `Let` (never skipped: admitted, it would be an axiom). A wrong record makes a later
sentence fail: the session then falls back to the full walk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from app.rocq.build import build
from app.rocq.positions import SourceText
from app.rocq.script_file import ScriptFile, _skippable_proofs
from app.rocq.session import RocqSession
from app.rocq.timing import TIMING_SUFFIX, proofs_using
from app.rocq.toolchain import Toolchain

SECTIONS = """\
Section Arith.
Variable n : nat.
Hypothesis n0 : n = 0.
Variable unused : bool.

Lemma zero_n : 0 = n.
Proof. rewrite n0. reflexivity. Qed.

Lemma zero_n_using : 0 = n.
Proof using n0. now rewrite n0. Qed.

Lemma plain : n + 0 = n.
Proof. rewrite <- plus_n_O. reflexivity. Qed.
End Arith.

Section NoVariables.
Lemma in_plain_section : 1 + 1 = 2.
Proof. reflexivity. Qed.
End NoVariables.

Section WithLet.
Variable k : nat.
Let k0 : k + 0 = k.
Proof. rewrite <- plus_n_O. reflexivity. Qed.
Lemma with_binder (j := k) : j + 0 = k.
Proof. exact k0. Qed.
Definition opaque_def : k = k.
Proof. reflexivity. Qed.
End WithLet.

Definition arity_check : 0 = 0 := zero_n 0 eq_refl.

Lemma top_level : forall m, m + 0 = m.
Proof. induction m; simpl; auto. Qed.

Lemma uses_arity : 0 = 0.
Proof. exact (zero_n 0 eq_refl). Qed.

Lemma uses_arity_too : 0 = 0.
Proof. exact (zero_n_using 0 eq_refl). Qed.

Lemma last_one : True.
Proof. exact I. Qed.
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, toolchain: Toolchain) -> Path:
    root = tmp_path_factory.mktemp("skip")
    (root / "Sk.v").write_text(SECTIONS, encoding="utf-8")
    result = build(root, "Skip", toolchain=toolchain)
    assert result.ok, result
    return root / "Sk.v"


NAMES = ("zero_n", "zero_n_using", "plain", "in_plain_section", "with_binder", "opaque_def")


def _index(file: ScriptFile, text: str) -> int:
    return next(
        i for i, (s, e) in enumerate(file.sentences) if file.source.byte_slice(s, e) == text
    )


def test_the_build_records_what_each_sectioned_proof_uses(built: Path) -> None:
    timing = Path(str(built) + TIMING_SUFFIX).read_text(encoding="utf-8")
    # statements' own go without, and so do proofs in a section without variables
    assert sorted(proofs_using(timing).values()) == ["", "", "", "", "n0"]
    file = ScriptFile.read(str(built))
    replacements = {
        file.source.byte_slice(*file.sentences[p.first - 1]): p.replacement
        for p in file.proofs.values()
    }
    assert replacements["Lemma zero_n : 0 = n."] == ("Proof using n0.", "Admitted.")
    assert replacements["Lemma zero_n_using : 0 = n."] == ("Proof using n0.", "Admitted.")
    assert replacements["Lemma plain : n + 0 = n."] == ("Proof using.", "Admitted.")
    assert replacements["Lemma in_plain_section : 1 + 1 = 2."] == ("Admitted.",)
    assert replacements["Lemma with_binder (j := k) : j + 0 = k."] == ("Proof using.", "Admitted.")
    assert replacements["Definition opaque_def : k = k."] == ("Proof using.", "Admitted.")
    assert replacements["Lemma top_level : forall m, m + 0 = m."] == ("Admitted.",)
    assert not any(text.startswith("Let") for text in replacements)


def test_a_sectioned_proof_without_suggestion_is_skipped_when_no_variable_is_declared() -> None:
    """A proof Rocq suggested no `Proof using` for is a plain `Admitted.`, as long as the build
    recorded suggestions and the text declares no section variable either."""
    texts = ["Section S.", "Lemma l : True.", "Proof.", "exact I.", "Qed.", "End S."]
    assert [p.replacement for p in _skippable_proofs(texts, {}, recorded=True)] == [("Admitted.",)]
    assert not list(_skippable_proofs(texts, {}, recorded=False))
    declared = [*texts[:1], "Variable n : nat.", *texts[1:]]
    assert not list(_skippable_proofs(declared, {}, recorded=True))


def test_skipping_reaches_the_same_state_as_the_full_walk(built: Path) -> None:
    file = ScriptFile.read(str(built))
    target = _index(file, "Lemma uses_arity_too : 0 = 0.") + 1
    source = SourceText(built.read_text(encoding="utf-8"))
    position = source.byte_position(file.ends[target - 1])
    states, checked = [], []
    for skip in (True, False):
        with RocqSession(skip_proofs=skip) as session:
            session.start(built, [(str(built.parent), "Skip")])
            states.append(session.at(built, position))
            admitted = dict(session.skipped_proofs)
            checked.append(
                [" ".join(session.query(states[-1], f"Check {name}.").split()) for name in NAMES]
            )
        assert "forall n : nat, n = 0 -> 0 = n" in checked[-1][0]
        assert bool(admitted) == skip  # the proofs before were skipped, not run
    assert checked[0] == checked[1]  # every skipped lemma has its type (and arity)
    assert states[0].goals == states[1].goals
    assert states[0].goals is not None and states[0].goals.in_proof


def test_a_skipped_proof_that_mattered_falls_back_to_the_full_walk(
    built: Path, tmp_path: Path
) -> None:
    """A wrong `Proof using` record (as if the build had suggested too little) gives `zero_n`
    another arity, so `arity_check` fails after the skip: the walk is redone in full."""
    for name in ("Sk.v", "Sk.vo", "Sk.glob"):
        (tmp_path / name).write_bytes((built.parent / name).read_bytes())
    timing = Path(str(built) + TIMING_SUFFIX).read_text(encoding="utf-8")
    assert "Proof using n0. " in timing
    wrong = timing.replace("Proof using n0. ", "Proof using n. ", 1)
    (tmp_path / ("Sk.v" + TIMING_SUFFIX)).write_text(wrong, encoding="utf-8")
    copy = tmp_path / "Sk.v"
    file = ScriptFile.read(str(copy))
    source = SourceText(copy.read_text(encoding="utf-8"))
    last = source.byte_position(file.ends[_index(file, "Lemma last_one : True.")])
    with RocqSession(skip_proofs=True) as session:
        session.start(copy, [(str(tmp_path), "Skip")])
        state = session.at(copy, last)
        assert state.goals is not None and state.goals.in_proof
        assert session.walks_in_full
        assert not session.skipped_proofs


def test_a_proof_left_unfinished_is_not_redone(built: Path) -> None:
    """After a walk stopped inside a proof (it failed, or the evaluation went on as a script),
    going to a later theorem skips the rest of that proof instead of running it."""
    file = ScriptFile.read(str(built))
    source = SourceText(built.read_text(encoding="utf-8"))
    statement = _index(file, "Lemma top_level : forall m, m + 0 = m.")
    inside = source.byte_position(file.ends[statement + 1])  # after `Proof.`
    later = source.byte_position(file.ends[_index(file, "Lemma last_one : True.")])
    with RocqSession(skip_proofs=True) as session:
        session.start(built, [(str(built.parent), "Skip")])
        assert session.at(built, inside).goals.in_proof
        assert statement + 1 not in session.skipped_proofs
        assert session.at(built, later).goals.in_proof
        assert session.skipped_proofs[statement + 1] == statement + 3  # `Proof. … Qed.` skipped


def test_suggestions_that_rocq_wrapped_are_read() -> None:
    """Rocq breaks a long name (or a long variable list) onto the next line."""
    output = (
        "Chars 8988 - 9056 [by~move~~=>/(leq_ltn_trans~_)~...] 0.027 secs (0.001u,0.s)\n"
        "The proof of gt_size_poly_neq0\n"
        "should start with one of the following commands:\n"
        "Proof using . \nProof using Type. \n"
        "Chars 9057 - 9061 [Qed.] 0. secs (0.u,0.s)\n"
        "The proof of a_rather_long_lemma_name should start with one of the following commands:\n"
        "Proof using R some_hypothesis another_hypothesis yet_another_hypothesis\n"
        "  last_one. \nProof using All. \n"
        "Chars 9100 - 9104 [Qed.] 0. secs (0.u,0.s)\n"
    )
    assert proofs_using(output) == {
        9057: "",
        9100: "R some_hypothesis another_hypothesis yet_another_hypothesis last_one",
    }
