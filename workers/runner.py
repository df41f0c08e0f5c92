"""The one worker loop every stage shares.

Claim ready rows (a short transaction), run the stage function on each outside any
transaction while a keeper thread renews the lease, then store the result and mark the row
done in one transaction (the results of rows that finish within `SETTLE_SECONDS` of each other
together). A failure marks the row failed with its reason. Killing a worker at any instant
loses nothing: its rows' leases expire.

A lost database (the server died, restarts, or is unreachable) is waited for with backoff: the
process reports it once and says when it is back (an embedded server is started again by the
first connection that finds it dead). A worker that got through releases at once the rows held
in its name that it does not know of (claimed by a transaction whose answer never came back),
and runs again a row whose stage function failed only because the database went away. After
`ROCQCOT_DATABASE_WAIT` seconds without it, the workers stop with `DatabaseUnavailable`.
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
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa

from app import config
from app.db import queue
from app.db.engine import (
    connections_lost,
    durable,
    fast_commits,
    is_connection_error,
    session_factory,
)
from app.errors import DatabaseUnavailable, LeaseLost
from app.stages import StageSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

IDLE_POLL_SECONDS = 0.5
MAX_ERROR_CHARS = 4000
STAGE_DATABASE_RETRIES = 3
SETTLE_SECONDS = 1.0
"""Rows that finish quickly have their results written together, at most this long after the
first of them finished: one transaction for many cheap rows. A worker killed in between
loses that much work, which the rows' leases give back."""
"""How often a row's stage function runs again when the database went away under it."""


@dataclass
class WorkerStats:
    """What workers did, for logs and the step commands' summaries."""

    done: int = 0
    """Rows finished (a row finished again after a lost commit counts once)."""
    failed: int = 0
    """Rows whose last try failed (a row tried three times counts once)."""
    lost: int = 0
    done_ids: set[int] = field(default_factory=set, repr=False)
    failed_ids: set[int] = field(default_factory=set, repr=False)


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
            except sa.exc.SQLAlchemyError as error:  # an outage is reported by `with_reconnect`
                log.debug("lease renewal failed: %s", error, extra={"worker": self.worker})


class _Outage:
    """The database's absence as this process sees it: reported once when it starts and once
    when it ends, whatever the number of threads waiting (one status line, not one per retry)."""

    def __init__(self) -> None:
        self._since: float | None = None
        self._lock = threading.Lock()

    def failed(self, reason: str) -> float:
        """Note a failure; the seconds since the database was first found missing."""
        with self._lock:
            now = time.monotonic()
            if self._since is None:
                self._since = now
                log.warning(
                    "database unavailable (%s): waiting up to %g s for it",
                    reason,
                    config.database_wait_seconds(),
                )
            return now - self._since

    def recovered(self) -> None:
        with self._lock:
            if self._since is not None:
                log.warning("database back after %.1f s", time.monotonic() - self._since)
                self._since = None


_outage = _Outage()


def _reason(error: BaseException) -> str:
    cause = error.orig if isinstance(error, sa.exc.DBAPIError) and error.orig else error
    return (str(cause).strip().splitlines() or [type(error).__name__])[0]


def with_reconnect(
    action: Callable[[], T], what: str, after_outage: Callable[[], None] | None = None
) -> T:
    """Run a database action, again with backoff while the database is unreachable; then
    `after_outage` if it was. `DatabaseUnavailable` once it stayed away too long."""
    delay, failed = 0.2, False
    while True:
        try:
            result = action()
        except Exception as error:
            if not is_connection_error(error):
                raise
            reason = _reason(error)
            if _outage.failed(reason) >= config.database_wait_seconds():
                raise DatabaseUnavailable(
                    f"the database stayed unreachable for {config.database_wait_seconds():g} s "
                    f"({what}: {reason})"
                ) from None
            time.sleep(delay)
            delay, failed = min(delay * 2, 5.0), True
            continue
        if failed:
            _outage.recovered()
            if after_outage is not None:
                after_outage()
        return result


