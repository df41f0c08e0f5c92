"""Steps 0 and 1 on a small slice of the machine toolchain's MathComp, with real coqc and
PostgreSQL (the same on the other Debian release's toolchain: `test_rocq_toolchains.py`)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.availability import availability
from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import Library, LibraryObject, ProofStep, SourceFile, Theorem
from app.embedding import EmbeddingSettings, embedder
from app.retrieval import Retriever
from app.rocq.dependencies import dependencies
from app.rocq.toolchain import Toolchain, current
from app.steps import step_6
from app.steps.step_1 import DEFAULT_KINDS, sentence_kind
from tests.toolchains import mathcomp


def make_slice(root: Path, broken: bool = False, toolchain: Toolchain | None = None) -> Path:
    """ssrnat.v of the toolchain's MathComp (the machine's by default) with the files it
    requires, as the toolchain's coqdep says, and one small file of our own that requires
    them."""
    toolchain = toolchain or current()
    library = root / "mathcomp"
    sources = mathcomp(toolchain) / "ssreflect"
    (library / "ssreflect").mkdir(parents=True)
    for source in sources.glob("*.v"):
        shutil.copy(source, library / "ssreflect")
    graph = dependencies(library, "mathcomp", toolchain=toolchain)
    kept = graph.needed(["ssreflect/ssrnat.v"])
    for file in set(graph.order) - set(kept):
        (library / file).unlink()
    (library / "extra.v").write_text(
        "From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.\n"
        '(* A (* nested *) comment with a "*)" string. *)\n'
        "Lemma addn_two n : n + 2 = n.+2. Proof. by rewrite addn2. Qed.\n"
        "Lemma given (n : nat) : n = n. Admitted.\n"
        "Definition two := 2.\n"
        "Theorem two_is_two : two = 2.\nProof.\nby [].\nDefined.\n"
        "Lemma andb_swap (a b : bool) : a && b -> b && a.\nProof. by move/andP=> [-> ->]. Qed.\n"
    )
    if broken:
        eqtype = library / "ssreflect" / "eqtype.v"
        eqtype.write_text(eqtype.read_text() + "\nDefinition broken := ).\n")
    return library


def rocqcot(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=600
    )
    return result


@pytest.fixture(scope="module")
def built_slice(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The slice and its output folder, shared so coqc runs once for the module."""
    root = tmp_path_factory.mktemp("slice")
    return make_slice(root / "in"), root / "out"


def dump(model: type) -> list[tuple]:
    with db.session_factory()() as session:
        table = model.__table__
        return [tuple(row) for row in session.execute(sa.select(table).order_by(table.c.id))]


def check_every_theorem_extracted() -> tuple[dict[str, SourceFile], dict[str, Theorem]]:
    """Every glob prf entry whose sentence opens with one of the seven kinds is a row or is
    counted as skipped, and nothing else is a row; statements and proofs are exact slices of
    the built text at the recorded position."""
    with db.session_factory()() as session:
        library = sa.select(SourceFile).where(SourceFile.from_rocq.is_(False))
        files = {f.path: f for f in session.execute(library).scalars()}
        theorems = {t.fqn: t for t in session.execute(sa.select(Theorem)).scalars()}
    expected = set()
    for file in files.values():
        for definition in file.glob.get("definitions", []):
            if definition["kind"] != "prf":
                continue
            sentence = next(
                s
                for s in file.sentences
                if s["byte_start"] <= definition["byte_start"] < s["byte_end"]
            )
            if sentence_kind(sentence["text"], DEFAULT_KINDS):
                expected.add(definition["fqn"])
    skipped = sum(f.theorems_skipped for f in files.values())
    print(
        f"glob prf entries of the seven kinds: {len(expected)}; rows + skipped: "
        f"{len(theorems)} + {skipped}"
    )
    assert set(theorems) <= expected
    assert len(expected) == len(theorems) + skipped
    texts = {f.id: f.cleaned_text for f in files.values()}
    for theorem in theorems.values():
        text = texts[theorem.file_id]
        line_start = sum(len(line) + 1 for line in text.split("\n")[: theorem.line])
        at = line_start + theorem.character
        assert text[at : at + len(theorem.statement)] == theorem.statement
        proof_at = text.find(theorem.proof, at + len(theorem.statement))
        assert proof_at >= 0 and not text[at + len(theorem.statement) : proof_at].strip()
    return files, theorems


