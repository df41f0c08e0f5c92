"""A tagged have stated as a lemma of its own, `<fqn>_have_<i>`, that is the have's very goal.

The statement is written from Rocq's display of the have's goal: its hypotheses (the section's
variables left out) become binders, its conclusion the lemma's. A display does not always read
back as the same term: a bound variable's name is lost (`rot^~ (x :: t)`), a notation hides an
implicit argument (`x <> 1`, `Tagged`), a pattern shows a parameter the file's `Asymmetric
Patterns` refuses (`ReflectT _ Dx`), a coercion is found through another canonical path, a
fully explicit number is too deep to display (`S (S … (...))`), a local definition that a
tactic stripped of its cast is typed by its body (`Set`), not by the type shown. So the whole
goal is printed as displayed, then with coercions and implicit arguments; when neither reads
back, each binder and the conclusion take the most readable of `PRINTINGS` that gives them back.
A part that none gives back is stated as displayed if Rocq finds it convertible to the goal's
(`CONVERTIBLE`, said in the statement's printing). A theorem's later haves try first the
printings its earlier haves' parts needed (`PrintingMemory`): they share most hypotheses, and
then one check states them, or all but the few parts it finds are not given back.

Checking is most of what stating costs (a goal of MathComp's group theory or of
`algebraics_fundamentals` has dozens of hypotheses), so it is asked sparingly: one Rocq check
per printing says which of the parts still open give the goal's back, and a part's verdict
depends on its text alone (the hypotheses before it are the goal's own, introduced), so a text
judged once is never checked again under another printing, and a whole printing with a part
known to fail is not checked at all. A theorem's later haves take the verdicts of its earlier
ones on the parts they share, named by their fully explicit printing (`TheoremVerdicts`).

"The same goal" is decided by Rocq where the have is, inside the parent's proof
(`app.have_checks`); the texts come from `app.have_parts`. A goal nested deeper than coqidetop's
display (which cuts it as `...`) is printed whole by a second session (`FlatSession`). Step 4
then runs the lemma after the parent's `Qed` and proves it there, unless its goals can be read
from the parent's walk (`app.have_in_place`, from the lemma's goal as displayed:
`HaveStatement.goal`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from app.have_checks import report_parts, reported_failures, same_part
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

_NOT_GIVEN_BACK = "not given back"
"""Why a part is refused when Rocq's check only says it is not the goal's."""

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
        earlier: TheoremVerdicts | None = None,
    ) -> None:
        self.session, self.state, self.lead = session, state, lead
        self.goal_index, self.hidden, self.flat = goal_index, hidden, flat
        self.shown: dict[str, tuple[State, PrintedGoal]] = {}
        self.verdicts: dict[tuple[int, str, bool], str | None] = {}
        """Each part's text judged (with whether only convertible was asked): None when it
        gives the goal's part back, else why not."""
        self.earlier = earlier if earlier is not None else {}
        """The verdicts of the theorem's earlier haves (`TheoremVerdicts`)."""
        self._judged: list[tuple[PrintedGoal, int, bool]] = []
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
            # the printing is set after the have, which runs once (from the state it leaves)
            at, text = (self.state, self.lead) if printing == PLAIN else (self._opened(), printing)
            shown, goal = self.session.focused_goal(at, text, self.goal_index)
            if CUT in goal.pretty and self.flat is not None:
                goal = self.flat().focused_goal(at, text, self.goal_index)[1]
            elif printing == PLAIN and CUT not in goal.pretty and rename_reserved(goal) == goal:
                self.displayed = goal
            self.shown[printing] = shown, printed_goal(goal, self.hidden, printing)
        return self.shown[printing][1]

    def _opened(self) -> State:
        """The state after the have (the goals as displayed are fetched there first)."""
        self.printed(PLAIN)
        return self.shown[PLAIN][0]

    def failed_parts(
        self, printed: PrintedGoal, indices: Iterable[int] | None = None, convertible: bool = False
    ) -> frozenset[int]:
        """Which of the parts (`indices`: every one by default; binders by index, then the
        conclusion) do not give back the goal's under this printing, or are not even
        `convertible` to it. The parts whose text was never judged are checked in one Rocq
        call; a part's check depends on its text alone (the hypotheses before it are the
        goal's own), so a text judged under one printing is judged under every other."""
        wanted = list(parts(printed) if indices is None else indices)
        key = functools.partial(_verdict_key, printed, convertible=convertible)
        todo = [index for index in wanted if key(index) not in self.verdicts]
        for index in todo:
            if (known := self._theorem_key(printed, index, convertible)) in self.earlier:
                self.verdicts[key(index)] = self.earlier[known]
        todo = [index for index in todo if key(index) not in self.verdicts]
        if todo:
            self._judge(printed, todo, convertible)
            self._judged += [(printed, index, convertible) for index in todo]
        return frozenset(index for index in wanted if self.verdicts[key(index)] is not None)

    def share(self) -> None:
        """Give the verdicts of this have to the theorem's later ones, where the goal printed
        under `Set Printing All` names their parts."""
        for printed, index, convertible in self._judged:
            if (known := self._theorem_key(printed, index, convertible)) is not None:
                self.earlier[known] = self.verdicts[_verdict_key(printed, index, convertible)]

    def _theorem_key(
        self, printed: PrintedGoal, index: int, convertible: bool
    ) -> tuple[tuple[str, ...], str, bool] | None:
        """A part's key among the theorem's haves: the texts of the parts up to it under
        `Set Printing All` (the terms themselves, whole), then its text; None until the goal
        was printed so, or if that printing cuts or groups the hypotheses otherwise."""
        if ALL not in self.shown:
            return None
        explicit = self.shown[ALL][1]
        context = tuple(part_text(explicit, i) for i in range(index + 1))
        if not _grouped_alike([explicit, printed]) or any(CUT in text for text in context):
            return None
        return context, part_text(printed, index), convertible

    def known_failures(self, printed: PrintedGoal) -> frozenset[int]:
        """The parts of `printed` whose text was already judged not to give the goal's back."""
        known = (self.verdicts.get(_verdict_key(printed, index)) for index in parts(printed))
        return frozenset(index for index, why in enumerate(known) if why is not None)

    def why(self, printed: PrintedGoal, index: int) -> str:
        """What Rocq said of a part it refused, or that it is not the goal's."""
        return self.verdicts.get(_verdict_key(printed, index)) or _NOT_GIVEN_BACK

    def _judge(self, printed: PrintedGoal, todo: list[int], convertible: bool) -> None:
        """Check the parts `todo` in one call; when one does not even parse, each alone."""
        try:
            messages = self._attempt(report_parts(printed, todo, convertible))
        except RocqSessionError:
            for index in todo:
                try:
                    self._attempt(same_part(printed, index, convertible))
                    why = None
                except RocqSessionError as error:
                    why = _first_line(_message(error))
                self.verdicts[_verdict_key(printed, index, convertible)] = why
            return
        failed = reported_failures(m.text for m in messages)
        for index in todo:
            why = _NOT_GIVEN_BACK if index in failed else None
            self.verdicts[_verdict_key(printed, index, convertible)] = why

    def _attempt(self, tactic: str) -> tuple[Message, ...]:
        return self.session.attempt(self._opened(), f"{self.goal_index + 1}: ({tactic}).")