@dataclass(frozen=True)
class _Finished:
    """A row whose stage function returned: its result, or why it failed; and when."""

    row_id: int
    result: Any
    error: str | None = None
    at: float = field(default_factory=time.monotonic)


class Worker:
    """Runs one stage until no row is ready (or forever, polling)."""

    def __init__(self, spec: StageSpec, *, forever: bool = False) -> None:
        self.spec = spec
        self.forever = forever
        self.name = worker_name()
        self.stats = WorkerStats()
        self.fatal: BaseException | None = None
        """What stopped this worker (the database stayed away, a bug), for `run_workers`."""
        self._stopping = threading.Event()
        self._keeper: LeaseKeeper | None = None

    def stop(self) -> None:
        """Finish the current row, then return."""
        self._stopping.set()

    def run(self) -> WorkerStats:
        """The loop: claim a batch, process each row, until nothing is ready. What stops it
        otherwise is kept in `fatal` (a thread's exception would only be printed)."""
        try:
            self._loop()
        except Exception as error:
            self.fatal = error
        return self.stats

    def _loop(self) -> None:
        resources = self.spec.resources() if self.spec.resources else contextlib.nullcontext()
        with LeaseKeeper(self.spec, self.name) as keeper, resources as resource:
            self._keeper = keeper
            seen_losses = connections_lost()
            while not self._stopping.is_set():
                if (losses := connections_lost()) != seen_losses:
                    seen_losses = losses  # a reconnection absorbed an outage unseen
                    self._db(self._release_orphans, "release")
                ids = self._db(self._claim, "claim")
                if not ids:
                    if not self.forever and not self._db(self._others_running, "poll"):
                        break
                    self._stopping.wait(IDLE_POLL_SECONDS)
                    continue
                keeper.held = [row_id for row_id, _ in ids]
                finished: list[_Finished] = []
                for row_id, item in ids:
                    finished.append(self._run(row_id, item, resource))
                    if finished[0].at + SETTLE_SECONDS <= time.monotonic():
                        self._settle_all(finished)
                self._settle_all(finished)

    def _db(self, action: Callable[[], T], what: str) -> T:
        """A database action through the outage, then the release of rows it left behind."""
        return with_reconnect(action, what, after_outage=self._release_orphans)

    def _release_orphans(self) -> None:
        """Release the rows held in this worker's name that it does not know it holds: a claim
        whose commit reached the server but whose answer was lost with the connection."""
        held = list(self._keeper.held) if self._keeper else []
        with session_factory().begin() as session:
            released = queue.release_orphans(session, self.spec, self.name, held)
        if released:
            log.warning("released %d rows claimed by a lost transaction", released)

    def _claim(self) -> list[tuple[int, Any]]:
        """Claim a batch and read each row's input, in one transaction."""
        with session_factory().begin() as session:
            fast_commits(session)
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

    def _run(self, row_id: int, item: Any, resource: Any) -> _Finished:
        """The stage function on one row: its result, or the reason it failed."""
        extra = {"stage": self.spec.stage.value, "row": row_id, "worker": self.name}
        for attempt in range(STAGE_DATABASE_RETRIES + 1):
            try:
                return _Finished(row_id, self.spec.call(item, resource))
            except Exception as error:  # the stage's own failure: record it, carry on
                if is_connection_error(error) and attempt < STAGE_DATABASE_RETRIES:
                    self._db(self._ping, "stage")  # the database went away: not the row's fault
                    continue
                log.warning("failed: %s", error, extra=extra)
                return _Finished(row_id, None, describe(error))
        raise AssertionError("unreachable: the last attempt returns")

    def _settle_all(self, finished: list[_Finished]) -> None:
        """Write the results of finished rows, together if possible, and let them go."""
        if not self._settled_together(finished):
            for row in finished:
                self._settle(row.row_id, result=row.result, error=row.error)
        self._release(finished)

    def _settled_together(self, finished: list[_Finished]) -> bool:
        """Write several results in one transaction; False if there is one, or if that failed
        (a lost lease or a result that cannot be stored concerns its row only: written again
        row by row, which reports it)."""
        if len(finished) < 2:
            return False

        def write() -> None:
            with session_factory().begin() as session:
                fast_commits(session)
                for row in finished:
                    self._write(session, row)

        try:
            self._db(write, "finish")
        except DatabaseUnavailable:
            raise
        except Exception:
            return False
        for row in finished:
            self._count(row)
        return True

    def _release(self, finished: list[_Finished]) -> None:
        """The rows are settled: the lease keeper lets them go."""
        if self._keeper is not None:
            for row in finished:
                self._keeper.held.remove(row.row_id)
        finished.clear()

    def _write(self, session: Any, row: _Finished) -> None:
        if row.error is None:
            queue.finish(session, self.spec, self.name, row.row_id)
            self.spec.store(session, row.row_id, row.result)
        else:
            queue.fail(session, self.spec, self.name, row.row_id, row.error)

    @staticmethod
    def _ping() -> None:
        with session_factory()() as session:
            session.execute(sa.text("SELECT 1"))

    def _settle(self, row_id: int, *, result: object = None, error: str | None = None) -> None:
        def write() -> None:
            with session_factory().begin() as session:
                fast_commits(session)
                self._write(session, _Finished(row_id, result, error))

        try:
            self._db(write, "finish")
        except LeaseLost as lost:
            log.warning("%s", lost, extra={"stage": self.spec.stage.value, "row": row_id})
            self.stats.lost += 1
            return
        except DatabaseUnavailable:
            raise
        except Exception as store_error:  # storing failed (bad result): record that instead
            if error is not None:
                raise
            self._settle(row_id, error=f"storing the result failed: {describe(store_error)}")
            return
        self._count(_Finished(row_id, result, error))

    def _count(self, row: _Finished) -> None:
        if row.error is None:
            self.stats.done_ids.add(row.row_id)
            self.stats.failed_ids.discard(row.row_id)
        else:
            self.stats.failed_ids.add(row.row_id)
        self.stats.done, self.stats.failed = len(self.stats.done_ids), len(self.stats.failed_ids)


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
    """Run `concurrency` worker threads per stage until none has work left (or forever), then
    make their work durable before the caller goes on. If the database restarted in between
    (the last results may be lost with it), the rows the workers held are released and the
    workers run again."""
    total = WorkerStats()
    while True:
        workers, losses = _run_threads(specs, concurrency, forever), connections_lost()
        for worker in workers:
            total.lost += worker.stats.lost
            total.done_ids |= worker.stats.done_ids
            total.failed_ids |= worker.stats.failed_ids
        with_reconnect(durable, "durable")
        if connections_lost() == losses:
            break
        names = [worker.name for worker in workers]
        with session_factory().begin() as session:
            for spec in specs:
                queue.release(session, spec, names)
    total.failed_ids -= total.done_ids  # failed in one worker, done later in another
    total.done, total.failed = len(total.done_ids), len(total.failed_ids)
    return total


def _run_threads(specs: Sequence[StageSpec], concurrency: int, forever: bool) -> list[Worker]:
    """Run the workers' threads to their end; raise what stopped one of them, if anything."""
    workers = [Worker(spec, forever=forever) for spec in specs for _ in range(concurrency)]
    threads = [threading.Thread(target=w.run, name=w.name, daemon=True) for w in workers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.5)
                if any(worker.fatal for worker in workers):  # one gave up: all stop
                    for worker in workers:
                        worker.stop()
    except KeyboardInterrupt:
        for worker in workers:
            worker.stop()
        for thread in threads:
            thread.join()
    if fatal := next((worker.fatal for worker in workers if worker.fatal), None):
        raise fatal
    return workers
