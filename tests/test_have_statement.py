"""Haves as lemmas (`app.have_statement`): the text helpers directly; then each reason met in
MathComp why a have's printed goal does not read back as that goal, reproduced in a small file
of our own over Rocq's SSReflect and stated by the real Rocq; and (slow) the four MathComp
theorems where they were met, through steps 0 to 4."""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import engine as db
from app.db.enums import Status
from app.db.models import Theorem
from app.have_checks import report_parts
from app.have_parts import (
    Binder,
    PrintedGoal,
    decimal_numbers,
    lemma_parts,
    let_parts,
    rename_reserved,
)
from app.have_statement import (
    ALL,
    CAST,
    CONVERTIBLE,
    PLAIN,
    HaveGoal,
    HaveStatement,
    NotStated,
    PrintingMemory,
    state_have,
)
from app.rocq.dependencies import dependencies
from app.rocq.goals import Goal, Hypothesis
from app.rocq.positions import Position
from app.rocq.protocol import FLAT_PRINTING
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, State
from app.rocq.toolchain import Toolchain
from tests.test_steps_0_1 import rocqcot
from tests.toolchains import mathcomp

# --- Text ------------------------------------------------------------------------------------


def test_lemma_parts_rename_reserved_names() -> None:
    goal = Goal(
        (
            Hypothesis(("T",), None, "Type"),
            Hypothesis(("x", "y"), None, "T"),
            Hypothesis(("_x_",), None, "x = y"),
            Hypothesis(("z",), "x", "T"),
            Hypothesis(("_h_",), None, "y = x"),
        ),
        "y =\n  h x",
    )
    fix = "fix f (n : nat) {struct n} : nat := match n with 0 => 0 | S k => f k end"
    assert let_parts("fix f (n : nat) {struct n}", fix[29:] + " : nat -> nat") == (
        fix,
        "nat -> nat",
    )
    assert let_parts("fun x => x", "forall T : Type, T -> T") == (
        "fun x => x",
        "forall T : Type, T -> T",
    )
    renamed = rename_reserved(goal)
    assert renamed.hypotheses[2] == Hypothesis(("x'",), None, "x = y")
    # `h` names something the goal uses: the new binder must not hide it
    assert renamed.hypotheses[4] == Hypothesis(("h'",), None, "y = x")
    binders, conclusion = lemma_parts(renamed, frozenset({"T"}))
    texts = ["(x y : T)", "(x' : x = y)", "(z : T := (x))", "(h' : y = x)"]
    assert [b.text for b in binders] == texts
    assert binders[2] == Binder(("z",), "T", "x") and conclusion == "y = h x"


def test_decimal_numbers() -> None:
    assert decimal_numbers("@eq nat (S (S O)) O", "2 = 0") == "@eq nat (2%nat) 0%nat"
    elided = "@eq (id nat) x (S (S (S (...))))"  # Rocq's display stops at 50 nested boxes
    assert decimal_numbers(elided, "x = 60") == "@eq (id nat) x (60%nat)"
    assert decimal_numbers("f (S (S O)) (S ...)", "f 2 70") == "f (2%nat) (70%nat)"
    assert decimal_numbers("f (S (S O)) (S ...)", "f 3 70") is None  # they do not line up
    assert decimal_numbers("f (S (S O)) (S ...)", "f 2") is None
    assert decimal_numbers("leq (S n) m", "n < m") is None  # no number
    assert decimal_numbers("f O x1", "f 0 x1") == "f 0%nat x1"


# --- Each cause, in Rocq ---------------------------------------------------------------------

DEEP = functools.reduce(lambda term, _: f"(x + {term})", range(60), "x")
"""A sum nested 60 deep: coqidetop's display cuts it (`...`)."""

