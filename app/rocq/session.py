"""A long-lived coqidetop behind a small pytanque-shaped API: states, run, goals, queries.

A `State` is a value: a file prefix (everything up to a sentence end) plus the texts run on top
of it. The session keeps one coqidetop per file and one live branch of Rocq state ids; any state
is reached from that branch by backtracking (`Edit_at`) and replaying only what is missing, so
going from one theorem of a file to the next executes only the sentences in between. With
`skip_proofs`, whole opaque proofs on the way run as `Admitted.` (`app.rocq.script_file`).

Facts about coqidetop 8.16 this relies on (see also `protocol.py`):
- `Add` parses only the *first* sentence of its text and silently drops the rest, so texts are
  split here (`split_sentences`) and added one sentence at a time.
- `Add` only queues proof sentences; errors surface at the next `Goal`/`Status` as a failure
  carrying the last good state id, and stay until an `Edit_at` before the failing sentence.
- Error offsets are bytes, shifted by the offset given with `Add`.
- SIGINT interrupts a running command: the pending call fails with "User interrupt.".
"""

from __future__ import annotations

import enum
import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

from app.rocq.calls import DEFAULT_TIMEOUT, INTERRUPT_GRACE, Calls
from app.rocq.goals import Goal, Goals, Message
from app.rocq.positions import Position, SourceText
from app.rocq.process import Coqidetop
from app.rocq.protocol import Err, Feedback
from app.rocq.script_file import ScriptFile
from app.rocq.sentences import split_sentences
from app.rocq.state import (
    LoadPath,
    RocqError,
    State,
)
from app.rocq.toolchain import Toolchain


@functools.lru_cache(maxsize=256)
def _resolve(file: str | os.PathLike[str]) -> str:
    """The absolute path of a file (cached: `at` is called once per sentence in replays)."""
    return str(Path(file).resolve())


class _Fetch(enum.Enum):
    """What the call that executes a text fetches after it."""

    NOTHING = enum.auto()
    """`Status`: executes only."""
    GOALS = enum.auto()
    """`Goal`: every goal, whole."""
    FOCUSED = enum.auto()
    """`Subgoals`: the focused goals, whole."""
    CONCLUSIONS = enum.auto()
    """`Subgoals` in short mode: every goal, its conclusion only."""


# --- Session ---------------------------------------------------------------------------------


