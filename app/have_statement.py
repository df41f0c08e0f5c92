"""A tagged have stated as a lemma of its own, `<fqn>_have_<i>`, that is the have's very goal.

The statement is written from Rocq's display of the have's goal: its hypotheses (the section's
variables left out) become binders, its conclusion the lemma's. A display does not always read
back as the same term: a bound variable's name is lost (`rot^~ (x :: t)`), a notation hides an
implicit argument (`x <> 1`, `Tagged`), a pattern shows a parameter the file's `Asymmetric
Patterns` refuses (`ReflectT _ Dx`), a coercion is found through another canonical path, a
fully explicit number is too deep to display (`S (S … (...))`), a local definition that a
tactic stripped of its cast is typed by its body (`Set`), not by the type shown. So the whole
goal is printed as displayed, then with coercions and implicit arguments; when neither reads
back, each binder and the conclusion take the most readable of `PRINTINGS` that gives them back
(one Rocq check per printing says which parts do, and so whether the whole goal does: a goal of
MathComp's group theory has dozens of hypotheses, and checking them one at a time made stating
the haves most of step 4's time). A part that none gives back is stated as displayed if Rocq
finds it convertible to the goal's (`CONVERTIBLE`, said in the statement's printing). A
theorem's later haves try first the printings its earlier haves' parts needed
(`PrintingMemory`): they share most hypotheses, and then one check states them.

"The same goal" is decided by Rocq where the have is, inside the parent's proof
(`app.have_checks`); the texts come from `app.have_parts`. A goal nested deeper than coqidetop's
display (which cuts it as `...`) is printed whole by a second session (`FlatSession`). Step 4
then runs the lemma after the parent's `Qed` and proves it there, unless its goals can be read
from the parent's walk (`app.have_in_place`, from the lemma's goal as displayed:
`HaveStatement.goal`).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from dataclasses import dataclass

from app.have_checks import report_parts, reported_failures, same_goal, same_part
from app.have_parts import (
    Binder,
    PrintedGoal,
    cast_lets,
    decimal_printing,
    part_name,
    part_text,
    parts,
    printed_goal,
    rename_reserved,
)
from app.rocq.goals import Goal, Message
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, RocqSessionError, State

PLAIN, IMPLICIT, ALL = "", "Set Printing Coercions. Set Printing Implicit.", "Set Printing All."
DECIMAL = "Set Printing All. (numbers in decimal)"
"""`Set Printing All.` with its unary numbers written in decimal (`60%nat`): Rocq's display
elides terms nested more than 50 deep, as `S (S … (...))`, and then cannot be read back."""
CAST = "(local definitions cast to their types)"
"""A printing's local definitions written `(x : T := ((body) : T))`: without the cast, Rocq
types a definition by its body (`Type`), not by the type shown (`predArgType`), once a
tactic has dropped the cast the definition was made with."""
CONVERTIBLE = "(as displayed, only convertible)"
"""A part that no printing gives back as its very term, stated as displayed because Rocq finds
the two convertible (`app.have_checks`): its lemma may display otherwise than the have."""
PLAIN_CAST, IMPLICIT_CAST, ALL_CAST = CAST, f"{IMPLICIT} {CAST}", f"{ALL} {CAST}"
PRINTINGS = (PLAIN, IMPLICIT, PLAIN_CAST, IMPLICIT_CAST, DECIMAL, ALL, ALL_CAST)
"""How a have's goal is printed, from the most readable: as Rocq displays it, with coercions
and implicit arguments (each also with its local definitions cast), then fully explicit
(numbers in decimal, then in unary, then cast). The first two are tried on the whole goal,
then each part of the lemma takes the first that gives it back."""

_EVAR = re.compile(r"(?<![\w'])\?[A-Za-z_][\w']*")


class NotStated(Exception):
    """No printing of the have's goal gives a lemma that is that goal: why, for each."""


@dataclass(frozen=True)
class HaveStatement:
    """The have's goal as a lemma: binders and conclusion, and the printing they come from."""

    binders: str
    """`(x : T) (y : U := (v)) …`, the section's variables left out; empty when none."""
    conclusion: str
    printing: str
    """The flags of `PRINTINGS` the text was printed under (empty: Rocq's display); when the
    parts need different ones, `per part:` then each part's flags and name."""
    goal: Goal | None = None
    """The lemma's goal as Rocq displays it, when that is the have's goal as displayed where
    the have is: each part elaborates to the have's very term, so the display is the same,
    unless a part was cast (`CAST`: the cast shows) or is only convertible (`CONVERTIBLE`), a
    binder renamed (`_x_`) or the display cut the goal."""

    def lemma(self, name: str) -> str:
        """The lemma as Rocq runs it, on one line."""
        head = f"{name} {self.binders}" if self.binders else name
        return f"Lemma {head} : {self.conclusion}."


CUT = "..."
"""What coqidetop's display puts in place of a term nested more than 50 boxes deep."""