CASES_V = """Import ListNotations.
Set Asymmetric Patterns.

Section Cases.
Variable T : Type.

Lemma alpha (x : T) (s : list T) : True.
Proof.
pose xrot (t : list T) (i : nat) := (i, x :: t).
have h : xrot s 0 = (0, x :: s).
Admitted.

Lemma hidden_index (k : nat) (e : tag (Tagged (fun=> nat) (i := 3) k) = 3) : True.
Proof.
have h : k = k.
Admitted.

Lemma asymmetric (P : Prop) (r : reflect P true) : True.
Proof.
pose F1 := if r is ReflectT _ then true else false.
have h : F1.
Admitted.

Lemma notation_type (x y : nat) (e : x = y :> id nat) : True.
Proof.
have h : y = x.
Admitted.

Lemma elided (x : nat) (e : x = 60 :> id nat) (b : x < 70) : True.
Proof.
have h : x = x.
Admitted.

Lemma ltac_names (g t u H : nat) (e : g + t = u + H) : True.
Proof.
have h : u + H = g + t.
Admitted.

Lemma reserved (x y : nat) : x = y -> True.
Proof.
move=> ?.
have h : y = x.
Admitted.

Lemma cast_dropped : True.
Proof.
set A : predArgType := (nat * bool)%type.
have h : A = A.
Admitted.

Lemma deep (x : nat) : True.
Proof.
pose f := {DEEP}.
have h : f = f.
Admitted.

Lemma let_under_binder (A : pred nat) (n : nat) : True.
Proof.
have h : {in A, forall x (y := x + n), y = y}.
Admitted.

Lemma with_evar : True.
Proof.
evar (n : nat).
have h : n = n.
Admitted.

End Cases.
"""


CAUSES = ("alpha", "hidden_index", "asymmetric", "notation_type", "elided", "ltac_names")
CAUSES += ("reserved", "cast_dropped", "let_under_binder")


def cases_for(toolchain: Toolchain) -> str:
    """The file of cases with the imports of the toolchain (its own library is `Corelib` and
    lists are in `Stdlib` since Rocq 9)."""
    core = toolchain.core_prefix
    lists = "Stdlib" if core == "Corelib" else core
    imports = f"From {core} Require Import ssreflect ssrfun ssrbool.\n"
    return imports + f"From {lists} Require Import List.\n" + CASES_V.replace("{DEEP}", DEEP)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory, toolchain: Toolchain) -> Path:
    """The file of cases (Rocq reads it from its source: nothing to build)."""
    path = tmp_path_factory.mktemp("haves") / "cases.v"
    path.write_text(cases_for(toolchain))
    return path


@pytest.fixture(scope="module")
def session(cases: Path, toolchain: Toolchain) -> Iterator[RocqSession]:
    with RocqSession(timeout=60, toolchain=toolchain) as rocq:
        rocq.start(cases, [])
        yield rocq


def at_have(session: RocqSession, path: Path, name: str) -> tuple[State, str, State]:
    """The state before the lemma's have, the have's sentence, and the state after the lemma."""
    lines = path.read_text().splitlines()
    first = lines.index(next(line for line in lines if line.startswith(f"Lemma {name} ")))
    end = lines.index("Admitted.", first)
    state = session.run(session.theorem_start(name), "Proof.")
    for line in lines[first + 2 : end - 1]:
        state = session.run(state, line)
    return state, lines[end - 1], session.at(path, Position(end, len("Admitted.")))


