"""What a Rocq session hands out: states (plain values a session can return to), the load
paths it is opened with, and the errors its calls raise."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.rocq.goals import Goals, Location, Message

# --- Errors ----------------------------------------------------------------------------------


class RocqSessionError(Exception):
    """Anything that makes a session call fail; the session stays usable afterwards."""


class RocqError(RocqSessionError):
    """Rocq rejected the text: its message, where in the text that was run, and what the text
    printed before (a query's earlier commands ran: Rocq stops at the first it refuses)."""

    def __init__(
        self, message: str, location: Location | None = None, printed: tuple[Message, ...] = ()
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.printed = printed


class RocqTimeout(RocqSessionError):
    """A call ran past its timeout; the command was interrupted or the process restarted."""


class RocqCrashed(RocqSessionError):
    """coqidetop died (or its pipe closed) during a call; it has been restarted."""


# --- Public values ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPath:
    """A `-R dir prefix` (recursive) or `-Q dir prefix` mapping of a physical directory."""

    directory: str
    prefix: str
    recursive: bool = True

    @property
    def args(self) -> tuple[str, ...]:
        """The coqidetop arguments for this mapping."""
        return ("-R" if self.recursive else "-Q", self.directory, self.prefix)


@dataclass(frozen=True)
class State:
    """A point in a file's script: the file up to byte `offset`, then `steps` run on top.

    States are plain values, equal when they denote the same script; a session can return to
    any of them, even after its process was restarted.
    """

    file: str
    offset: int
    """Byte offset of the end of the last file sentence executed (0: none)."""
    steps: tuple[str, ...] = ()
    """The texts given to `run`, in order."""
    messages: tuple[Message, ...] = field(default=(), compare=False)
    """Rocq's feedback for the last step."""
    goals: Goals | None = field(default=None, compare=False, repr=False)
    """The goals, when the state was made by a session (executing it fetches them)."""
    conclusions_only: bool = field(default=False, compare=False)
    """Whether `goals` holds each goal's conclusion only, without its hypotheses."""

    @property
    def proof_finished(self) -> bool:
        """Whether a proof is open with nothing left to prove."""
        return self.goals is not None and self.goals.in_proof and self.goals.finished
