"""What Rocq says of an object a chain names: its type, whatever proof it was checked in, as
the theorem's own file prints it, whichever files a worker evaluated before.

An abbreviation's implicit arguments become existential variables, which Rocq declares with the
context of the proof the `Check` ran in: the printed type keeps the declaration, not the
context, so a type cached from one proof reads the same in every other.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from app.chain_names import check, check_all, locate_all, without_evar_contexts
from app.db import engine as db
from app.db.models import LibraryObject, SourceFile, Theorem
from app.dictionary import build_dictionary
from app.evaluator import replayer
from app.rocq.session import RocqSession
from app.steps import step_4
from tests.test_steps_0_1 import rocqcot

ABBREVIATION_V = """Definition idn {T : Type} (x : T) := x.
Notation idn' := (@idn _).
Lemma in_context (n : nat) (h : n = 0) : True.
Proof.
exact I.
Qed.
"""


def test_a_type_is_printed_without_the_proof_context(tmp_path: Path) -> None:
    file = tmp_path / "Abbrev.v"
    file.write_text(ABBREVIATION_V, encoding="utf-8")
    with RocqSession() as session:
        session.start(file, [(str(tmp_path), "Abbrev")])
        inside = session.theorem_start("in_context", file)
        assert inside.goals is not None and inside.goals.foreground[0].hypotheses
        assert check(session, inside, "idn'") == "?T -> ?T\nwhere\n?T : Type"
        assert check(session, inside, "idn") == "forall T : Type, T -> T"
        assert check(session, inside, "no_such_name") is None
        assert locate_all(session, inside, ["idn"]) == ["Abbrev.Abbrev.idn"]  # prefix, file, name
        # many names in one query; Rocq stops at each it refuses, and the next query goes on
        # after it: one query per refusal, the names it does not know told apart
        names = ["idn", "no_such_name", "nat", "idn'", "other_unknown", "bool"]
        queries = 0
        run_queries = session.queries

        def counted(*args: object) -> object:
            nonlocal queries
            queries += 1
            return run_queries(*args)  # type: ignore[arg-type]

        session.queries = counted  # type: ignore[method-assign]
        typed, unknown = check_all(session, inside, names, {})
        assert typed == {
            "idn": "forall T : Type, T -> T",
            "nat": "Set",
            "idn'": "?T -> ?T\nwhere\n?T : Type",
            "bool": "Set",
        }
        assert unknown == ["no_such_name", "other_unknown"]
        assert queries == 3
        assert locate_all(session, inside, ["idn", "no_such_name", "nat"]) == [
            "Abbrev.Abbrev.idn",
            None,
            "Coq.Init.Datatypes.nat",
        ]


TYPED_FILES = {
    "base.v": "Lemma add0r (n : nat) : n + 0 = n.\nProof. induction n; simpl; auto. Qed.\n",
    "implicit.v": "Require Import base.\nImplicit Types n : nat.\n"
    "Lemma twice_add0 n : n + 0 + 0 = n.\nProof. rewrite !add0r. reflexivity. Qed.\n",
    "plain.v": "Require Import base.\n"
    "Lemma add0_again (n : nat) : n + 0 = n.\nProof. exact (add0r n). Qed.\n",
}


def test_a_premise_s_type_is_its_theorem_s_file_s_whatever_ran_before(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """`implicit.v` prints `add0r`'s type without its binder's (`Implicit Types`), `plain.v`
    with it. One worker takes the two theorems in either order, its rows written as it goes:
    each theorem gets its own file's printing, never the other's (from the worker's memory or
    from the database)."""
    library = tmp_path / "typed"
    library.mkdir()
    for name, text in TYPED_FILES.items():
        (library / name).write_text(text)
    build = ("step", "0", "--input", str(library), "--output", str(tmp_path / "out"))
    assert rocqcot(subprocess_env, *build, "--prefix", "typed").returncode == 0
    assert rocqcot(subprocess_env, "step", "1").returncode == 0
    with db.session_factory().begin() as session:
        build_dictionary(session)

    def premise_types(order: tuple[str, ...]) -> dict[str, str]:
        types = {}
        with replayer() as held:
            for name in order:
                with db.session_factory().begin() as session:
                    row = session.execute(sa.select(Theorem).where(Theorem.fqn.endswith(name)))
                    item = step_4.load(session, row.scalar_one().id)
                    result = step_4.run(item, held)
                    step_4.store(session, item.theorem_id, result)
                named = [d for step in result.outcome.root.steps for d in step.dependencies]
                types[name] = {d["type"] for d in named if d["name"] == "add0r"}
        return types

    def dictionary_type() -> str | None:
        """`add0r`'s type in the dictionary (step 6's prompts), then forgotten."""
        with db.session_factory().begin() as session:
            add0r = sa.select(LibraryObject).where(LibraryObject.fqn.endswith(".add0r"))
            row = session.execute(add0r).scalar_one()
            printed, row.type, row.type_order = row.type, None, None
        return printed

    expected = {"twice_add0": {"forall n, n + 0 = n"}, "add0_again": {"forall n : nat, n + 0 = n"}}
    with db.session_factory()() as session:
        order = sa.select(SourceFile.path).order_by(SourceFile.dependency_order)
        files = [Path(path).stem for path in session.execute(order).scalars()]
    by_place = sorted(
        [("implicit", "twice_add0"), ("plain", "add0_again")], key=lambda f: files.index(f[0])
    )
    earliest, latest = by_place[0][1], by_place[1][1]
    # the dictionary keeps the printing of the theorem first in the library (step 6 shows it),
    # even when a worker read the file of the first one after the other had printed its own
    assert premise_types((latest, earliest)) == expected
    assert dictionary_type() == next(iter(expected[earliest]))
    assert premise_types((earliest, latest)) == expected
    assert dictionary_type() == next(iter(expected[earliest]))


def test_evar_declarations_lose_their_context_only() -> None:
    printed = (
        "forall m : equal_to ?x, equal_val m = ?x\nwhere\n?T : [F : countFieldType\n"
        "      p : {poly F}\n    |- Type]\n?x : [ |- ?T]"
    )
    expected = "forall m : equal_to ?x, equal_val m = ?x\nwhere\n?T : Type\n?x : ?T"
    assert without_evar_contexts(printed) == expected
    assert without_evar_contexts("nat -> nat") == "nat -> nat"
