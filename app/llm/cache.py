"""The `llm_calls` table as the cache of every answer: looked up before a request is sent,
written (in the background, in batches) as soon as the answer arrives."""

from __future__ import annotations

import atexit
import functools
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import sqlalchemy as sa

from app.db import engine as db
from app.llm.answers import Answer

log = logging.getLogger(__name__)

T = TypeVar("T")


class CallCache:
    """The `llm_calls` table: answers by request hash, their tokens and what they cost.

    Every request of every worker thread looks here first and records its answer after, so
    both must cost the request little (measured with `bench/llm.py`). A lookup runs in the
    asking thread on one of a few autocommit connections kept by the cache (a connection per
    thread would start dozens of server processes at once; a lookup thread of the cache's own
    would add two thread switches to every request). A record does not hold up its request at all:
    a writer thread inserts whatever queued while its last insert ran, in one pipelined
    statement; lookups of this process find a record on its way in memory, and `flush` (and
    `close`, run at exit) waits for the last ones. A crash in those milliseconds costs what a
    crash during the request costs: the question is asked again. The connections stay open for
    the process's life, as the engine's pool does: every step of a run uses them.
    """

    GET = "SELECT response, cost_usd FROM llm_calls WHERE request_hash = %s"
    """A cached answer and its cost."""
    PUT = (
        "INSERT INTO llm_calls (request_hash, model, request, response, prompt_tokens,"
        " completion_tokens, cost_usd) VALUES (%s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (request_hash) DO NOTHING"
    )
    """Record an answer; a concurrent twin of the same request keeps the first."""
    SPENT = "SELECT coalesce(sum(cost_usd), 0) FROM llm_calls"
    """The cost of every recorded call (all steps, all machines sharing the database)."""

    def __init__(self, engine: sa.Engine, connections: int = 4) -> None:
        self._engine = engine
        self._idle: list[Any] = []
        self._permits = threading.BoundedSemaphore(connections)
        """At most this many lookup connections (each is a server process)."""
        self._writer = _RecordWriter(engine, self.PUT)
        self._pending: dict[str, tuple[dict[str, Any], float]] = {}
        """Answers on their way to the table, by request hash."""
        self._lock = threading.Lock()
        atexit.register(self.close)

    def get(self, key: str) -> tuple[dict[str, Any], float] | None:
        """The cached response and its cost, if this request was answered before."""
        with self._lock:
            if (pending := self._pending.get(key)) is not None:
                return pending
        row = self._query(self.GET, (key,))
        return (row[0], float(row[1])) if row else None

    def put(
        self,
        key: str,
        model: str,
        request: dict[str, Any],
        response: dict[str, Any],
        answer: Answer,
    ) -> None:
        """Record an answer with its tokens and cost, without waiting for the table."""
        from psycopg.types.json import Jsonb

        with self._lock:
            self._pending[key] = (response, answer.cost_usd)
        tokens = (answer.prompt_tokens, answer.completion_tokens, answer.cost_usd)
        done = self._writer.submit((key, model, Jsonb(request), Jsonb(response), *tokens))
        done.add_done_callback(functools.partial(self._recorded, key))

    def spent(self) -> float:
        """The cost of every recorded call, once the records queued so far are in."""
        self.flush()
        row = self._query(self.SPENT, ())
        return float(row[0]) if row else 0.0

    def flush(self) -> None:
        """Wait until the records queued so far are in the table (or failed)."""
        self._writer.submit(None).result()

    def close(self) -> None:
        """Wait for the queued records and close the connections (the cache can still be
        used: they open again when needed)."""
        self._writer.close()
        with self._lock:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _recorded(self, key: str, done: Future[None]) -> None:
        with self._lock:
            self._pending.pop(key, None)
        if (error := done.exception()) is not None:
            log.warning("llm answer %s not recorded (%s): it will be asked again", key, error)

    def _query(self, sql: str, params: tuple[Any, ...]) -> tuple[Any, ...] | None:
        """One statement's first row, on an idle connection or a new one."""
        with self._permits:
            with self._lock:
                idle = self._idle.pop() if self._idle else None
            row, connection = _on_live_connection(
                self._engine, idle, lambda c: c.execute(sql, params).fetchone()
            )
            with self._lock:
                self._idle.append(connection)
            return row


class _RecordWriter:
    """A thread that inserts the records submitted to it in batches, on an autocommit
    connection of its own: whatever queued while an insert ran is the next insert. A
    connection found dead (the server restarted) is replaced once per batch. Submitting None
    waits for the records queued before it."""

    def __init__(self, engine: sa.Engine, insert: str) -> None:
        self._engine = engine
        self._insert = insert
        self._jobs: queue.SimpleQueue[tuple[Any, Future[None]] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, row: tuple[Any, ...] | None) -> Future[None]:
        """Queue a record; its future is done once the record is in, or failed."""
        done: Future[None] = Future()
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="llm-records", daemon=True)
                self._thread.start()
            self._jobs.put((row, done))
        return done

    def close(self) -> None:
        """Insert what is queued, then stop the thread and close its connection."""
        with self._lock:  # no new thread serves the queue before this one is done
            if self._thread is not None:
                self._jobs.put(None)
                self._thread.join()
                self._thread = None

    def _serve(self) -> None:
        connection = None
        stopping = False
        try:
            while not stopping:
                batch = [self._jobs.get()]
                while not self._jobs.empty():
                    batch.append(self._jobs.get())
                stopping = None in batch
                if jobs := [job for job in batch if job is not None]:
                    connection = self._write(connection, jobs)
        finally:
            if connection is not None:
                connection.close()

    def _write(self, connection: Any, jobs: list[tuple[Any, Future[None]]]) -> Any:
        """Insert a batch and tell each job how it went; returns the connection to keep."""
        rows = [row for row, _ in jobs if row is not None]
        try:
            _, connection = _on_live_connection(
                self._engine,
                connection,
                lambda c: c.cursor().executemany(self._insert, rows) if rows else None,
            )
        except Exception as error:  # the server is gone, or a bad record: each caller sees why
            for _, done in jobs:
                done.set_exception(error)
            return None
        for _, done in jobs:
            done.set_result(None)
        return connection


def _on_live_connection(
    engine: sa.Engine, connection: Any, work: Callable[[Any], T]
) -> tuple[T, Any]:
    """`work` on the connection (a new one if None), and the connection to keep. A connection
    found dead (the server restarted) is replaced once; a connection that failed is closed."""
    import psycopg

    replaced = False
    while True:
        try:
            connection = connection or _autocommit_connection(engine)
            return work(connection), connection
        except Exception as error:
            if connection is not None:
                connection.close()
            dead = isinstance(error, psycopg.OperationalError | sa.exc.OperationalError)
            if replaced or not dead:
                raise
            connection, replaced = None, True


def _autocommit_connection(engine: sa.Engine) -> Any:
    """A psycopg connection of the engine's (same server and session settings), detached
    from its pool and in autocommit: each statement is its own transaction."""
    pooled = engine.raw_connection()
    connection = pooled.driver_connection
    pooled.detach()
    connection.rollback()  # the pool may have begun a transaction on checkout
    connection.autocommit = True
    return connection


_caches: dict[str, CallCache] = {}
_caches_lock = threading.Lock()


def shared_cache() -> CallCache:
    """The process's cache of the current database: every client of the process goes through
    one queue, so an answer one of them recorded is found by any later lookup."""
    engine = db.engine()
    key = engine.url.render_as_string()
    with _caches_lock:
        if key not in _caches:
            _caches[key] = CallCache(engine)
        return _caches[key]