@pytest.mark.parametrize(
    ("name", "printing", "statement"),
    [
        # seq.permutationsErot: the display drops a bound variable's name (`rot^~`)
        (
            "alpha",
            "",
            "(x : T) (s : list T) (xrot : list T -> nat -> nat * list T := "
            "(fun t : list T => pair^~ (x :: t))) : xrot s 0 = (0, x :: s)",
        ),
        # seq.permutationsErot: an implicit argument the display hides cannot be inferred
        (
            "hidden_index",
            "Set Printing Coercions. Set Printing Implicit.",
            "(k : nat) (e : @tag nat [eta fun=> nat] (@Tagged nat 3 (fun=> nat) k) = 3) : k = k",
        ),
        # finfun.card_family: a pattern shows the parameter `Asymmetric Patterns` refuses
        (
            "asymmetric",
            "per part: Set Printing All. for F1",
            "(P : Prop) (r : reflect P true) (F1 : match true as x return (forall _ : "
            "Bool.reflect P x, Type) with | true => fun _ : Bool.reflect P true => bool | false "
            "=> fun _ : Bool.reflect P false => bool end r := (match r in (Bool.reflect _ b) "
            "return (match b as x return (forall _ : Bool.reflect P x, Type) with | true => fun "
            "_ : Bool.reflect P true => bool | false => fun _ : Bool.reflect P false => bool end "
            "r) with | @Bool.ReflectT _ _ => true | @Bool.ReflectF _ _ => false end)) : F1",
        ),
        # poly.max_poly_roots, alt.simple_Alt5_base: the same display, another term (here a
        # notation hides the type of an equality; there also a coercion path)
        (
            "notation_type",
            "per part: Set Printing All. for e",
            "(x y : nat) (e : @eq ((fun x : Set => x) nat) x y) : y = x",
        ),
        # alt.simple_Alt5_base: and fully explicit, a number is too deep to be displayed
        (
            "elided",
            "per part: Set Printing All. (numbers in decimal) for e",
            "(x : nat) (e : @eq ((fun x : Set => x) nat) x (60%nat)) (b : x < 70) : x = x",
        ),
        # algnum.dec_Cint_span: a local definition whose cast a tactic dropped is typed by its
        # body (`Set`) when read back, unless its body is cast again to the type it has
        (
            "cast_dropped",
            "per part: (local definitions cast to their types) for A",
            "(A : predArgType := (((nat * bool)%type) : predArgType)) : A = A",
        ),
        # character.inertia.constt_Inertia_bijection: as displayed, the lemma's `{in A, …}`
        # hides a predicate that Rocq, under the lemma's binders, infers without its `let`
        (
            "let_under_binder",
            "per part: Set Printing All. for the goal",
            "(A : pred nat) (n : nat) : @prop_in1 nat (@mem nat (predPredType nat) A) (fun x : "
            "nat => let y : nat := Nat.add x n in @eq nat y y) (inPhantom (forall x : nat, let y "
            ": nat := Nat.add x n in @eq nat y y))",
        ),
        # hypotheses named as the checking tactic's own variables
        ("ltac_names", "", "(g t u H : nat) (e : g + t = u + H) : u + H = g + t"),
        # a name Rocq reserves (`_Hyp_`) renamed
        ("reserved", "", "(x y : nat) (Hyp : x = y) : y = x"),
    ],
)
def test_each_cause(
    session: RocqSession, cases: Path, name: str, printing: str, statement: str
) -> None:
    """The have is stated in the most readable printing that is its very goal, and the lemma
    is accepted after the theorem, with the have's goal (fully explicit)."""
    state, have, after = at_have(session, cases, name)
    stated = state_have(session, state, have, 0, frozenset({"T"}))
    assert (stated.printing, stated.lemma(f"{name}_1")) == (
        printing,
        f"Lemma {name}_1 {statement}.",
    )
    lemma = explicit_goal(session, after, stated.lemma(f"{name}_1"))
    assert lemma == explicit_goal(session, state, have)


def explicit_goal(session: RocqSession, state: State, text: str) -> str:
    """The conclusion of the first goal after `text`, printed fully explicit (`Set Printing
    All`): two goals that print alike there are the same term."""
    goals = session.run(state, f"{ALL} {text}").goals
    assert goals is not None
    return goals.foreground[0].conclusion


def test_every_cause_is_stated_on_each_toolchain(each_toolchain: Toolchain, tmp_path: Path) -> None:
    """Displays differ between Rocq versions; on each, every cause above gives a lemma that
    Rocq accepts after the theorem, with the have's goal (fully explicit). Where the statement
    says how the lemma's goal displays (what step 4 then records for a have proof it reads from
    the parent's walk), Rocq displays it so; it does not say it for a renamed binder or a cast."""
    path = tmp_path / "cases.v"
    path.write_text(cases_for(each_toolchain))
    with RocqSession(timeout=60, toolchain=each_toolchain) as rocq:
        rocq.start(path, [])
        for name in CAUSES:
            state, have, after = at_have(rocq, path, name)
            stated = state_have(rocq, state, have, 0, frozenset({"T"}))
            lemma = explicit_goal(rocq, after, stated.lemma(f"{name}_1"))
            assert lemma == explicit_goal(rocq, state, have), name
            shown = rocq.run(after, stated.lemma(f"{name}_1")).goals
            assert shown is not None
            assert (stated.goal is None) == (name == "reserved" or CAST in stated.printing), name
            if stated.goal is not None:
                assert shown.foreground == (stated.goal,), name