FlatSession = Callable[[], RocqSession]
"""A session on the same file whose texts are never cut (`app.rocq.protocol.FLAT_PRINTING`),
started when first needed."""


class HaveGoal:
    """The have's goal at its state: printed on demand, checked in place."""

    def __init__(
        self,
        session: RocqSession,
        state: State,
        lead: str,
        goal_index: int,
        hidden: frozenset[str],
        flat: FlatSession | None = None,
    ) -> None:
        self.session, self.state, self.lead = session, state, lead
        self.goal_index, self.hidden, self.flat = goal_index, hidden, flat
        self.shown: dict[str, tuple[State, PrintedGoal]] = {}
        self.reports: dict[PrintedGoal, frozenset[int] | None] = {}
        self.displayed: Goal | None = None
        """The goal as Rocq displays it (`PLAIN`) when a lemma can show it so: not cut, no
        reserved name (`_x_`) that the lemma's binders rename."""

    def printed(self, printing: str) -> PrintedGoal:
        """The goal under `printing` (raises `RocqSessionError` if Rocq refuses the have)."""
        if printing == DECIMAL:
            return decimal_printing(self.printed(ALL), self.printed(IMPLICIT), DECIMAL)
        if printing.endswith(CAST):
            return cast_lets(self.printed(printing.removesuffix(CAST).strip()), printing)
        if printing not in self.shown:
            text = f"{printing} {self.lead}"
            shown, goal = self.session.focused_goal(self.state, text, self.goal_index)
            if CUT in goal.pretty and self.flat is not None:
                goal = self.flat().focused_goal(self.state, text, self.goal_index)[1]
            elif printing == PLAIN and CUT not in goal.pretty and rename_reserved(goal) == goal:
                self.displayed = goal
            self.shown[printing] = shown, printed_goal(goal, self.hidden, printing)
        return self.shown[printing][1]

    def check(self, tactic: str) -> str | None:
        """Run a checking tactic on the have's goal: None when it passes, else Rocq's word."""
        try:
            self._attempt(tactic)
        except RocqSessionError as error:
            return _first_line(_message(error))
        return None

    def failed_parts(self, printed: PrintedGoal) -> frozenset[int] | None:
        """The parts (binders by index, then the conclusion) that do not give back the goal's
        under this printing, found by one check of them all (once per printing); None when
        that check cannot run (a part that does not even parse): then each part is checked
        alone."""
        if printed not in self.reports:
            try:
                messages = self._attempt(report_parts(printed))
            except RocqSessionError:
                self.reports[printed] = None
            else:
                self.reports[printed] = reported_failures(m.text for m in messages)
        return self.reports[printed]

    def _attempt(self, tactic: str) -> tuple[Message, ...]:
        state = next(iter(self.shown.values()))[0]
        return self.session.attempt(state, f"{self.goal_index + 1}: ({tactic}).")


class PrintingMemory:
    """The printing that parts of a theorem's earlier haves needed, tried first on its later
    ones: a proof's haves share most of their hypotheses, and a hypothesis that reads back only
    fully explicit in one goal does so in the next, so one check states the have instead of a
    cascade of them (Rocq's check still decides: a wrong guess costs one call)."""

    def __init__(self) -> None:
        self._needed: dict[str, str] = {}

    def guess(self, plain: PrintedGoal) -> list[str] | None:
        """A printing for each part (those never seen as displayed), or None when no part of
        this goal needed another printing before."""
        printings = [self._needed.get(part_text(plain, i), PLAIN) for i in parts(plain)]
        return printings if any(printings) else None

    def learn(self, plain: PrintedGoal, chosen: list[PrintedGoal]) -> None:
        """Remember the parts that did not read back as displayed, by their display."""
        for index, printed in enumerate(chosen):
            if printed.printing:
                self._needed[part_text(plain, index)] = printed.printing


def state_have(
    session: RocqSession,
    state: State,
    lead: str,
    goal_index: int,
    hidden: frozenset[str],
    memory: PrintingMemory | None = None,
    flat: FlatSession | None = None,
) -> HaveStatement:
    """The most readable statement of the have that `lead` opens at `state` (its goal is the
    `goal_index`th it leaves) that Rocq elaborates, there, into that very goal: one printing
    for the whole goal when one does, else each binder and the conclusion in the most readable
    printing that gives it back. With the `memory` of the theorem's earlier haves, the
    printings their parts needed are tried first; with a `flat` session, a goal the display
    cuts is printed whole there.

    Raises `RocqSessionError` when Rocq refuses the have itself, `NotStated` when no printing
    gives the goal back."""
    have = HaveGoal(session, state, lead, goal_index, hidden, flat)
    stated = _most_readable(have, memory or PrintingMemory())
    if CAST in stated.printing or CONVERTIBLE in stated.printing:
        return stated
    return dataclasses.replace(stated, goal=have.displayed)


