"""The coqidetop behind a session: protocol calls under a timeout, and what a timeout or a
crash does to the process (`RocqSession` decides what the restarted process must hold again).

A timeout interrupts the command (SIGINT: the pending call fails with "User interrupt.") and
backtracks to the session's tip; a command that does not stop, or a process that died, is
replaced by a fresh one (`_restart`).
"""

from __future__ import annotations

import time

from app.rocq.goals import Message
from app.rocq.positions import SourceText
from app.rocq.process import Coqidetop, ProcessDied, TimedOut
from app.rocq.protocol import Err, Ok, Protocol
from app.rocq.state import RocqCrashed, RocqError, RocqTimeout
from app.rocq.toolchain import Toolchain
from app.rocq.toolchain import current as current_toolchain

DEFAULT_TIMEOUT = 40.0
INTERRUPT_GRACE = 5.0
"""How long an interrupted command may take to stop before the process is killed."""


class Calls:
    """Calls to one coqidetop, each under `timeout`; a subclass knows the live tip to go back
    to after an interrupt and how to restart the process with what it held."""

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        toolchain: Toolchain | None = None,
        interrupt_grace: float = INTERRUPT_GRACE,
    ) -> None:
        self.timeout = timeout
        self.interrupt_grace = interrupt_grace
        self.toolchain = toolchain or current_toolchain()
        self._process: Coqidetop | None = None
        self._restarting = False
        """A restart is under way: a failure now kills the process instead of recovering."""

    @property
    def _tip(self) -> int:
        """The state id at the end of the live branch."""
        raise NotImplementedError

    def _restart(self, keep_prefix: bool) -> None:
        """A fresh coqidetop, holding again what the session had executed if `keep_prefix`."""
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        """The process id of the running coqidetop, if any."""
        return self._process.pid if self._process else None

    def close(self) -> None:
        """Quit coqidetop."""
        if self._process is not None:
            self._process.quit(self._protocol.quit(), min(self.timeout, 5.0))
            self._process = None

    @property
    def _protocol(self) -> Protocol:
        return self.toolchain.protocol

    def _edit_at(self, sid: int) -> None:
        """Backtrack the live branch to `sid`."""
        self._checked(self._call("Edit_at", self._protocol.edit_at(sid)))

    def _call(self, command: str, payload: bytes) -> Ok | Err:
        """One protocol call under the timeout."""
        return self._calls((command, payload))[0]

    def _calls(self, *calls: tuple[str, bytes]) -> list[Ok | Err]:
        """Protocol calls sent in one write, answered in order, under one timeout.

        One write per sentence (Add with the Goal or Status that executes it) saves a round
        trip; a timeout or a crash recovers the session, then raises.
        """
        process = self._process
        if process is None:
            raise RuntimeError("no file opened: call start() first")
        names = "+".join(command for command, _ in calls)
        try:
            process.send(b"".join(payload for _, payload in calls), len(calls))
            deadline = time.monotonic() + self.timeout
            return [process.answer(command, deadline) for command, _ in calls]
        except TimedOut:
            self._after_timeout(process)
            raise RocqTimeout(f"{names} took more than {self.timeout:g} s") from None
        except ProcessDied as error:
            self._after_crash(process)
            raise RocqCrashed(f"coqidetop died during {names}: {error}") from None
        except Exception:
            # Any other failure leaves answers unread: a fresh process keeps calls and answers
            # paired (an answer read for the wrong call cannot be decoded).
            self._after_crash(process)
            raise

    def _after_timeout(self, process: Coqidetop) -> None:
        """Interrupt the command and backtrack to the tip; restart if it does not stop."""
        if self._restarting:
            process.kill()
            return
        process.interrupt()
        try:
            deadline = time.monotonic() + self.interrupt_grace
            while process.pending:
                process.answer("Edit_at", deadline)  # answers are dropped: any normaliser fits
            edit = self._protocol.edit_at(self._tip)
            back = process.call("Edit_at", edit, self.interrupt_grace)
        except (TimedOut, ProcessDied):
            back = None
        if not isinstance(back, Ok):
            self._restart(keep_prefix=True)

    def _after_crash(self, process: Coqidetop) -> None:
        """Restart a dead process, unless it died while being restarted."""
        if self._restarting:
            process.kill()
        else:
            self._restart(keep_prefix=True)

    def _checked(self, answer: Ok | Err, source: SourceText | None = None) -> Ok:
        """The answer if it succeeded, else the `RocqError` it carries."""
        if isinstance(answer, Err):
            raise self._error(answer, source)
        return answer

    @staticmethod
    def _error(
        answer: Err, source: SourceText | None, printed: tuple[Message, ...] = ()
    ) -> RocqError:
        """A `RocqError` located in `source` (bytes and characters)."""
        location = source.location(answer.span) if source else None
        return RocqError(answer.message, location, printed)