def test_steps_0_and_1_extract_every_theorem(built_slice, subprocess_env) -> None:
    source, output = built_slice
    step0 = rocqcot(subprocess_env, "step", "0", "--input", str(source), "--output", str(output))
    assert step0.returncode == 0, step0.stderr
    step1 = rocqcot(subprocess_env, "step", "1")
    assert step1.returncode == 0, step1.stderr

    files, theorems = check_every_theorem_extracted()
    assert {f.build_status for f in files.values()} == {"built"}
    assert "mathcomp.extra.given" not in theorems  # it ends in Admitted
    assert sum(f.theorems_skipped for f in files.values()) == 1

    extra = files["extra.v"]
    assert "comment" not in extra.cleaned_text and extra.header_docs == []
    two = theorems["mathcomp.extra.two_is_two"]
    assert (two.kind, two.statement) == ("Theorem", "Theorem two_is_two : two = 2.")
    assert two.proof == "Proof.\nby [].\nDefined."
    edivn = theorems["mathcomp.ssreflect.ssrnat.addnC"]
    assert edivn.statement.startswith("Lemma addnC")
    assert edivn.proof.startswith("Proof.") or edivn.proof.endswith("Qed.")

    before = (dump(Library), dump(SourceFile), dump(Theorem))
    assert (
        rocqcot(
            subprocess_env, "step", "0", "--input", str(source), "--output", str(output)
        ).returncode
        == 0
    )
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    assert (dump(Library), dump(SourceFile), dump(Theorem)) == before, "a rerun changed rows"

    out = output.parent / "seed.json"
    assert rocqcot(subprocess_env, "export", "--step", "1", "--out", str(out)).returncode == 0
    seed = json.loads(out.read_text())
    entry = seed["mathcomp.extra.addn_two"]
    # The copy's folder, then the file; the prefix relative, as the original's (the export ran
    # in this process's folder).
    assert entry["filepath"] == "out/extra.v" and entry["position"] == {"line": 1, "character": 0}
    assert not Path(entry["filepath_prefix"]).is_absolute()
    assert Path(entry["filepath_prefix"], entry["filepath"]).resolve() == output / "extra.v"
    assert entry["proof"] == "Proof. by rewrite addn2. Qed."


ROCQ_FILES = (
    "ssrmatching.ssrmatching",
    "ssr.ssrclasses",
    "ssr.ssrunder",
    "ssr.ssreflect",
    "ssr.ssrfun",
    "ssr.ssrbool",
    "ssr.ssrsetoid",
)
"""The files of Rocq's SSReflect that the slice requires, directly or not (`ssrsetoid` through
the Stdlib files `ssrnat` requires: `setoid_ring` loads `Setoid`), under the prefix of Rocq's
library: `Coq`, `Corelib` since Rocq 9."""


