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
(one Rocq check per printing says which parts do: a goal of MathComp's group theory has dozens
of hypotheses, and checking them one at a time made stating the haves most of step 4's time). A
theorem's later haves try first the printings its earlier haves' parts needed
(`PrintingMemory`): they share most hypotheses, and then one check states them.

"The same goal" is decided by Rocq where the have is, inside the parent's proof: its own
hypotheses are reverted (the section's variables stay, as after the parent's `Qed`) and
introduced again one by one under the binders' names, each hypothesis (type and body) and then
the goal compared with the binder or conclusion elaborated at that point, as Rocq elaborates a
lemma's statement; `constr_eq_nounivs`: the same term up to the names of bound variables and
universe levels (a statement has no way to name the parent's universes), never merely
convertible. Step 4 then runs the lemma after the parent's `Qed` and proves it there.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from app.rocq.goals import Goal, Hypothesis, Message
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
PLAIN_CAST, IMPLICIT_CAST, ALL_CAST = CAST, f"{IMPLICIT} {CAST}", f"{ALL} {CAST}"
PRINTINGS = (PLAIN, IMPLICIT, PLAIN_CAST, IMPLICIT_CAST, DECIMAL, ALL, ALL_CAST)
"""How a have's goal is printed, from the most readable: as Rocq displays it, with coercions
and implicit arguments (each also with its local definitions cast), then fully explicit
(numbers in decimal, then in unary, then cast). The first two are tried on the whole goal,
then each part of the lemma takes the first that gives it back."""

_RESERVED = re.compile(r"_[\w']*_$")
_BINDERS = frozenset({"forall", "fun", "exists", "exists2", "let", "fix", "cofix"})
_WORD = re.compile(r"[\w']+")
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

    def lemma(self, name: str) -> str:
        """The lemma as Rocq runs it, on one line."""
        head = f"{name} {self.binders}" if self.binders else name
        return f"Lemma {head} : {self.conclusion}."


@dataclass(frozen=True)
class Binder:
    """A hypothesis of the have's goal as a binder of the lemma (reserved names renamed)."""

    names: tuple[str, ...]
    type: str
    body: str | None = None

    @property
    def text(self) -> str:
        """`(x y : T)`, or `(x : T := (v))` for a local definition."""
        if self.body is None:
            return f"({' '.join(self.names)} : {self.type})"
        return f"({' '.join(self.names)} : {self.type} := ({self.body}))"


@dataclass(frozen=True)
class PrintedGoal:
    """The have's goal under one printing, cut into the lemma's parts."""

    printing: str
    binders: tuple[Binder, ...]
    conclusion: str


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

    def printed(self, printing: str) -> PrintedGoal:
        """The goal under `printing` (raises `RocqSessionError` if Rocq refuses the have)."""
        if printing == DECIMAL:
            return _decimal(self.printed(ALL), self.printed(IMPLICIT))
        if printing.endswith(CAST):
            return _cast(self.printed(printing.removesuffix(CAST).strip()), printing)
        if printing not in self.shown:
            text = f"{printing} {self.lead}"
            shown = self.session.run(self.state, text)
            assert shown.goals is not None
            goal = shown.goals.foreground[self.goal_index]
            if CUT in goal.pretty and self.flat is not None:
                whole = self.flat().run(self.state, text).goals
                assert whole is not None
                goal = whole.foreground[self.goal_index]
            self.shown[printing] = shown, _cut(goal, self.hidden, printing)
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
        under this printing, found by one check of them all; None when that check cannot run
        (a part that does not even parse): then each part is checked alone."""
        try:
            messages = self._attempt(_report_parts(printed))
        except RocqSessionError:
            return None
        return frozenset(
            int(found.group(1)) for m in messages if (found := _FAILED_PART.search(m.text))
        )

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
        printings = [self._needed.get(_part_text(plain, i), PLAIN) for i in _parts(plain)]
        return printings if any(printings) else None

    def learn(self, plain: PrintedGoal, chosen: list[PrintedGoal]) -> None:
        """Remember the parts that did not read back as displayed, by their display."""
        for index, printed in enumerate(chosen):
            if printed.printing:
                self._needed[_part_text(plain, index)] = printed.printing


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
    plain = have.printed(PLAIN)
    if evars := _EVAR.findall(_statement(plain.binders, plain.conclusion, PLAIN).lemma("_")):
        raise NotStated(f"the goal holds existential variables: {', '.join(sorted(set(evars)))}")
    memory = memory or PrintingMemory()
    if (guess := memory.guess(plain)) and (stated := _guessed(have, guess)):
        return stated
    problems = []
    for printing in (PLAIN, IMPLICIT):
        printed = have.printed(printing)
        if problems and printed == have.printed(PLAIN):
            continue
        problem = have.check(_same_goal(printed.binders, printed.conclusion))
        if problem is None:
            return _statement(printed.binders, printed.conclusion, printing)
        problems.append(f"{printing or 'as displayed'}: {problem}")
    return _per_part(have, problems, memory)


def _guessed(have: HaveGoal, printings: list[str]) -> HaveStatement | None:
    """The statement with each part in the printing given, if Rocq finds it is the goal."""
    chosen = [have.printed(printing) for printing in printings]
    if not _grouped_alike(chosen):
        return None
    if have.check(_same_goal(*_lemma(chosen))) is not None:
        return None
    return _mixed(chosen)


def _per_part(have: HaveGoal, problems: list[str], memory: PrintingMemory) -> HaveStatement:
    """Each part in the most readable printing that gives it back, then the whole checked."""
    every = [have.printed(printing) for printing in PRINTINGS]
    if not _grouped_alike(every):
        raise NotStated("; ".join([*problems, "the printings group the hypotheses differently"]))
    reports: dict[str, frozenset[int] | None] = {}

    def gives_back(printed: PrintedGoal, index: int) -> bool:
        if printed.printing not in reports:
            reports[printed.printing] = have.failed_parts(printed)
        failed = reports[printed.printing]
        if failed is None:
            return have.check(_same_part(printed, index)) is None
        return index not in failed

    chosen: list[PrintedGoal] = []
    for index in _parts(every[0]):
        candidates = _candidates(every, index)
        found = next((p for p in candidates if gives_back(p, index)), None)
        if found is None:
            missing = f"no printing gives back {_part(every[0], index)}"
            raise NotStated("; ".join([*problems, missing]))
        chosen.append(found)
    problem = have.check(_same_goal(*_lemma(chosen)))
    if problem is not None:
        raise NotStated("; ".join([*problems, f"per part: {problem}"]))
    memory.learn(every[0], chosen)
    return _mixed(chosen)


def _parts(printed: PrintedGoal) -> range:
    """The indices of the lemma's parts: its binders, then its conclusion."""
    return range(len(printed.binders) + 1)


def _grouped_alike(printings: list[PrintedGoal]) -> bool:
    """The printings group the goal's hypotheses into the same binders."""
    return len({tuple(b.names for b in p.binders) for p in printings}) == 1


def _lemma(chosen: list[PrintedGoal]) -> tuple[tuple[Binder, ...], str]:
    """The binders and conclusion when each part is taken from its own printing."""
    return tuple(p.binders[i] for i, p in enumerate(chosen[:-1])), chosen[-1].conclusion


def _mixed(chosen: list[PrintedGoal]) -> HaveStatement:
    """The statement of parts each in its own printing, the record naming the explicit ones."""
    explicit = [f"{p.printing} for {_part(p, i)}" for i, p in enumerate(chosen) if p.printing]
    return _statement(*_lemma(chosen), "per part: " + "; ".join(explicit))


def _part(printed: PrintedGoal, index: int) -> str:
    """How a part is named in the record: its binder's names, or `the goal`."""
    if index < len(printed.binders):
        return " ".join(printed.binders[index].names)
    return "the goal"


def _candidates(every: list[PrintedGoal], index: int) -> list[PrintedGoal]:
    """The printings of a part in order, each distinct text once (a decimal printing that
    changed nothing is the plain `Set Printing All.`)."""
    texts: set[str] = set()
    candidates = []
    explicit = next(p for p in every if p.printing == ALL)
    for printed in every:
        text = _part_text(printed, index)
        if printed.printing == DECIMAL and text == _part_text(explicit, index):
            continue
        if text not in texts:
            texts.add(text)
            candidates.append(printed)
    return candidates


def _part_text(printed: PrintedGoal, index: int) -> str:
    if index < len(printed.binders):
        return printed.binders[index].text
    return printed.conclusion


def _statement(binders: tuple[Binder, ...], conclusion: str, printing: str) -> HaveStatement:
    return HaveStatement(" ".join(b.text for b in binders), conclusion, printing)


def _cut(goal: Goal, hidden: frozenset[str], printing: str) -> PrintedGoal:
    """The goal's binders and conclusion, reserved names renamed."""
    return PrintedGoal(printing, *lemma_parts(rename_reserved(goal), hidden))


def _cast(printed: PrintedGoal, printing: str) -> PrintedGoal:
    """The printing with each local definition's body cast to the definition's type."""
    binders = tuple(
        b if b.body is None else Binder(b.names, b.type, f"({b.body}) : {b.type}")
        for b in printed.binders
    )
    return PrintedGoal(printing, binders, printed.conclusion)


def _decimal(explicit: PrintedGoal, shown: PrintedGoal) -> PrintedGoal:
    """The fully explicit printing with its numbers in decimal, part by part (a part whose
    numbers do not line up with the display's stays as it is)."""

    def part(text: str, display: str) -> str:
        return decimal_numbers(text, display) or text

    binders = tuple(
        Binder(
            b.names,
            part(b.type, d.type),
            None if b.body is None or d.body is None else part(b.body, d.body),
        )
        for b, d in zip(explicit.binders, shown.binders, strict=True)
    )
    return PrintedGoal(DECIMAL, binders, part(explicit.conclusion, shown.conclusion))


_UNARY = re.compile(r"(?<![\w'.@])(?:S|O)(?![\w'.])")
_DECIMAL = re.compile(r"(?<![\w'.])\d+(?![\w'])")


def decimal_numbers(explicit: str, display: str) -> str | None:
    """`explicit` (Rocq's text under `Set Printing All`) with each unary number (`O`,
    `S (S O)`, or elided: `S (S (...))`) written `2%nat`; an elided one takes its value from
    the display with notations (`display`), whose decimal numbers come in the same order. None
    when there is nothing to write or the numbers do not line up."""
    numbers, position = [], 0
    while match := _UNARY.search(explicit, position):
        found = _unary(explicit, match.start())
        if found is None:
            position = match.end()
            continue
        numbers.append((match.start(), *found))
        position = found[0]
    shown = [int(n) for n in _DECIMAL.findall(display)]
    elided = any(value is None for _, _, value in numbers)
    if not numbers or (elided and len(shown) != len(numbers)):
        return None
    values = shown if elided else [value for _, _, value in numbers]
    if any(value not in (None, v) for (_, _, value), v in zip(numbers, values, strict=True)):
        return None
    parts, last = [], 0
    for (start, end, _), value in zip(numbers, values, strict=True):
        parts += [explicit[last:start], f"{value}%nat"]
        last = end
    return "".join([*parts, explicit[last:]])


def _unary(text: str, start: int) -> tuple[int, int | None] | None:
    """The end of the unary number at `start` and its value (None when elided), if one is."""
    if text.startswith("O", start):
        return start + 1, 0
    if text.startswith("...", start):
        return start + 3, None
    if text.startswith("(...)", start):
        return start + 5, None
    if not text.startswith("S ", start):
        return None
    inner = start + 2
    if text.startswith("(", inner) and not text.startswith("(...)", inner):
        found = _unary(text, inner + 1)
        if found is None or not text.startswith(")", found[0]):
            return None
        end, value = found[0] + 1, found[1]
    else:
        found = _unary(text, inner)
        if found is None:
            return None
        end, value = found
    return end, None if value is None else value + 1


def _same_goal(binders: tuple[Binder, ...], conclusion: str) -> str:
    """A tactic that fails unless the statement is the have's goal: its hypotheses reverted,
    then introduced again one by one under the binders' names, each checked against its
    binder elaborated in the context of those before it, then the goal against the conclusion
    (as Rocq elaborates a lemma's binders and statement)."""
    return _checks(binders, binders, conclusion)


def _report_parts(printed: PrintedGoal) -> str:
    """A tactic that checks every part as `_same_part` does, one after the other in one run,
    and says which fail (`idtac`) instead of failing: one Rocq call for all the parts."""
    steps = _revert(printed.binders)
    for index, binder in enumerate(printed.binders):
        steps += [f"intros {name}; {_reported(_is_last(binder), index)}" for name in binder.names]
    steps.append(_reported(_is_goal(printed.conclusion), len(printed.binders)))
    return "; ".join(steps)


def _reported(check: str, index: int) -> str:
    return f'tryif ({check}) then idtac else idtac "{FAILED_PART_MARK}{index}"'


FAILED_PART_MARK = "rocqcot-failed-part-"
_FAILED_PART = re.compile(rf"{FAILED_PART_MARK}(\d+)")


def _same_part(printed: PrintedGoal, index: int) -> str:
    """A tactic that fails unless binder `index` (the conclusion after the last) is what the
    have's goal has there (the binders before it introduced, not checked)."""
    before = printed.binders[:index]
    intro = [f"intros {' '.join(n for b in before for n in b.names)}"] if before else []
    if index == len(printed.binders):
        return _checks(printed.binders, (), printed.conclusion, intro)
    return _checks(printed.binders, (printed.binders[index],), None, intro)


def _checks(
    every: tuple[Binder, ...],
    checked: tuple[Binder, ...],
    conclusion: str | None,
    intro: list[str] | None = None,
) -> str:
    """Revert the hypotheses of `every` binder, run `intro`, introduce and check each of
    `checked`, then check the goal against `conclusion` (when given)."""
    steps = _revert(every)
    steps += intro or []
    steps += [f"intros {name}; {_is_last(b)}" for b in checked for name in b.names]
    if conclusion is not None:
        steps.append(_is_goal(conclusion))
    return "; ".join(steps) or "idtac"


def _revert(binders: tuple[Binder, ...]) -> list[str]:
    """The tactic that reverts the hypotheses the binders stand for (the last ones)."""
    count = sum(len(b.names) for b in binders)
    return [f"do {count} lazymatch goal with H : _ |- _ => revert H end"] if count else []


def _is_last(binder: Binder) -> str:
    """A tactic that fails unless the last hypothesis is what `binder` says, elaborated there."""
    if binder.body is not None:
        h, b, ty, x, u, v = _fresh(binder.text, "H", "b", "ty", "x", "u", "v")
        return (
            f"lazymatch goal with {h} := [?{b}] : ?{ty} |- _ => "
            f"let {x} := constr:(let _ : {binder.type} := ({binder.body}) in Prop) in "
            f"lazymatch {x} with let _ : ?{u} := ?{v} in _ => "
            f"constr_eq_nounivs {ty} {u}; constr_eq_nounivs {b} {v} end end"
        )
    h, ty, x, u = _fresh(binder.text, "H", "ty", "x", "u")
    return (
        f"lazymatch goal with {h} : ?{ty} |- _ => "
        f"let {x} := constr:(forall _ : {binder.type}, Prop) in "
        f"lazymatch {x} with forall _ : ?{u}, _ => constr_eq_nounivs {ty} {u} end end"
    )


def _is_goal(term: str) -> str:
    """A tactic that fails unless the goal is `term` (elaborated as a type: in a product)."""
    g, t, u = _fresh(term, "g", "t", "u")
    return (
        f"lazymatch goal with |- ?{g} => let {t} := constr:(forall _ : Prop, {term}) in "
        f"lazymatch {t} with forall _, ?{u} => constr_eq_nounivs {g} {u} end end"
    )


def _fresh(text: str, *names: str) -> list[str]:
    """Ltac variables that `text` never mentions (Ltac would put their values in its place)."""
    used = set(_WORD.findall(text))
    fresh = []
    for name in names:
        while name in used:
            name += "'"
        fresh.append(name)
    return fresh


def _message(error: RocqSessionError) -> str:
    return error.message if isinstance(error, RocqError) else str(error)


def _first_line(message: str) -> str:
    return " ".join(message.split())[:300]


def rename_reserved(goal: Goal) -> Goal:
    """The goal with the names Rocq reserves (`_x_`, made by intro patterns) renamed, so that
    it can be written as a lemma: to a name no hypothesis has and the goal's text never uses
    (which could be a global name the new binder would hide)."""
    shown = "\n".join([goal.pretty, *(h.body or "" for h in goal.hypotheses)])
    taken = set(_WORD.findall(shown))
    renames: dict[str, str] = {}
    for old in (name for h in goal.hypotheses for name in h.names):
        if _RESERVED.match(old):
            new = old.strip("_") or "x"
            while new in taken:
                new += "'"
            renames[old] = new
            taken.add(new)
    if not renames:
        return goal

    def fix(text: str) -> str:
        for old, new in renames.items():
            text = re.sub(rf"(?<![\w']){re.escape(old)}(?![\w'])", new, text)
        return text

    hypotheses = tuple(
        Hypothesis(
            tuple(renames.get(n, n) for n in h.names),
            None if h.body is None else fix(h.body),
            fix(h.type),
        )
        for h in goal.hypotheses
    )
    return Goal(hypotheses, fix(goal.conclusion), goal.name)


def lemma_parts(goal: Goal, hidden: frozenset[str]) -> tuple[tuple[Binder, ...], str]:
    """The binders of a goal without reserved names, the section variables (`hidden`) left out,
    and its conclusion; line breaks become spaces."""
    binders = []
    for h in goal.hypotheses:
        names = tuple(n for n in h.names if n not in hidden)
        if names and h.body is not None:
            body, type_ = let_parts(h.body, h.type)
            binders.append(Binder(names, _one_line(type_), _one_line(body)))
        elif names:
            binders.append(Binder(names, _one_line(h.type)))
    return tuple(binders), _one_line(goal.conclusion)


def let_parts(body: str, type_: str) -> tuple[str, str]:
    """A local definition's body and type, split at the last top-level ` : ` that does not type
    a binder: Rocq's display `x := body : type` has no other mark, and a body may hold colons
    of its own (`fix f (n : nat) {struct n} : nat := …`)."""
    text = f"{body} : {type_}"
    depth, colons = 0, []
    for i, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char == ":" and depth == 0 and text[i - 1 : i] == " " and text[i + 1 : i + 2] == " ":
            colons.append(i)
    for i in reversed(colons):
        words = text[:i].split()
        while words and re.fullmatch(r"[\w']+", words[-1]) and words[-1] not in _BINDERS:
            words.pop()
        if not words or words[-1] not in _BINDERS:
            return text[:i].rstrip(), text[i + 1 :].strip()
    return body, type_


def _one_line(text: str) -> str:
    return re.sub(r"\s*\n\s*", " ", text)