def _verdict_key(
    printed: PrintedGoal, index: int, convertible: bool = False
) -> tuple[int, str, bool]:
    return index, part_text(printed, index), convertible


TheoremVerdicts = dict[tuple[tuple[str, ...], str, bool], str | None]
"""The verdicts of a theorem's haves on their parts, by the parts up to each one printed fully
explicit (`HaveGoal._theorem_key`). A verdict depends on the part's text and on the terms of the
hypotheses before it and of the part itself: the haves of a proof share most hypotheses, so each
shared one is checked once in the theorem, not once per have. Displays that hide implicit
arguments could name two terms alike; `Set Printing All` does not."""


class PrintingMemory:
    """The printing that parts of a theorem's earlier haves needed, tried first on its later
    ones: a proof's haves share most of their hypotheses, and a hypothesis that reads back only
    fully explicit in one goal does so in the next, so one check states the have instead of a
    cascade of them. Rocq's check still decides: the parts it finds given back keep the printing
    guessed (the least explicit one that did for their display before), and only the others
    are looked for."""

    def __init__(self) -> None:
        self._needed: dict[str, str] = {}
        self.verdicts: TheoremVerdicts = {}

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
    memory = memory or PrintingMemory()
    have = HaveGoal(session, state, lead, goal_index, hidden, flat, memory.verdicts)
    try:
        stated = _most_readable(have, memory)
    finally:
        have.share()
    if CAST in stated.printing or CONVERTIBLE in stated.printing:
        return stated
    return dataclasses.replace(stated, goal=have.displayed)