def test_rocq_files_the_library_requires_are_in_the_dictionary(built_slice, subprocess_env) -> None:
    """Steps 0, 1 and 4 on the slice: Rocq's SSReflect files are built for the dictionary only
    (no theorem of theirs), ahead of the library; `andP` gets its sentence and, once a proof
    uses it, its type; a rerun changes nothing; retrieval finds it from a theorem of the
    slice."""
    source, output = built_slice
    core = current().core_prefix
    rocq_files = {f"{core}.{name}" for name in ROCQ_FILES}
    step0 = ("step", "0", "--input", str(source), "--output", str(output))
    assert rocqcot(subprocess_env, *step0).returncode == 0
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    with db.session_factory().begin() as session:
        swap = session.execute(
            sa.select(Theorem).where(Theorem.fqn == "mathcomp.extra.andb_swap")
        ).scalar_one()
        swap.stage, swap.status, swap.selected = Stage.select, Status.done, True
    step4 = rocqcot(subprocess_env, "step", "4")
    assert step4.returncode == 0, step4.stderr

    with db.session_factory()() as session:
        files = {f.logical_path: f for f in session.execute(sa.select(SourceFile)).scalars()}
        rocq = {name for name, file in files.items() if file.from_rocq}
        built = {name for name in rocq if files[name].build_status != "installed"}
        assert built == rocq_files
        assert {files[name].build_status for name in built} <= {"built", "skipped-unchanged"}
        assert f"{core}.Init.Datatypes" in rocq - built  # the prelude, read as installed
        last_rocq = max(files[name].dependency_order for name in rocq)
        assert all(f.dependency_order > last_rocq for f in files.values() if not f.from_rocq)
        assert set(files["mathcomp.extra"].requires) >= rocq_files
        assert files[f"{core}.ssr.ssrbool"].path == "ssr/ssrbool.v"
        from_rocq = sa.select(Theorem.fqn).join(SourceFile).where(SourceFile.from_rocq)
        assert session.execute(from_rocq).all() == []
        and_p = session.execute(
            sa.select(LibraryObject).where(LibraryObject.fqn == f"{core}.ssr.ssrbool.andP")
        ).scalar_one()
        assert and_p.file_id == files[f"{core}.ssr.ssrbool"].id
        assert and_p.fullname == "Lemma andP : reflect (b1 /\\ b2) (b1 && b2)."
        assert and_p.type and "reflect" in and_p.type
        locked = session.execute(
            sa.select(LibraryObject).where(LibraryObject.fqn == f"{core}.ssr.ssreflect.locked")
        ).scalar_one()  # documented in the file's coqdoc header
        assert locked.docstring_source == "header" and "not convertible" in locked.docstring
        swap = session.execute(
            sa.select(Theorem).where(Theorem.fqn == "mathcomp.extra.andb_swap")
        ).scalar_one()
        assert swap.status == Status.done, swap.error
        objects = session.execute(sa.select(sa.func.count()).select_from(LibraryObject))
        print(f"dictionary: {objects.scalar_one()} objects, Rocq files built: {sorted(built)}")

    tables = (Library, SourceFile, Theorem, LibraryObject, ProofStep)
    before = [dump(table) for table in tables]
    assert rocqcot(subprocess_env, *step0).returncode == 0
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    assert rocqcot(subprocess_env, "step", "4").returncode == 0
    assert [dump(table) for table in tables] == before, "a rerun changed rows"

    with db.session_factory().begin() as session:
        if not and_p.docstring:  # what step 6 writes for a searched target
            step_6.store(session, and_p.id, step_6.offline_writer(step_6.load(session, and_p.id)))
        docstring = session.get(LibraryObject, and_p.id).docstring
        theorem = availability(session, swap.id)
    retriever = Retriever(embedder(EmbeddingSettings()), db.engine())
    retriever.sync()
    hits = retriever.search(docstring, 10, theorem)
    assert f"{core}.ssr.ssrbool.andP" in [hit.entry.fqn for hit in hits]


def test_a_broken_file_fails_its_dependents_and_the_rest_is_extracted(
    tmp_path: Path, subprocess_env
) -> None:
    source = make_slice(tmp_path / "in", broken=True)
    step0 = rocqcot(
        subprocess_env, "step", "0", "--input", str(source), "--output", str(tmp_path / "out")
    )
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    with db.session_factory()() as session:
        files = {f.path: f for f in session.execute(sa.select(SourceFile)).scalars()}
        by_file = dict(
            session.execute(
                sa.select(SourceFile.path, sa.func.count(Theorem.id))
                .outerjoin(Theorem, Theorem.file_id == SourceFile.id)
                .group_by(SourceFile.path)
            ).all()
        )
    eqtype = files["ssreflect/eqtype.v"]
    assert eqtype.build_status == "failed" and eqtype.status == "failed"
    assert "ssreflect/eqtype.v: line" in eqtype.build_error and "Syntax error" in eqtype.build_error
    for dependent in ("ssreflect/ssrnat.v", "extra.v"):
        assert files[dependent].build_status == "dependency-failed"
        assert "eqtype" in files[dependent].build_error
        assert by_file[dependent] == 0
    assert files["ssreflect/ssrbool.v"].build_status == "built"
    assert by_file["ssreflect/ssrbool.v"] > 0
    assert "dependency-failed" in step0.stdout and "failed 1" in step0.stdout