def _most_readable(have: HaveGoal, memory: PrintingMemory) -> HaveStatement:
    """`state_have`'s choice of printings."""
    plain = have.printed(PLAIN)
    if evars := _EVAR.findall(_statement(plain.binders, plain.conclusion, PLAIN).lemma("_")):
        raise NotStated(f"the goal holds existential variables: {', '.join(sorted(set(evars)))}")
    if (guess := memory.guess(plain)) and (stated := _guessed(have, guess)):
        return stated
    problems = []
    for printing in (PLAIN, IMPLICIT):
        printed = have.printed(printing)
        if problems and printed == have.printed(PLAIN):
            continue
        problem = _whole_problem(have, printed)
        if problem is None:
            return _statement(printed.binders, printed.conclusion, printing)
        problems.append(f"{printing or 'as displayed'}: {problem}")
    return _per_part(have, problems, memory)


def _whole_problem(have: HaveGoal, printed: PrintedGoal) -> str | None:
    """Why the whole goal under a printing is not the have's: None when it is. Asked part by
    part in one check (`failed_parts`), whose report the parts reuse if the goal is stated
    part by part; Rocq's own word when a part does not even parse."""
    failed = have.failed_parts(printed)
    if failed is None:
        return have.check(same_goal(printed.binders, printed.conclusion))
    if not failed:
        return None
    return ", ".join(part_name(printed, index) for index in sorted(failed)) + " not given back"


def _guessed(have: HaveGoal, printings: list[str]) -> HaveStatement | None:
    """The statement with each part in the printing given, if Rocq finds it is the goal."""
    chosen = [have.printed(printing) for printing in printings]
    if not _grouped_alike(chosen):
        return None
    if have.check(same_goal(*_lemma(chosen))) is not None:
        return None
    return _mixed(chosen)


def _per_part(have: HaveGoal, problems: list[str], memory: PrintingMemory) -> HaveStatement:
    """Each part in the most readable printing that gives it back, then the whole checked."""
    every = [have.printed(printing) for printing in PRINTINGS]
    if not _grouped_alike(every):
        raise NotStated("; ".join([*problems, "the printings group the hypotheses differently"]))

    def gives_back(printed: PrintedGoal, index: int) -> bool:
        failed = have.failed_parts(printed)
        if failed is None:
            return have.check(same_part(printed, index)) is None
        return index not in failed

    chosen: list[PrintedGoal] = []
    convertible: set[int] = set()
    for index in parts(every[0]):
        candidates = _candidates(every, index)
        found = next((p for p in candidates if gives_back(p, index)), None)
        if found is None and have.check(same_part(every[0], index, convertible=True)) is None:
            found = every[0]
            convertible.add(index)
        if found is None:
            missing = f"no printing gives back {part_name(every[0], index)}"
            raise NotStated("; ".join([*problems, missing]))
        chosen.append(found)
    problem = have.check(same_goal(*_lemma(chosen), frozenset(convertible)))
    if problem is not None:
        raise NotStated("; ".join([*problems, f"per part: {problem}"]))
    memory.learn(every[0], chosen)
    return _mixed(chosen, frozenset(convertible))


def _grouped_alike(printings: list[PrintedGoal]) -> bool:
    """The printings group the goal's hypotheses into the same binders."""
    return len({tuple(b.names for b in p.binders) for p in printings}) == 1


def _lemma(chosen: list[PrintedGoal]) -> tuple[tuple[Binder, ...], str]:
    """The binders and conclusion when each part is taken from its own printing."""
    return tuple(p.binders[i] for i, p in enumerate(chosen[:-1])), chosen[-1].conclusion


def _mixed(chosen: list[PrintedGoal], convertible: frozenset[int] = frozenset()) -> HaveStatement:
    """The statement of parts each in its own printing, the record naming the explicit ones
    and those only convertible."""
    explicit = [
        f"{CONVERTIBLE if i in convertible else p.printing} for {part_name(p, i)}"
        for i, p in enumerate(chosen)
        if p.printing or i in convertible
    ]
    return _statement(*_lemma(chosen), "per part: " + "; ".join(explicit))


def _candidates(every: list[PrintedGoal], index: int) -> list[PrintedGoal]:
    """The printings of a part in order, each distinct text once (a decimal printing that
    changed nothing is the plain `Set Printing All.`)."""
    texts: set[str] = set()
    candidates = []
    explicit = next(p for p in every if p.printing == ALL)
    for printed in every:
        text = part_text(printed, index)
        if printed.printing == DECIMAL and text == part_text(explicit, index):
            continue
        if text not in texts:
            texts.add(text)
            candidates.append(printed)
    return candidates


def _statement(binders: tuple[Binder, ...], conclusion: str, printing: str) -> HaveStatement:
    return HaveStatement(" ".join(b.text for b in binders), conclusion, printing)


def _message(error: RocqSessionError) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _first_line(message: str) -> str:
    return " ".join(message.split())[:300]
