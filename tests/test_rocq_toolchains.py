"""rocqcot on the other toolchains: the machine's, the other Debian release's (Coq 8.20 +
MathComp 2.3 on Debian 12) and Rocq 9.2 with Stdlib (`tests/toolchains.py` makes the roots).

The Rocq layer runs on each of the three; steps 0 and 1 and the glob reader run on the other
release's MathComp, steps 2 and 4 in a Hierarchy-Builder section of a file on top of it; the
database refuses a toolchain other than the one it was made with.
Expected values come from each toolchain: its `coqc -time`, its `.glob` and `.v` files.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import engine as db
from app.db.models import SourceFile, Theorem
from app.rocq.glob import read_glob
from app.rocq.positions import Position, SourceText
from app.rocq.sentences import split_sentences
from app.rocq.session import RocqSession
from app.rocq.state import RocqCrashed, RocqError, RocqTimeout, State
from app.rocq.toolchain import Toolchain
from tests.test_steps_0_1 import check_every_theorem_extracted, make_slice, rocqcot
from tests.toolchains import (
    LOOP,
    PROJECT,
    glob_theorems,
    mathcomp,
    stdlib_file,
    timed_sentences,
)

SMALL_V = "Lemma t (n : nat) : n + 0 = n.\nProof.\n"
"""A file of our own for the session's failure paths: the prelude only, on every Rocq."""


# --- The Rocq layer on each toolchain ---------------------------------------------------------


def test_goals_after_every_sentence_of_a_stdlib_file(
    each_toolchain: Toolchain, tmp_path: Path
) -> None:
    """Lists/ListDec.v replayed sentence by sentence with the goals after each: the sentences
    are those of the same toolchain's `coqc -time`, and each proof opened is closed by its
    `Qed.` or `Defined.`."""
    copy = tmp_path / "ListDec.v"
    shutil.copy(stdlib_file(each_toolchain, "Lists/ListDec.v"), copy)
    timed = timed_sentences(each_toolchain, copy)
    source = SourceText(copy.read_text(encoding="utf-8"))
    sentences = split_sentences(source.data)
    assert sentences == [(s.byte_start, s.byte_end) for s in timed]
    in_proof, opened, closed = False, 0, 0
    with RocqSession(timeout=60, toolchain=each_toolchain) as session:
        session.start(copy)
        for start, end in sentences:
            goals = session.goals(session.at(copy, source.byte_position(end)))
            if goals.in_proof and not in_proof:
                assert goals.foreground, source.byte_slice(start, end)
                opened += 1
            if source.byte_slice(start, end) in ("Qed.", "Defined."):
                assert in_proof and not goals.in_proof
                closed += 1
            in_proof = goals.in_proof
    assert opened == closed >= 5


@pytest.fixture
def small(each_toolchain: Toolchain, tmp_path: Path) -> Iterator[tuple[RocqSession, State]]:
    """A session of the toolchain on SMALL_V, and the state inside its proof."""
    file = tmp_path / "small.v"
    file.write_text(SMALL_V)
    with RocqSession(timeout=40, toolchain=each_toolchain) as session:
        session.start(file)
        yield session, session.theorem_start("t")


def test_errors_come_with_their_locations(small: tuple[RocqSession, State]) -> None:
    session, start = small
    text = "(* ∑ *) induction n as [|k IH].\n  - rewrite foo_bar."
    with pytest.raises(RocqError) as raised:
        session.run(start, text)
    error = raised.value
    assert "foo_bar" in error.message and error.location is not None
    assert text[error.location.start : error.location.end] == "foo_bar"
    assert text.encode()[error.location.byte_start : error.location.byte_end] == b"foo_bar"
    with pytest.raises(RocqError) as raised:
        session.run(start, "idtac. exact (.")
    assert raised.value.location is not None and raised.value.location.start == 14
    [goal] = session.run(start, "idtac.").goals.foreground
    assert goal.conclusion == "n + 0 = n"


def test_a_looping_tactic_is_interrupted(small: tuple[RocqSession, State]) -> None:
    session, start = small
    pid, session.timeout = session.pid, 2.0
    with pytest.raises(RocqTimeout):
        session.run(start, LOOP)
    session.timeout = 40.0
    assert session.pid == pid  # the interrupt sufficed: no restart
    assert session.run(start, "induction n.").goals.foreground[0].conclusion == "0 + 0 = 0"


def test_a_killed_coqidetop_is_restarted(small: tuple[RocqSession, State]) -> None:
    session, start = small
    state = session.run(start, "induction n.")
    pid = session.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(RocqCrashed):
        session.run(state, "idtac.")
    assert session.pid != pid
    assert session.run(state, "idtac.").goals == state.goals
    assert session.goals(session.at(start.file, Position(1, 6))) == start.goals


# --- The other Debian release's MathComp ------------------------------------------------------


