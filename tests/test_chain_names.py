"""What Rocq says of an object a chain names: its type, whatever proof it was checked in.

An abbreviation's implicit arguments become existential variables, which Rocq declares with the
context of the proof the `Check` ran in: the printed type keeps the declaration, not the
context, so a type cached from one proof reads the same in every other.
"""

from __future__ import annotations

from pathlib import Path

from app.chain_names import check, locate, without_evar_contexts
from app.rocq.session import RocqSession

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
        assert locate(session, inside, "idn") == "Abbrev.Abbrev.idn"  # prefix, file, name


def test_evar_declarations_lose_their_context_only() -> None:
    printed = (
        "forall m : equal_to ?x, equal_val m = ?x\nwhere\n?T : [F : countFieldType\n"
        "      p : {poly F}\n    |- Type]\n?x : [ |- ?T]"
    )
    expected = "forall m : equal_to ?x, equal_val m = ?x\nwhere\n?T : Type\n?x : ?T"
    assert without_evar_contexts(printed) == expected
    assert without_evar_contexts("nat -> nat") == "nat -> nat"