SOL_SUBPROOF_STEP = "case/foldExistsP=> e e0 f_e; set s := take n (set_nth 0 e n 0)."
"""In `ssralg.sol_subproof` of MathComp 2.3: after it, `e : seq {| UnitRing.sort := F; … |}`
holds an inline structure instance that no printing gives back as the very term."""


def test_a_part_no_printing_gives_back_is_stated_if_convertible(
    other_toolchain: Toolchain, tmp_path: Path
) -> None:
    """The have after `SOL_SUBPROOF_STEP` in the other release's MathComp: its hypotheses read
    back, even fully explicit, as other terms Rocq finds convertible. They are stated as
    displayed and said to be only convertible; the lemma is accepted after the theorem, where
    its proof (the have's) proves it; no display is claimed for it."""
    copy = Path(shutil.copy(mathcomp(other_toolchain) / "algebra" / "ssralg.v", tmp_path))
    text = copy.read_text()
    step_end = text.index(SOL_SUBPROOF_STEP) + len(SOL_SUBPROOF_STEP)
    qed_end = text.index("Qed.", step_end) + len("Qed.")
    have = "have sz_s: size s = n."

    def position(offset: int) -> Position:
        return Position(text.count("\n", 0, offset) + 1, offset - text.rfind("\n", 0, offset) - 1)

    with RocqSession(timeout=300, toolchain=other_toolchain, skip_proofs=True) as rocq:
        rocq.start(copy, [])
        state = rocq.at(copy, position(step_end))
        stated = state_have(rocq, state, have, 0, frozenset({"F"}))
        assert f"{CONVERTIBLE} for e;" in stated.printing and stated.goal is None
        lemma = rocq.run(rocq.at(copy, position(qed_end)), stated.lemma("sz_s"))
        proved = rocq.run(lemma, "by rewrite size_take size_set_nth leq_max leqnn.")
        assert proved.proof_finished


def test_a_report_checks_only_the_parts_asked_and_by_conversion_if_asked() -> None:
    binders = (Binder(("x",), "nat", None), Binder(("h",), "x = x", None))
    printed = PrintedGoal(PLAIN, binders, "x = x")
    tactic = report_parts(printed, [1], convertible=True)
    checks = [step for step in tactic.split("; ") if "constr_eq_nounivs" in step or "unify" in step]
    assert len(checks) == 1 and "unify" in checks[0]
    assert tactic.split("; ")[1] == "intros x"
    every = report_parts(printed).split("; ")
    assert sum("constr_eq_nounivs" in step for step in every) == 3


def test_a_goal_nested_deeper_than_the_display_is_read_whole(
    session: RocqSession, cases: Path, toolchain: Toolchain
) -> None:
    """coqidetop's display cuts `f`'s body as `...`, and no printing of it reads back; a
    second session whose texts are never cut prints it whole, and the have is stated as
    displayed."""
    state, have, after = at_have(session, cases, "deep")
    with pytest.raises(NotStated, match="no printing gives back f"):
        state_have(session, state, have, 0, frozenset({"T"}))
    with RocqSession(timeout=60, toolchain=toolchain) as flat:
        flat.start(cases, [], FLAT_PRINTING)
        stated = state_have(session, state, have, 0, frozenset({"T"}), flat=lambda: flat)
    assert (stated.printing, stated.binders) == ("", f"(x : nat) (f : nat := {DEEP})")
    start = session.run(after, stated.lemma("deep_1")).goals
    assert start is not None and start.foreground[0].conclusion == "f = f"


