"""The dictionary covers the load path: a small library written on top of the installed
MathComp gets every object of the installed files it requires (MathComp's globs, Rocq's prelude
and Stdlib files through `Print Module`), with real coqc, coqdep and PostgreSQL; availability
stays exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.availability import availability
from app.db import engine as db
from app.db.models import LibraryObject, SourceFile, Theorem
from app.dictionary import build_dictionary
from app.rocq.installed import parse_module
from app.rocq.toolchain import current

LIBRARY = {
    "nats.v": "From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat.\n"
    "Lemma add0_right n : n + 0 = n.\nProof. by rewrite addn0. Qed.\n",
    "tuples.v": "From mathcomp Require Import ssreflect ssrfun ssrbool eqtype ssrnat seq tuple.\n"
    "Require Import nats.\n"
    "Lemma tuple_size n (t : n.-tuple nat) : size t = n.\nProof. by rewrite size_tuple. Qed.\n",
}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("on_mathcomp")
    source = root / "in" / "onmc"
    source.mkdir(parents=True)
    for name, text in LIBRARY.items():
        (source / name).write_text(text, encoding="utf-8")
    return source, root / "out"


def rocqcot(env: dict[str, str], *args: str) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "app", *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, run.stderr


def objects(session, *fqns: str) -> dict[str, LibraryObject]:
    rows = session.execute(sa.select(LibraryObject).where(LibraryObject.fqn.in_(fqns)))
    return {row.fqn: row for row in rows.scalars()}


def test_a_library_on_mathcomp_sees_the_installed_objects_it_requires_and_no_others(
    library: tuple[Path, Path], subprocess_env: dict[str, str]
) -> None:
    source, output = library
    rocqcot(subprocess_env, "step", "0", "--input", str(source), "--output", str(output))
    rocqcot(subprocess_env, "step", "1")
    core = current().core_prefix
    with db.session_factory().begin() as session:
        build_dictionary(session)
    with db.session_factory()() as session:
        files = {f.logical_path: f for f in session.execute(sa.select(SourceFile)).scalars()}
        assert files["mathcomp.ssreflect.ssrnat"].build_status == "installed"
        assert files[f"{core}.Init.Datatypes"].from_rocq
        assert "mathcomp.ssreflect.finset" not in files  # nothing the library does not load
        found = objects(
            session,
            "mathcomp.ssreflect.ssrnat.addn0",
            "mathcomp.ssreflect.tuple.Tuple",
            f"{core}.Init.Datatypes.andb",
            f"{core}.Init.Datatypes.S",
            f"{core}.NArith.BinNat.N.add_comm",
        )
        # From MathComp's installed glob: the lemma's own sentence.
        assert found["mathcomp.ssreflect.ssrnat.addn0"].fullname.startswith("Lemma addn0")
        # A record's constructor, which the glob references but never defines.
        assert found["mathcomp.ssreflect.tuple.Tuple"].kind == "constr"
        assert "tuple_of" in found["mathcomp.ssreflect.tuple.Tuple"].fullname
        # Rocq's prelude, shipped without globs: Rocq names it, the source gives the sentence.
        assert found[f"{core}.Init.Datatypes.andb"].fullname.startswith("Definition andb")
        assert found[f"{core}.Init.Datatypes.S"].kind == "constr"
        # Made by `Include` in a functor's module: only Rocq's print names it.
        assert "add n m = add m n" in found[f"{core}.NArith.BinNat.N.add_comm"].fullname

        def seen(theorem: str) -> set[str]:
            row = session.execute(sa.select(Theorem).where(Theorem.fqn == theorem)).scalar_one()
            usable = set(availability(session, row.id).required_files)
            return {fqn for fqn, obj in found.items() if obj.file_id in usable}

        everything = set(found)
        assert seen("onmc.tuples.tuple_size") == everything
        assert seen("onmc.nats.add0_right") == everything - {"mathcomp.ssreflect.tuple.Tuple"}


def test_print_module_items_become_objects() -> None:
    printed = """Module
Datatypes
:= Struct
     Inductive bool : Set :=  true : bool | false : bool.
     Definition andb : bool -> bool -> bool.
     Parameter andb_prop :
       forall a b : bool, (a && b)%bool = true -> a = true /\\ b = true.
     Record prod_like (A : Type) : Type := Pair { fst_of : A; snd_of : A }.
     Module Inner
     Module Type Sig
     Definition negb : bool -> bool.
   End
"""
    items, nested = parse_module("Coq.Init.Datatypes", printed)
    got = [(item.kind, item.fqn.rpartition(".")[2]) for item in items]
    assert got == [
        ("ind", "bool"),
        ("constr", "true"),
        ("constr", "false"),
        ("def", "andb"),
        ("prf", "andb_prop"),
        ("rec", "prod_like"),
        ("constr", "Pair"),
        ("def", "negb"),
    ]
    assert nested == ["Coq.Init.Datatypes.Inner"]
    assert items[4].text.startswith("Parameter andb_prop : forall a b : bool")