def test_steps_0_and_1_on_the_other_release(
    other_toolchain: Toolchain, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """ssrnat.v of its MathComp and what it requires, and a file of our own: the theorems are
    exactly the globs' `prf` entries of the seven kinds (less the one `Admitted`), with exact
    slices of the built text."""
    source = make_slice(tmp_path / "in", toolchain=other_toolchain)
    output = tmp_path / "out"
    bin_dir = str(other_toolchain.bin_dir)
    step0 = ("step", "0", "--input", str(source), "--output", str(output), "--rocq-bin", bin_dir)
    done = rocqcot(subprocess_env, *step0)
    assert done.returncode == 0, done.stderr
    assert rocqcot(subprocess_env, "step", "1").returncode == 0

    expected = check_against_the_globs(mathcomp(other_toolchain), output)
    assert {"mathcomp.extra.given", "mathcomp.ssreflect.ssrnat.addnC"} <= expected
    with db.session_factory()() as session:
        rocq_files = session.execute(
            sa.select(SourceFile.logical_path).where(
                SourceFile.from_rocq, SourceFile.build_status != "installed"
            )
        ).scalars()
        assert {name.split(".")[0] for name in rocq_files} == {other_toolchain.core_prefix}
        prelude = session.execute(
            sa.select(SourceFile.build_status).where(
                SourceFile.logical_path == f"{other_toolchain.core_prefix}.Init.Prelude"
            )
        ).scalar_one()
        assert prelude == "installed"


@pytest.mark.slow
def test_steps_0_and_1_on_the_whole_mathcomp_of_the_other_release(
    other_toolchain: Toolchain, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """The same on the whole of its MathComp (Hierarchy-Builder everywhere)."""
    installed = mathcomp(other_toolchain)
    output = tmp_path / "out"
    bin_dir = str(other_toolchain.bin_dir)
    step0 = ("step", "0", "--input", str(installed), "--output", str(output), "--rocq-bin", bin_dir)
    done = rocqcot(subprocess_env, *step0)
    assert done.returncode == 0, done.stderr
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    expected = check_against_the_globs(installed, output)
    print(f"{len(expected)} theorems of the seven kinds in the globs")


def check_against_the_globs(installed: Path, output: Path) -> set[str]:
    """Every file built, and the theorems exactly the `prf` entries of the seven kinds of the
    toolchain's globs (installed ones for its MathComp's files, the build's for ours) less
    those step 1 counted as skipped, with exact slices of the built text. The expected set."""
    files, theorems = check_every_theorem_extracted()
    assert {f.build_status for f in files.values()} == {"built"}
    expected: set[str] = set()
    for path in files:
        glob = Path(path).with_suffix(".glob")
        expected |= glob_theorems(
            installed / glob if (installed / glob).exists() else output / glob
        )
    skipped = sum(f.theorems_skipped for f in files.values())
    assert set(theorems) <= expected and len(expected) == len(theorems) + skipped
    return expected


HB_BUILDERS_V = """From HB Require Import structures.
From mathcomp Require Import ssreflect ssrfun ssrbool eqtype.

HB.mixin Record HasFlip T of Equality T := { flip : T -> T; flipK : involutive flip }.
HB.structure Definition Flipped := { T of Equality T & HasFlip T }.

HB.factory Record HasInvolution T of Equality T := { inv : T -> T; invK : involutive inv }.

HB.builders Context T of HasInvolution T.
  Lemma inv_eq (x y : T) : (inv x == inv y) = (x == y).
  Proof.
  have same : (inv x == inv y) = (x == y) by rewrite (inj_eq (inv_inj invK)).
  exact: same.
  Qed.
  HB.instance Definition _ := HasFlip.Build T inv invK.
HB.end.

Section Later.
Variable U : eqType.
Definition twin (n : nat) := U.
HB.instance Definition _ (n : nat) := Equality.copy (twin n) U.

Lemma after (n : nat) (x : U) : x == x.
Proof. have refl : x == x by rewrite eqxx. exact: refl. Qed.
End Later.
"""


def test_steps_2_and_4_in_a_hierarchy_builder_section(
    other_toolchain: Toolchain, tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """`HB.builders` opens a section with variables (the type, its mixins) that the text never
    declares. They are the lemma's global variables, not the have's hypotheses: reverting them
    to check the have's statement fails (a canonical instance of the section uses the mixin).
    `HB.instance Definition _ (n : nat)` declares `n` in a section of its own: a later binder
    `n` is the lemma's, not a section variable."""
    source = tmp_path / "hb"
    source.mkdir()
    (source / "hb.v").write_text(HB_BUILDERS_V)
    env = dict(subprocess_env, ROCQCOT_ROCQ_BIN=str(other_toolchain.bin_dir))
    step0 = ("step", "0", "--input", str(source), "--output", str(tmp_path / "out"))
    for step in (step0, ("step", "1"), ("step", "2"), ("step", "4", "--all")):
        done = rocqcot(env, *step)
        assert done.returncode == 0, done.stdout + done.stderr
    with db.session_factory()() as session:
        rows = session.execute(sa.select(Theorem.fqn, Theorem.status, Theorem.evaluation)).all()
    assert sorted((fqn.rsplit(".", 1)[1], str(status)) for fqn, status, _ in rows) == [
        ("after", "done"), ("after_have_1", "done"), ("inv_eq", "done"), ("inv_eq_have_1", "done")
    ]  # fmt: skip
    evaluations = {fqn.rsplit(".", 1)[1]: evaluation for fqn, _, evaluation in rows}
    hidden = [v["names"] for v in evaluations["inv_eq"]["global_variables"]]
    assert hidden[:2] == [["T"], ["local_mixin_eqtype_hasDecEq"]]
    assert evaluations["inv_eq_have_1"]["statement"].startswith("Lemma inv_eq_have_1 (x y : T) :")
    assert [v["names"] for v in evaluations["after"]["global_variables"]] == [["U"]]
    assert evaluations["after_have_1"]["statement"].startswith("Lemma after_have_1 (n : nat)")


def test_every_mathcomp_glob_of_the_other_release_reads(other_toolchain: Toolchain) -> None:
    """Hierarchy-Builder's many `def` lines sharing one sentence's range and `var` lines with
    two spaces read like the others."""
    shared, two_spaces = 0, 0
    globs = sorted(mathcomp(other_toolchain).rglob("*.glob"))
    for glob_path in globs:
        text = glob_path.read_text(encoding="utf-8")
        source = SourceText(glob_path.with_suffix(".v").read_text(encoding="utf-8"))
        glob = read_glob(glob_path, source)
        spans = [(d.byte_start, d.byte_end) for d in glob.definitions if d.kind == "def"]
        shared += len(spans) - len(set(spans))
        for line in re.findall(r"^var  (\d+):\d+ (\S+) (\S+)$", text, re.MULTILINE):
            two_spaces += 1
            start, path, name = line
            assert any(
                d.kind == "var" and d.byte_start == int(start) and d.fqn.endswith(f".{path}.{name}")
                for d in glob.definitions
            ), line
        assert all(source.text[d.char_start : d.char_end] for d in glob.definitions)
    assert len(globs) > 50 and shared > 100 and two_spaces > 10


# --- One database, one toolchain --------------------------------------------------------------


def test_the_database_refuses_a_second_toolchain(
    toolchain: Toolchain, rocq9: Toolchain, tmp_path: Path, subprocess_env
) -> None:
    """Rocq 9.2 is another toolchain than the machine's, whichever Debian release it runs."""
    library = tmp_path / "lib"
    library.mkdir()
    (library / "a.v").write_text("Lemma a : True. Proof. exact I. Qed.\n")
    first = rocqcot(
        subprocess_env, "step", "0", "--input", str(library), "--output", str(tmp_path / "o")
    )
    assert first.returncode == 0, first.stderr
    other = rocqcot(
        subprocess_env, "step", "0", "--input", str(library), "--output", str(tmp_path / "p"),
        "--rocq-bin", str(rocq9.bin_dir),
    )  # fmt: skip
    assert other.returncode == 1
    [line] = other.stderr.strip().splitlines()
    assert line.startswith(f"rocqcot: error: this database was made with {toolchain.summary()}")
    assert rocq9.summary() in line
    status = subprocess.run(
        [sys.executable, "-m", "app", "status"], env=subprocess_env, capture_output=True, text=True
    )
    assert f"toolchain: {toolchain.summary()}" in status.stdout


# --- The roots ---------------------------------------------------------------------------------


def test_a_folder_made_again_is_seen_again_inside_the_root(rocq9: Toolchain) -> None:
    """A checkout deleted and cloned again at the same path (as CI does) runs Rocq from the new
    folder, not from the deleted one a bind mount kept: there Rocq fails with Sys_error."""
    folder = Path(f"/var/tmp/rocqcot-remade-{os.getpid()}")
    root_dir = rocq9.bin_dir.parent
    script = PROJECT / "scripts" / "rocq-root.sh"

    def mount_and_run() -> subprocess.CompletedProcess[str]:
        made = subprocess.run(["bash", str(script), "forky", str(root_dir), str(folder)])
        assert made.returncode == 0
        return subprocess.run(
            [str(rocq9.bin_dir / "coqc"), "--print-version"], cwd=folder, capture_output=True,
            text=True,
        )  # fmt: skip

    inside = Path(f"{root_dir}/root{folder}")
    try:
        folder.mkdir()
        assert mount_and_run().returncode == 0
        folder.rmdir()
        folder.mkdir()
        again = mount_and_run()
        assert again.returncode == 0, again.stderr
        assert again.stdout.split()[0] == rocq9.version
    finally:
        subprocess.run(["umount", "--lazy", str(inside)], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(inside, ignore_errors=True)