def test_a_goal_with_an_existential_variable_is_not_stated(
    session: RocqSession, cases: Path
) -> None:
    state, have, _ = at_have(session, cases, "with_evar")
    with pytest.raises(NotStated, match=r"existential variables: \?n"):
        state_have(session, state, have, 0, frozenset({"T"}))


# --- The four MathComp theorems --------------------------------------------------------------

FOUR = {
    "ssreflect/seq.v": "mathcomp.ssreflect.seq.permutationsErot",
    "ssreflect/finfun.v": "mathcomp.ssreflect.finfun.card_family",
    "algebra/poly.v": "mathcomp.algebra.poly.max_poly_roots",
    "solvable/alt.v": "mathcomp.solvable.alt.simple_Alt5_base",
}


@pytest.mark.slow
def test_the_four_mathcomp_cases(tmp_path: Path, subprocess_env, mathcomp_dir: Path) -> None:
    """Steps 0 to 4 on the MathComp files the four theorems need (41 with MathComp 1.15: 14
    minutes on two busy cores): every have of the four is kept, stated in a printing Rocq
    checked."""
    files = dependencies(mathcomp_dir, "mathcomp").needed(FOUR)
    source = tmp_path / "in" / "mathcomp"
    for file in files:
        (source / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mathcomp_dir / file, source / file)
    output = tmp_path / "out"
    step0 = rocqcot(subprocess_env, "step", "0", "--input", str(source), "--output", str(output))
    assert step0.returncode == 0, step0.stderr
    for step in ("1", "2"):
        assert rocqcot(subprocess_env, "step", step).returncode == 0
    with db.session_factory().begin() as session:
        session.execute(
            sa.update(Theorem).where(Theorem.fqn.in_(FOUR.values())).values(selected=True)
        )
    step4 = rocqcot(subprocess_env, "step", "4", "--max-workers", "2")
    assert step4.returncode == 0, step4.stderr
    with db.session_factory()() as session:
        subs = session.execute(sa.select(Theorem).where(Theorem.parent_id.is_not(None))).scalars()
        haves = {t.fqn: t for t in subs}
    assert {fqn.partition("_have_")[0] for fqn in haves} == set(FOUR.values())
    failed = {fqn: t.error for fqn, t in haves.items() if t.status != Status.done}
    assert not failed
    for theorem in haves.values():
        assert theorem.statement.startswith(f"Lemma {theorem.fqn.rpartition('.')[2]} ")
        assert "printing" in (theorem.evaluation or {})
    shutil.rmtree(output, ignore_errors=True)


def test_one_check_reports_every_part_that_does_not_read_back(
    session: RocqSession, cases: Path
) -> None:
    """As displayed, `e`'s type (binder 1) hides the type of its equality; fully explicit,
    every part reads back. One Rocq call says so for all the parts, as each part's own check
    does."""
    state, have, _ = at_have(session, cases, "notation_type")
    goal = HaveGoal(session, state, have, 0, frozenset({"T"}))
    plain, explicit = goal.printed(PLAIN), goal.printed(ALL)
    assert goal.failed_parts(plain) == frozenset({1})
    assert goal.failed_parts(explicit) == frozenset()


