"""The one worker loop every stage shares.

Claim ready rows (a short transaction), run the stage function on each outside any
transaction while a keeper thread renews the lease, then store the result and mark the row
done in one transaction. A failure marks the row failed with its reason; a lost database
connection is retried with backoff (the rows stay leased, or their lease expires and another
worker takes them). Killing a worker at any instant loses nothing: its rows' leases expire.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa

from app.db import queue
from app.db.engine import session_factory
from app.errors import LeaseLost
from app.stages import StageSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_POLL_SECONDS = 0.5
RECONNECT_GIVE_UP_SECONDS = 120.0
MAX_ERROR_CHARS = 4000


@dataclass
class WorkerStats:
    """What one worker did, for logs and the step commands' summaries."""

    done: int = 0
    failed: int = 0
    lost: int = 0


def worker_name() -> str:
    """A name unique to this thread of this process on this machine, stored on claimed rows."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def is_dead_local_worker(name: str) -> bool:
    """True for a worker of this machine whose process is gone (killed, crashed)."""
    host, _, rest = name.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseKeeper:
    """Renews the lease of the rows a worker holds while the stage function runs."""

    def __init__(self, spec: StageSpec, worker: str) -> None:
        self.spec, self.worker = spec, worker
        self.held: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name=f"lease-{worker}")

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.spec.lease_seconds / 3):
            held = list(self.held)
            if not held:
                continue
            try:
                with session_factory().begin() as session:
                    queue.renew(session, self.spec, self.worker, held)
            except sa.exc.OperationalError as error:
                log.warning("lease renewal failed: %s", error.orig, extra={"worker": self.worker})


def with_reconnect(action: Callable[[], T], what: str) -> T:
    """Run a database action, retrying with backoff while the database is unreachable."""
    delay, waited = 0.2, 0.0
    while True:
        try:
            return action()
        except sa.exc.OperationalError as error:
            if waited >= RECONNECT_GIVE_UP_SECONDS:
                raise
            log.warning("%s: database unavailable (%s); retrying", what, error.orig)
            time.sleep(delay)
            waited += delay
            delay = min(delay * 2, 5.0)


class Worker:
    """Runs one stage until no row is ready (or forever, polling)."""

    def __init__(self, spec: StageSpec, *, forever: bool = False) -> None:
        self.spec = spec
        self.forever = forever
        self.name = worker_name()
        self.stats = WorkerStats()
        self._stopping = threading.Event()

    def stop(self) -> None:
        """Finish the current row, then return."""
        self._stopping.set()

    def run(self) -> WorkerStats:
        """The loop: claim a batch, process each row, until nothing is ready."""
        resources = self.spec.resources() if self.spec.resources else contextlib.nullcontext()
        with LeaseKeeper(self.spec, self.name) as keeper, resources as resource:
            while not self._stopping.is_set():
                ids = with_reconnect(self._claim, "claim")
                if not ids:
                    if not self.forever and not with_reconnect(self._others_running, "poll"):
                        break
                    self._stopping.wait(IDLE_POLL_SECONDS)
                    continue
                keeper.held = [row_id for row_id, _ in ids]
                for row_id, item in ids:
                    self._process(row_id, item, resource)
                    keeper.held.remove(row_id)
        return self.stats

    def _claim(self) -> list[tuple[int, Any]]:
        """Claim a batch and read each row's input, in one transaction."""
        with session_factory().begin() as session:
            ids = queue.claim(session, self.spec, self.name, self.spec.batch_size)
            return [(row_id, self.spec.load(session, row_id)) for row_id in ids]

    def _others_running(self) -> bool:
        """Whether other workers still hold rows of this stage (they may yet fail and retry).

        Rows held by dead workers of this machine are released at once instead of waiting
        for their leases to expire, so a killed run restarts without delay.
        """
        with session_factory().begin() as session:
            queue.expire(session, self.spec)
            holders = queue.running_workers(session, self.spec)
            dead = [name for name in holders if is_dead_local_worker(name)]
            if dead:
                queue.release(session, self.spec, dead)
            return bool(holders)

    def _process(self, row_id: int, item: Any, resource: Any) -> None:
        extra = {"stage": self.spec.stage.value, "row": row_id, "worker": self.name}
        try:
            result = self.spec.call(item, resource)
        except Exception as error:  # the stage's own failure: record it, carry on
            log.warning("failed: %s", error, extra=extra)
            self._settle(row_id, error=describe(error))
            return
        self._settle(row_id, result=result)

    def _settle(self, row_id: int, *, result: object = None, error: str | None = None) -> None:
        def write() -> None:
            with session_factory().begin() as session:
                if error is None:
                    queue.finish(session, self.spec, self.name, row_id)
                    self.spec.store(session, row_id, result)
                else:
                    queue.fail(session, self.spec, self.name, row_id, error)

        try:
            with_reconnect(write, "finish")
        except LeaseLost as lost:
            log.warning("%s", lost, extra={"stage": self.spec.stage.value, "row": row_id})
            self.stats.lost += 1
            return
        except Exception as store_error:  # storing failed (bad result): record that instead
            if error is not None:
                raise
            self._settle(row_id, error=f"storing the result failed: {describe(store_error)}")
            return
        if error is None:
            self.stats.done += 1
        else:
            self.stats.failed += 1


def describe(error: BaseException) -> str:
    """A one-line reason for the `error` column, with where it was raised."""
    frames = traceback.extract_tb(error.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    # A database error's text repeats the whole statement and its parameters: keep the cause.
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig else error
    message = str(cause).strip() or type(error).__name__
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + " [...]"
    return f"{type(error).__name__}: {message}{where}"


def run_workers(
    specs: Sequence[StageSpec], *, concurrency: int = 1, forever: bool = False
) -> WorkerStats:
    """Run `concurrency` worker threads per stage until none has work left (or forever)."""
    workers = [Worker(spec, forever=forever) for spec in specs for _ in range(concurrency)]
    threads = [threading.Thread(target=w.run, name=w.name, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
    except KeyboardInterrupt:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join()
    total = WorkerStats()
    for worker in workers:
        total.done += worker.stats.done
        total.failed += worker.stats.failed
        total.lost += worker.stats.lost
    return total
