"""One coqidetop process: its pipes, the incremental XML reader, interrupts and kills.

The session (`session.py`) decides what to send; this module only moves calls and answers.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from typing import IO

from app.rocq.documents import PlainDocuments
from app.rocq.protocol import STREAM_PROLOGUE, Err, Feedback, Ok, Protocol

_POLL_SLICE = 3600.0
"""Seconds one `poll` waits at most before the deadline is checked again."""


class TimedOut(Exception):
    """No answer before the deadline."""


class ProcessDied(Exception):
    """The process closed its output (it died, or its pipe broke)."""


class _Reader:
    """Incremental parse of coqidetop's output into top-level elements (`value`, `feedback`);
    printed documents are made plain text before the XML parser sees them."""

    def __init__(self) -> None:
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._parser.feed(STREAM_PROLOGUE)
        self._depth = 0
        self._root: ET.Element | None = None
        self._documents = PlainDocuments()

    def feed(self, data: bytes) -> None:
        """Parse more output."""
        self._parser.feed(self._documents.feed(data))

    def elements(self) -> Iterator[ET.Element]:
        """Complete top-level elements parsed so far; the rest stays queued for the next call."""
        for event, element in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._root is None:
                    self._root = element
                continue
            self._depth -= 1
            if self._depth == 1:
                self._root.clear()  # type: ignore[union-attr]  # parsed answers are not kept
                yield element


class Coqidetop:
    """One coqidetop process: send a call, read feedback until its value, interrupt, kill."""

    def __init__(self, binary: str, args: Sequence[str], protocol: Protocol) -> None:
        self.protocol = protocol
        self._stderr: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in kill)
        self._process = subprocess.Popen(
            [binary, *protocol.launch_args, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            bufsize=0,
            start_new_session=True,
        )
        self._fd = self._process.stdout.fileno()  # type: ignore[union-attr]
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        self._reader = _Reader()
        self.pending = 0
        """Calls sent and not answered yet."""

    @property
    def pid(self) -> int:
        """The process id (tests kill it to simulate a crash)."""
        return self._process.pid

    def call(self, command: str, payload: bytes, timeout: float) -> Ok | Err:
        """Send one call and wait for its value, collecting message feedback on the way."""
        self.send(payload, 1)
        return self.answer(command, time.monotonic() + timeout)

    def send(self, payload: bytes, calls: int) -> None:
        """Write `calls` calls at once; coqidetop answers them in order."""
        try:
            self._process.stdin.write(payload)  # type: ignore[union-attr]
        except (BrokenPipeError, OSError) as error:
            raise ProcessDied(str(error)) from error
        self.pending += calls

    def answer(self, command: str, deadline: float) -> Ok | Err:
        """Read until the next value, or raise `TimedOut` at the deadline."""
        messages: list[Feedback] = []
        while True:
            for element in self._reader.elements():
                if element.tag == "value":
                    self.pending -= 1
                    return self.protocol.response(command, element, tuple(messages))
                if element.tag == "feedback" and (fb := self.protocol.feedback(element)):
                    messages.append(fb)
            self._reader.feed(self._read(deadline))

    def _read(self, deadline: float) -> bytes:
        """The next chunk of output, waiting at most until the deadline (in slices: `poll`
        takes at most about 24 days, and a long text may be given far more)."""
        while not self._poll.poll(max(0.0, min(_POLL_SLICE, deadline - time.monotonic())) * 1000):
            if time.monotonic() >= deadline:
                raise TimedOut
        data = os.read(self._fd, 1 << 16)
        if not data:
            raise ProcessDied(self.stderr_tail())
        return data

    def interrupt(self) -> None:
        """Ask the running command to stop (SIGINT, as CoqIDE does)."""
        if self._process.poll() is None:
            self._process.send_signal(signal.SIGINT)

    def stderr_tail(self) -> str:
        """The end of what coqidetop wrote on stderr, to explain a crash."""
        self._stderr.seek(0, os.SEEK_END)
        size = self._stderr.tell()
        self._stderr.seek(max(0, size - 2000))
        return self._stderr.read().decode("utf-8", "replace").strip()

    def kill(self) -> None:
        """Stop the process now and release its pipes."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        self._close_pipes()

    def quit(self, protocol_call: bytes, timeout: float) -> None:
        """Ask the process to exit, killing it if it does not."""
        try:
            self.call("Quit", protocol_call, timeout)
            self._process.wait(timeout)
        except (TimedOut, ProcessDied, subprocess.TimeoutExpired):
            pass
        self.kill()

    def _close_pipes(self) -> None:
        for pipe in (self._process.stdin, self._process.stdout, self._stderr):
            if pipe is not None:
                pipe.close()