def test_a_part_is_judged_once_whatever_the_printing(
    session: RocqSession, cases: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A part's text judged under one printing is not checked again under another; a part
    that does not parse is judged alone, with Rocq's word, the others still reported."""
    state, have, _ = at_have(session, cases, "notation_type")
    goal = HaveGoal(session, state, have, 0, frozenset({"T"}))
    plain = goal.printed(PLAIN)
    assert goal.failed_parts(plain) == frozenset({1})
    checks: list[str] = []
    original = session.attempt
    monkeypatch.setattr(session, "attempt", lambda *a: checks.append(a[1]) or original(*a))
    assert goal.known_failures(plain) == frozenset({1})
    assert goal.failed_parts(plain) == frozenset({1}) and not checks
    broken = PrintedGoal(ALL, plain.binders, "x = (")  # the conclusion does not parse
    assert goal.failed_parts(broken) == frozenset({1, 2})
    assert len(checks) == 2  # the report, refused; then the conclusion alone
    assert "Syntax error" in goal.why(broken, 2)


def test_an_attempt_fetches_no_goals_and_leaves_its_state_usable(
    session: RocqSession, cases: Path
) -> None:
    state, have, _ = at_have(session, cases, "ltac_names")
    messages = session.attempt(state, 'idtac "checked".')
    assert [m.text for m in messages] == ["checked"]
    with pytest.raises(RocqError):
        session.attempt(state, "fail.")
    assert session.run(state, have).goals.foreground[0].conclusion == "u + H = g + t"


def test_later_haves_try_first_what_the_earlier_ones_needed(
    session: RocqSession, cases: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`e` reads back only fully explicit. Once a have of the theorem found that, its next have
    with `e` takes three Rocq calls (printed as displayed and fully explicit, one check), not
    the cascade, and gets the statement the cascade gives."""
    state, have, _ = at_have(session, cases, "notation_type")
    calls: list[str] = []
    for method in ("run", "attempt", "focused_goal"):
        original = getattr(session, method)
        monkeypatch.setattr(session, method, lambda *a, f=original: calls.append(a[1]) or f(*a))
    other = "have h' : x = x."
    alone, cascade, remembered, used = alone_and_remembered(session, state, have, other, calls)
    assert remembered == alone
    assert remembered.printing == "per part: Set Printing All. for e"
    assert used == 3 < cascade


def test_a_part_an_earlier_have_judged_is_not_checked_again(
    session: RocqSession, cases: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A theorem's haves share their hypotheses. Once a have judged `x y` and `e` (their terms
    named by the fully explicit printing), a later have's one check asks only its own
    conclusion, and the statement is the one its own checks give."""
    state, have, _ = at_have(session, cases, "notation_type")
    checks: list[str] = []
    original = session.attempt
    monkeypatch.setattr(session, "attempt", lambda *a: checks.append(a[1]) or original(*a))
    other = "have h' : x = x."
    alone, _, remembered, _ = alone_and_remembered(session, state, have, other, checks)
    assert remembered == alone
    assert len(checks) == 1
    asked = set(re.findall(r"rocqcot-failed-part-(\d+)", checks[0]))
    assert asked == {"2"}  # the conclusion; not the binders `x y` (0) and `e` (1)


def alone_and_remembered(
    session: RocqSession, state: State, have: str, other: str, calls: list[str]
) -> tuple[HaveStatement, int, HaveStatement, int]:
    """The have `other` stated alone, then with the memory of `have` stated before it, each
    with the number of Rocq calls it took (as recorded in `calls`)."""
    memory, hidden = PrintingMemory(), frozenset({"T"})
    state_have(session, state, have, 0, hidden, memory)
    calls.clear()
    alone = state_have(session, state, other, 0, hidden)
    cascade = len(calls)
    calls.clear()
    remembered = state_have(session, state, other, 0, hidden, memory)
    return alone, cascade, remembered, len(calls)


def test_a_guess_that_fails_in_one_part_keeps_the_others(
    session: RocqSession, cases: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a have found that `e` reads back only fully explicit, a have whose own goal does
    not read back as displayed either keeps `e` fully explicit as guessed, and looks for a
    printing of its goal alone (whose display hides an index): fewer checks than the whole
    cascade, a lemma that is the goal."""
    state, have, after = at_have(session, cases, "notation_type")
    checks: list[str] = []
    original = session.attempt
    monkeypatch.setattr(session, "attempt", lambda *a: checks.append(a[1]) or original(*a))
    other = "have h' : tag (Tagged (fun=> nat) (i := 3) x) = 3."
    alone, cascade, remembered, used = alone_and_remembered(session, state, have, other, checks)
    assert remembered.printing.startswith("per part: Set Printing All. for e; ")
    assert remembered.printing.endswith(" for the goal")
    assert used < cascade
    for stated in (alone, remembered):
        lemma = explicit_goal(session, after, stated.lemma("other_1"))
        assert lemma == explicit_goal(session, state, other)