class RocqSession(Calls):
    """One coqidetop driven over XML, shaped like pytanque: `start`, `at`, `run`, `goals`.

    Every call has a timeout; a timeout interrupts the command (or restarts the process) and a
    crash restarts it, restoring the loaded file prefix, then raises so the caller can record
    the failure and carry on.
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        toolchain: Toolchain | None = None,
        interrupt_grace: float = INTERRUPT_GRACE,
        skip_proofs: bool = False,
    ) -> None:
        super().__init__(timeout, toolchain, interrupt_grace)
        self.skip_proofs = skip_proofs
        """Whether going past a whole opaque proof of the file may run `Admitted.` instead."""
        self._load_paths: tuple[LoadPath, ...] = ()
        self._extra_args: tuple[str, ...] = ()
        self._file: ScriptFile | None = None
        self._init_sid = 0
        self._prefix: list[int] = []
        """State id after each executed file sentence (a skipped proof's `Admitted.` for each
        of its sentences)."""
        self._admitted: dict[int, int] = {}
        """The skipped proofs in the executed prefix: first sentence → `Qed.` sentence."""
        self._skip_failed = False
        """A file sentence failed after proofs were skipped: the file is walked in full."""
        self._steps: list[tuple[str, int]] = []
        """Texts run on top of the prefix that are live in Rocq, with their last state id."""
        self._route = 0

    # Public API ----------------------------------------------------------------------------

    @property
    def skipped_proofs(self) -> Mapping[int, int]:
        """The proofs of the executed prefix that ran as `Admitted.`: their first sentence's
        index → their `Qed.` sentence's index."""
        return MappingProxyType(self._admitted)

    @property
    def walks_in_full(self) -> bool:
        """A file sentence failed after proofs were skipped: this file is walked in full."""
        return self._skip_failed

    def start(
        self,
        file: str | os.PathLike[str],
        load_paths: Sequence[LoadPath | tuple[str, str]] = (),
        extra_args: Sequence[str] = (),
    ) -> State:
        """Open a file with its load paths (`(dir, prefix)` pairs mean `-R`): its start state.

        Names get the file's full logical path (`-topfile`), as when the library is compiled.
        The process and its executed prefix are kept when the file and arguments are unchanged.
        """
        paths = tuple(p if isinstance(p, LoadPath) else LoadPath(*p) for p in load_paths)
        path = _resolve(file)
        current = self._file
        unchanged = (
            self._process is not None
            and current is not None
            and current.path == path
            and current.source.text == Path(path).read_text(encoding="utf-8")
            and (paths, tuple(extra_args)) == (self._load_paths, self._extra_args)
        )
        if not unchanged:
            loaded = ScriptFile.read(path)
            self._load_paths, self._extra_args, self._file = paths, tuple(extra_args), loaded
            self._skip_failed = False
            self._restart(keep_prefix=False)
        return State(path, 0)

    def at(self, file: str | os.PathLike[str], position: Position) -> State:
        """The state after every sentence of `file` that ends at or before `position`."""
        loaded = self._open(file)
        byte = loaded.source.char_to_byte(loaded.source.offset(position))
        return self._prefix_state(loaded.count_before(byte))

    def theorem_start(self, name: str, file: str | os.PathLike[str] | None = None) -> State:
        """The state just after the statement of theorem `name`, its proof not yet begun.

        `name` is short (`edivnP`) or qualified (`mathcomp.ssreflect.div.edivnP`); the file
        is the current one unless given.
        """
        loaded = self._open(file if file is not None else self._current_file().path)
        state = self._prefix_state(loaded.statement(name) + 1)
        status = self._checked(self._call(*self._fetch_call(_Fetch.NOTHING))).value
        if status.proof_name != name.split(".")[-1]:
            raise LookupError(f"{name} does not open a proof (open: {status.proof_name})")
        return state

    def run(self, state: State, text: str, conclusions_only: bool = False) -> State:
        """Run a text (one or more sentences) at a state: the new state, with its messages and
        goals (each goal's conclusion only if `conclusions_only`: a large context costs Rocq
        more to print than most tactics cost to run; `goals` fetches them whole later).

        Raises `RocqError` (message, location in `text`) if Rocq rejects it; `state` stays valid.
        """
        fetch = _Fetch.CONCLUSIONS if conclusions_only else _Fetch.GOALS
        ran = self._run_on(state, text, fetch)
        if ran is None:
            return state
        goals, messages = ran
        steps = (*state.steps, text)
        return State(state.file, state.offset, steps, messages, goals, conclusions_only)

    def attempt(self, state: State, text: str) -> tuple[Message, ...]:
        """Run a text at a state for its outcome only: its messages, or `RocqError` if Rocq
        rejects it. No goals are fetched (printing a large context costs Rocq and this process
        more than a check itself), and no state is made: `state` stays the one to go on from."""
        ran = self._run_on(state, text, _Fetch.NOTHING)
        return () if ran is None else ran[1]

    def focused_goal(self, state: State, text: str, index: int) -> tuple[State, Goal]:
        """Run `text` at `state` and fetch only the `index`th goal it focuses: the state after
        `text` (its goals not fetched) and that goal. A goal with a large context is printed
        once, not once more for each goal beside it (focused or not)."""
        ran = self._run_on(state, text, _Fetch.NOTHING)
        after = state if ran is None else State(state.file, state.offset, (*state.steps, text))
        focus = self._run_on(after, f"{index + 1}: {{", _Fetch.FOCUSED)
        assert focus is not None and focus[0] is not None
        return after, focus[0].foreground[0]

    def goals(self, state: State) -> Goals:
        """The goals of a state, whole: fetched when the state was made, else by going to it."""
        if state.goals is not None and not state.conclusions_only:
            return state.goals
        self._goto(state)
        return self._checked(self._call(*self._fetch_call(_Fetch.GOALS))).value

    def query(self, state: State, text: str) -> str:
        """Run a query command (Locate, Check, About, Print, Search…) at a state: its output."""
        return "\n".join(m.text for m in self.queries(state, [text])).strip()

    def queries(self, state: State, commands: Sequence[str]) -> tuple[Message, ...]:
        """Run query commands at a state in one call (Rocq runs each sentence of a query): the
        messages they print, in order. Raises `RocqError` at the first that fails, with the
        messages of those before it."""
        self._goto(state)
        self._route += 1
        route = self._route
        source = SourceText(" ".join(commands))
        answer = self._call("Query", self._protocol.query(source.text, self._tip, route))
        printed = tuple(_message(m, source) for m in answer.messages if m.route == route)
        if isinstance(answer, Err):
            raise self._error(answer, source, printed)
        return printed

    def __enter__(self) -> RocqSession:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # Moving between states -----------------------------------------------------------------

    @property
    def _prefix_tip(self) -> int:
        """The state id after the executed file prefix."""
        return self._prefix[-1] if self._prefix else self._init_sid

    @property
    def _tip(self) -> int:
        """The state id at the end of the live branch."""
        return self._steps[-1][1] if self._steps else self._prefix_tip

    def _current_file(self) -> ScriptFile:
        if self._file is None:
            raise RuntimeError("no file opened: call start() first")
        return self._file

    def _open(self, file: str | os.PathLike[str]) -> ScriptFile:
        """The loaded file, starting it (with the current load paths) if it is another one."""
        if self._process is None or self._current_file().path != _resolve(file):
            self.start(file, self._load_paths, self._extra_args)
        return self._current_file()

    def _goto(self, state: State) -> None:
        """Make `state` the tip: backtrack to the longest live common part, replay the rest."""
        loaded = self._open(state.file)
        count = loaded.count_before(state.offset)
        if count != len(self._prefix):
            self._move_prefix(count)
        common = 0
        for (live, _sid), text in zip(self._steps, state.steps, strict=False):
            if live != text:
                break
            common += 1
        if common < len(self._steps):
            self._edit_at(self._steps[common - 1][1] if common else self._prefix_tip)
            del self._steps[common:]
        for text in state.steps[common:]:
            sid, _goals, _messages = self._add_and_force(SourceText(text), _Fetch.NOTHING)
            self._steps.append((text, sid))

    def _run_on(
        self, state: State, text: str, fetch: _Fetch
    ) -> tuple[Goals | None, tuple[Message, ...]] | None:
        """Go to `state` and run `text` on top of it as a live step: the goals `fetch` says (None
        for none) and its messages; None when the text holds no sentence."""
        self._goto(state)
        source = SourceText(text)
        if not split_sentences(source.data):
            return None
        sid, goals, messages = self._add_and_force(source, fetch)
        self._steps.append((text, sid))
        return goals, messages

    def _prefix_state(self, count: int) -> State:
        """Execute exactly the first `count` file sentences and return that state."""
        loaded = self._current_file()
        goals = self._move_prefix(count, fetch_goals=True)
        if goals is None:
            goals = self._checked(self._call(*self._fetch_call(_Fetch.GOALS))).value
        offset = loaded.ends[count - 1] if count else 0
        return State(loaded.path, offset, goals=goals)

    def _move_prefix(self, count: int, fetch_goals: bool = False) -> Goals | None:
        """Backtrack or extend the executed file prefix to its first `count` sentences; the
        goals after the last one if `fetch_goals` (None if it was not executed here)."""
        if self._steps or count < len(self._prefix):
            self._cut_prefix(count)
        try:
            return self._extend_prefix(count, fetch_goals)
        except RocqError:
            if not self._admitted:
                raise
            # A skipped proof mattered after all (a name it made, a universe): walk in full.
            self._skip_failed = True
            self._cut_prefix(min(self._admitted))
            return self._extend_prefix(count, fetch_goals)

    def _cut_prefix(self, count: int) -> None:
        """Backtrack the prefix to its first `count` sentences (to a skipped proof's start if
        `count` falls inside it: its sentences have no state of their own)."""
        for first, qed in self._admitted.items():
            if first < count <= qed:
                count = first
        del self._prefix[count:]
        self._admitted = {f: q for f, q in self._admitted.items() if f < count}
        self._steps.clear()
        self._edit_at(self._prefix_tip)

    def _extend_prefix(self, count: int, fetch_goals: bool) -> Goals | None:
        """Execute the file's sentences up to the first `count`; opaque proofs wholly before
        them run as `Admitted.` when the session skips proofs."""
        loaded, goals = self._current_file(), None
        if self._skipping and (left := loaded.unfinished(len(self._prefix), count)):
            self._cut_prefix(left.first)
        while len(self._prefix) < count:
            index = len(self._prefix)
            proof = loaded.skippable(index, count) if self._skipping else None
            if proof is None:
                text, offset = loaded.chunk(index)
                last = fetch_goals and index + 1 == count
                sid, goals = self._execute(text, self._prefix_tip, offset, last, loaded.source)
                self._prefix.append(sid)
                continue
            sid = self._prefix_tip
            for text in proof.replacement:
                sid, goals = self._execute(
                    f" {text}", sid, 0, fetch_goals and proof.qed + 1 == count
                )
            self._prefix += [sid] * (proof.qed - index + 1)
            self._admitted[proof.first] = proof.qed
        return goals

    def _execute(
        self, text: str, base: int, offset: int, fetch_goals: bool, source: SourceText | None = None
    ) -> tuple[int, Goals | None]:
        """Add one sentence after state `base` and execute it (with a Status, or a Goal that
        fetches the goals): its state id, and the goals if fetched. One write per sentence, so
        a slow file never makes one long call and an error is charged to its sentence."""
        add = ("Add", self._protocol.add(text, base, offset))
        fetch = _Fetch.GOALS if fetch_goals else _Fetch.NOTHING
        added, forced = self._calls(add, self._fetch_call(fetch))
        failed = added if isinstance(added, Err) else forced
        if isinstance(failed, Err):
            self._edit_at(self._prefix_tip)
            raise self._error(failed, source)
        return added.value.tip, forced.value if fetch_goals else None

    @property
    def _skipping(self) -> bool:
        return self.skip_proofs and not self._skip_failed

    def _add_and_force(
        self, source: SourceText, fetch: _Fetch
    ) -> tuple[int, Goals | None, tuple[Message, ...]]:
        """Add every sentence of a text at the tip, then execute them and fetch what `fetch`
        says (the goals, or nothing).

        On failure, backtrack to the tip and raise `RocqError` located in the text.
        """
        force = self._fetch_call(fetch)
        base, sids, feedback = self._tip, [], []
        chunks = list(source.chunks(split_sentences(source.data)))
        for index, (text, offset) in enumerate(chunks, 1):
            add = ("Add", self._protocol.add(text, sids[-1] if sids else base, offset))
            # The last Add goes with the Goal (or Status) that executes everything (its answer
            # is ignored if the Add fails to parse).
            answers = self._calls(add, force) if index == len(chunks) else self._calls(add)
            if isinstance(answers[0], Err):
                self._edit_at(base)
                raise self._error(answers[0], source)
            sids.append(answers[0].value.tip)
            feedback += answers[0].messages
        answer = answers[-1]
        if isinstance(answer, Err):
            self._edit_at(base)
            raise self._error(answer, source)
        wanted = set(sids)
        messages = tuple(
            _message(m, source)
            for m in (*feedback, *answer.messages)
            if m.state_id in wanted and m.route == 0
        )
        return sids[-1], None if fetch is _Fetch.NOTHING else answer.value, messages

    def _fetch_call(self, fetch: _Fetch) -> tuple[str, bytes]:
        """The call that executes what is pending, then fetches what `fetch` says: `Status`
        is the cheapest that only executes."""
        if fetch is _Fetch.NOTHING:
            return "Status", self._protocol.status()
        if fetch is _Fetch.GOALS:
            return "Goal", self._protocol.goal()
        return "Subgoals", self._protocol.subgoals(focused_only=fetch is _Fetch.FOCUSED)

    # Recovery ------------------------------------------------------------------------------

    def _restart(self, keep_prefix: bool) -> None:
        """A fresh coqidetop for the current file; re-executes the prefix if asked to."""
        count = len(self._prefix) if keep_prefix else 0
        if self._process is not None:
            self._process.kill()
        loaded = self._current_file()
        args = [a for p in self._load_paths for a in p.args]
        args += [*self._extra_args, "-topfile", loaded.path]
        self._process = Coqidetop(self.toolchain.idetop, args, self._protocol)
        self._prefix, self._steps, self._admitted = [], [], {}
        self._restarting = True
        try:
            self._init_sid = self._checked(self._call("Init", self._protocol.init())).value
            self._move_prefix(count)
        finally:
            self._restarting = False


def _message(feedback: Feedback, source: SourceText) -> Message:
    """A public message from a feedback, located in the text that was run."""
    return Message(feedback.level, feedback.text.strip(), source.location(feedback.span))