def _most_readable(have: HaveGoal, memory: PrintingMemory) -> HaveStatement:
    """`state_have`'s choice of printings."""
    plain = have.printed(PLAIN)
    if evars := _EVAR.findall(_statement(plain.binders, plain.conclusion, PLAIN).lemma("_")):
        raise NotStated(f"the goal holds existential variables: {', '.join(sorted(set(evars)))}")
    if (guess := memory.guess(plain)) and (stated := _guessed(have, memory, guess)):
        return stated
    problems = []
    for printing in (PLAIN, IMPLICIT):
        printed = have.printed(printing)
        if problems and printed == have.printed(PLAIN):
            continue
        problem = _whole_problem(have, printed, plain)
        if problem is None:
            return _statement(printed.binders, printed.conclusion, printing)
        problems.append(f"{printing or 'as displayed'}: {problem}")
    return _per_part(have, problems, memory)


def _whole_problem(have: HaveGoal, printed: PrintedGoal, plain: PrintedGoal) -> str | None:
    """Why the whole goal under a printing is not the have's: None when it is. Parts already
    judged under another printing are not asked again, and a part known to fail answers
    without asking Rocq; the parts known to fail as displayed are asked first (the per-part
    choice needs them anyway), the others only if those pass."""
    failed = have.known_failures(printed)
    if not failed:
        failed = have.failed_parts(printed, have.known_failures(plain))
    if not failed:
        failed = have.failed_parts(printed)
    if not failed:
        return None
    return ", ".join(_refused(have, printed, index) for index in sorted(failed))


def _refused(have: HaveGoal, printed: PrintedGoal, index: int) -> str:
    return f"{part_name(printed, index)} {have.why(printed, index)}"


def _guessed(have: HaveGoal, memory: PrintingMemory, printings: list[str]) -> HaveStatement | None:
    """The statement with each part in the printing given where Rocq finds it gives the part
    back, the parts where it does not in the most readable printing that does (`_per_part`);
    None when the printings do not group the hypotheses alike."""
    chosen = [have.printed(printing) for printing in printings]
    if not _grouped_alike(chosen):
        return None
    failed = have.failed_parts(PrintedGoal("", *_lemma(chosen)))
    if not failed:
        return _mixed(chosen)
    kept = {index: printed for index, printed in enumerate(chosen) if index not in failed}
    return _per_part(have, [], memory, kept)


def _per_part(
    have: HaveGoal,
    problems: list[str],
    memory: PrintingMemory,
    chosen: dict[int, PrintedGoal] | None = None,
) -> HaveStatement:
    """Each part in the most readable printing that gives it back (one check per printing, of
    the parts still left; those `chosen` already keep their printing), else as displayed if
    only convertible."""
    plain, chosen = have.printed(PLAIN), dict(chosen or {})
    for printing in PRINTINGS:
        left = [index for index in parts(plain) if index not in chosen]
        if not left:
            break
        printed = have.printed(printing)
        if not _grouped_alike([plain, printed]):
            grouped = f"{printing} groups the hypotheses differently"
            raise NotStated("; ".join([*problems, grouped]))
        if printing == DECIMAL:  # a part it leaves as it was is tried (and named) as `ALL`
            explicit = have.printed(ALL)
            left = [i for i in left if part_text(printed, i) != part_text(explicit, i)]
        for index in sorted(set(left) - have.failed_parts(printed, left)):
            chosen[index] = printed
    left = [index for index in parts(plain) if index not in chosen]
    if failed := have.failed_parts(plain, left, convertible=True):
        missing = (f"no printing gives back {part_name(plain, index)}" for index in sorted(failed))
        raise NotStated("; ".join([*problems, *missing]))
    ordered = [chosen.get(index, plain) for index in parts(plain)]
    memory.learn(plain, ordered)
    return _mixed(ordered, frozenset(left))


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


def _statement(binders: tuple[Binder, ...], conclusion: str, printing: str) -> HaveStatement:
    return HaveStatement(" ".join(b.text for b in binders), conclusion, printing)


def _message(error: RocqSessionError) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _first_line(message: str) -> str:
    return " ".join(message.split())[:300]