def test_bytes_that_are_not_utf8_are_each_files_own_failure(tmp_path: Path, subprocess_env) -> None:
    """As Rocq reads a file: a byte that is not UTF-8 in a comment is nothing (the file builds
    and is extracted), in code it is Rocq's lexer error with the file and position, in a string
    Rocq takes it but the file fails with where it is; every other file goes on."""
    source = tmp_path / "in" / "bad"
    source.mkdir(parents=True)
    (source / "comment.v").write_bytes(
        b'(* caf\xe9 "na\xefve" (* nested \xff *) *)\n'
        b"Lemma one : 1 = 1.\nProof. reflexivity. Qed.\n"
    )
    (source / "code.v").write_bytes(b"Definition x := 1.\nDefinition caf\xe9 := 2.\n")
    (source / "string.v").write_bytes(
        b'Require Import String.\nDefinition s := "caf\xe9"%string.\n'
    )
    (source / "after.v").write_text(
        "Require Import bad.comment.\nLemma two : 2 = 2.\nProof. reflexivity. Qed.\n"
    )
    step0 = rocqcot(
        subprocess_env, "step", "0", "--input", str(source), "--output", str(tmp_path / "out")
    )
    assert "Traceback" not in step0.stderr, step0.stderr
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    with db.session_factory()() as session:
        files = {f.path: f for f in session.execute(sa.select(SourceFile)).scalars()}
        fqns = set(session.execute(sa.select(Theorem.fqn)).scalars())
    assert files["comment.v"].status == Status.done == files["after.v"].status
    assert {"bad.comment.one", "bad.after.two"} <= fqns
    code = files["code.v"]
    assert code.status == Status.failed and code.build_status == "failed"
    assert code.build_error.startswith("code.v: line 2, character 14: ")
    assert "Illegal character" in code.build_error
    string = files["string.v"]
    assert string.status == Status.failed and string.sentences == []
    assert string.build_error.startswith("string.v: line 2, character 20: byte 0xE9 is not UTF-8")
    assert "\ufffd" in string.cleaned_text
    assert (tmp_path / "out" / "string.v").read_bytes() == (source / "string.v").read_bytes()


def test_an_empty_library_is_one_clear_error(tmp_path: Path, subprocess_env) -> None:
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "README").write_text("no Rocq here\n")
    result = rocqcot(subprocess_env, "step", "0", "--input", str(empty))
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"rocqcot: error: --input {empty} holds no .v file: there is no library to build"
    )


@pytest.mark.slow
def test_full_mathcomp(tmp_path: Path, subprocess_env, mathcomp_dir: Path) -> None:
    """Steps 0 and 1 on the whole of the machine toolchain's MathComp (about 15 minutes on 2
    cores for MathComp 1.15)."""
    output = tmp_path / "out"
    step0 = rocqcot(
        subprocess_env, "step", "0", "--input", str(mathcomp_dir), "--output", str(output)
    )
    assert step0.returncode == 0, step0.stderr
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    files, _ = check_every_theorem_extracted()
    assert len(files) == len(list(mathcomp_dir.rglob("*.v")))
    assert {f.build_status for f in files.values()} == {"built"}
    before = (dump(Library), dump(SourceFile), dump(Theorem))
    assert rocqcot(subprocess_env, "step", "0", "--output", str(output)).returncode == 0
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    assert (dump(Library), dump(SourceFile), dump(Theorem)) == before, "a rerun changed rows"
