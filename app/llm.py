"""The LLM client of the pipeline: configuration, pacing, retries, a Postgres cache, checking.

Any OpenAI-compatible endpoint works (OpenAI, OpenRouter, vLLM, llama.cpp, Ollama): the
`openai` package posts the step's `request_config` as it is, so provider-specific options pass
through untouched. Every answer is recorded in `llm_calls` under a hash of (model, messages,
parameters) as soon as it arrives, so a rerun, or a reprocess after a crash, sends nothing that
was already answered. At most `max_workers` requests are in flight, request starts are spread
by `mean_delay` (jittered), 429/5xx/timeouts/connection errors are retried with exponential
backoff and jitter, honouring `Retry-After`, and `ask` re-asks (a bounded number of times) when
an answer fails the caller's check. The API key is read from `OPENAI_API_KEY` when the client
is built and handed to `openai` only: it is never stored, printed or logged.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import email.utils
import functools
import hashlib
import json
import logging
import math
import os
import queue
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import sqlalchemy as sa
import typer
import yaml
from sqlalchemy.orm import Session

from app.db import engine as db
from app.db.enums import Stage, Status
from app.db.models import LlmCall
from app.errors import RocqcotError
from app.stages import StageSpec

log = logging.getLogger(__name__)

T = TypeVar("T")

PROMPTS = Path(__file__).resolve().parent / "prompts"
ENV_BASE_URL = "ROCQCOT_LLM_BASE_URL"
ENV_MODEL = "ROCQCOT_LLM_MODEL"
ENV_KEY = "OPENAI_API_KEY"
RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_EXCERPT_CHARS = 1500


class LlmError(RocqcotError):
    """A request that could not be answered usefully; the row fails with this reason."""


class LlmConfigError(LlmError):
    """A configuration the user must fix (unknown key, no model for an endpoint)."""


class LlmUnavailable(LlmError):
    """The endpoint kept failing (or refused the request) after the allowed retries."""


class BudgetReached(LlmError):
    """The recorded cost reached `--budget-usd`: no new request is sent."""


class BadAnswer(Exception):
    """Raised by an answer check: the reason is told to the model when it is asked again."""


class InvalidAnswer(LlmError):
    """Answers still failed their check after the allowed re-asks."""


@dataclass(frozen=True)
class LlmSettings:
    """Where and how a step asks: from its YAML file, the environment and flags."""

    base_url: str | None = None
    """The endpoint; None means the step's offline writer."""
    model: str | None = None
    request_config: dict[str, Any] = field(default_factory=dict)
    """Sent as is with each request (temperature, max_tokens, response_format, ...)."""
    timeout_seconds: float = 600.0
    max_retries: int = 5
    """Retries of one request on 429, 5xx, timeouts and connection errors."""
    backoff_seconds: float = 1.0
    """The first backoff; it doubles at each retry (with jitter)."""
    max_backoff_seconds: float = 120.0
    """No wait is longer, not even one asked by `Retry-After`."""
    max_reasks: int = 2
    """How often an answer that fails its check is asked again."""
    max_workers: int = 8
    """Requests in flight at most (and worker threads of the step)."""
    mean_delay: float = 0.0
    """Mean seconds between request starts (jittered), to stay under rate limits."""
    budget_usd: float | None = None
    """No new request once the cost recorded in `llm_calls` reaches this."""
    prompt_usd_per_million: float = 0.0
    completion_usd_per_million: float = 0.0
    """Prices for the cost, unless the endpoint reports it (`usage.cost`, as OpenRouter)."""

    @property
    def online(self) -> bool:
        return self.base_url is not None

    @property
    def writer(self) -> str:
        """The name recorded with what this configuration writes."""
        return f"llm:{self.model}" if self.online else "offline"


def load_settings(
    step: int, config: Path | None = None, offline: bool = False, **flags: Any
) -> LlmSettings:
    """A step's settings: its YAML file (`config`, else `app/prompts/step_N.yaml`), then
    `ROCQCOT_LLM_BASE_URL`/`ROCQCOT_LLM_MODEL`, then the flags that are not None."""
    path = config or PROMPTS / f"step_{step}.yaml"
    values = yaml.safe_load(path.read_text()) or {}
    known = {f.name for f in dataclasses.fields(LlmSettings)}
    if unknown := sorted(set(values) - known):
        raise LlmConfigError(f"{path}: unknown keys {', '.join(unknown)}; known: {sorted(known)}")
    env = {"base_url": os.environ.get(ENV_BASE_URL), "model": os.environ.get(ENV_MODEL)}
    for source in (env, flags):
        values |= {key: value for key, value in source.items() if value not in (None, "")}
    if offline:
        values["base_url"] = None
    values["request_config"] = dict(values.get("request_config") or {})
    if reserved := sorted({"model", "messages"} & set(values["request_config"])):
        raise LlmConfigError(f"{path}: put {', '.join(reserved)} outside request_config")
    settings = LlmSettings(**values)
    if settings.online and not settings.model:
        raise LlmConfigError(
            f"an endpoint is set ({settings.base_url}) but no model: "
            f"use --model, {ENV_MODEL} or `model:` in {path}"
        )
    return settings


@functools.cache
def prompt(name: str) -> str:
    """The text of `app/prompts/<name>.md` (a system prompt)."""
    return (PROMPTS / f"{name}.md").read_text().strip()


@dataclass(frozen=True)
class Answer:
    """One answered request, from the endpoint or from the cache."""

    text: str
    request_hash: str
    cached: bool
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0


def request_hash(model: str, messages: list[dict[str, str]], params: Mapping[str, Any]) -> str:
    """The cache key: the same model, messages and parameters give the same answer."""
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def answer_from_response(
    response: Mapping[str, Any], key: str, cached: bool, cost: float
) -> Answer:
    """The assistant's text and usage from a chat completion as JSON."""
    choices = response.get("choices") or [{}]
    message = choices[0].get("message") or {}
    usage = response.get("usage") or {}
    return Answer(
        text=message.get("content") or "",
        request_hash=key,
        cached=cached,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost_usd=cost,
    )


def cost_of(response: Mapping[str, Any], settings: LlmSettings) -> float:
    """What a call cost: as the endpoint reports it, else from the configured prices."""
    usage = response.get("usage") or {}
    reported = usage.get("cost")
    if isinstance(reported, int | float) and math.isfinite(reported):
        return float(reported)
    prompt_tokens = usage.get("prompt_tokens") or 0
    completion_tokens = usage.get("completion_tokens") or 0
    return (
        prompt_tokens * settings.prompt_usd_per_million
        + completion_tokens * settings.completion_usd_per_million
    ) / 1e6


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


class Pacer:
    """Spreads request starts: consecutive starts are a random gap apart, of mean
    `mean_delay`, so a burst of workers does not hit a rate limit at once; `hold` pauses
    every start (after a 429 with `Retry-After`)."""

    def __init__(self, mean_delay: float, rng: random.Random | None = None) -> None:
        self.mean_delay = mean_delay
        self._rng = rng or random.Random()
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        """Sleep until this request's start slot."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            if self.mean_delay > 0:
                self._next = start + self._rng.uniform(0, 2 * self.mean_delay)
        if start > now:
            time.sleep(start - now)

    def hold(self, seconds: float) -> None:
        """No request starts in the next `seconds`."""
        with self._lock:
            self._next = max(self._next, time.monotonic() + seconds)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds the server asked to wait (`retry-after-ms`, `Retry-After` as seconds or as an
    HTTP date), or None."""
    if not headers:
        return None
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            pass
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            continue
        return max(0.0, when.timestamp() - time.time())
    return None


def backoff(attempt: int, settings: LlmSettings, rng: random.Random) -> float:
    """Exponential backoff with jitter: half to all of base * 2^attempt, capped."""
    ceiling = min(settings.max_backoff_seconds, settings.backoff_seconds * 2**attempt)
    return rng.uniform(0.5, 1.0) * ceiling


_KEYISH = re.compile(r"\b(sk|key|Bearer)[-_ ]?[A-Za-z0-9*._-]{8,}")


def redact(text: str) -> str:
    """An error message safe to store and log: the key, and anything shaped like a key,
    removed (some endpoints echo a part of a wrong key back)."""
    key = os.environ.get(ENV_KEY)
    if key:
        text = text.replace(key, "[key]")
    return _KEYISH.sub("[key]", text)


class LlmClient:
    """Asks one endpoint, through the cache, within the concurrency, pacing and budget."""

    def __init__(self, settings: LlmSettings, cache: CallCache | None = None) -> None:
        import openai  # the client is only needed when an endpoint is configured

        self.settings = settings
        self.cache = cache or shared_cache()
        self._tls = ssl.create_default_context()
        """Built once: loading the trusted certificates costs 20 ms of CPU each time."""
        self._openai = openai.OpenAI(
            base_url=settings.base_url,
            api_key=os.environ.get(ENV_KEY) or "unused",  # local servers need none
            max_retries=0,  # retries are ours: Retry-After, jitter, a shared pacer
            timeout=settings.timeout_seconds,
            http_client=openai.DefaultHttpxClient(verify=self._tls),
        )
        self._per_thread = threading.local()
        self._copies: list[Any] = []
        self._slots = threading.BoundedSemaphore(settings.max_workers)
        self._pacer = Pacer(settings.mean_delay)
        self._rng = random.Random()
        self._sent = 0
        self._lock = threading.Lock()
        """Guards the count of requests sent and the list of per-thread copies."""

    def close(self) -> None:
        """Wait for the cache's records and close this client's HTTP connections (the client
        can still be used; the cache's database connections stay with the process)."""
        self.cache.flush()
        with self._lock:
            copies, self._copies = self._copies, []
            self._per_thread = threading.local()
        for copy in copies:
            copy.close()

    def _endpoint(self) -> Any:
        """This thread's `openai` client: a copy with a connection pool of its own. One pool
        shared by every worker thread passes each request's start and end through one lock and
        a scan of all its connections, which costs more than the whole cache (measured with
        `bench/llm.py`)."""
        import openai

        copy = getattr(self._per_thread, "client", None)
        if copy is None:
            copy = self._openai.copy(http_client=openai.DefaultHttpxClient(verify=self._tls))
            with self._lock:
                self._copies.append(copy)
                self._per_thread.client = copy
        return copy

    @property
    def sent(self) -> int:
        """Requests this client sent to the endpoint (retries included), for summaries."""
        return self._sent

    def complete(self, messages: list[dict[str, str]]) -> Answer:
        """The answer to `messages`: cached if ever answered, else asked and recorded."""
        model, params = self.settings.model or "", self.settings.request_config
        key = request_hash(model, messages, params)
        if (hit := self.cache.get(key)) is not None:
            response, cost = hit
            return answer_from_response(response, key, cached=True, cost=cost)
        self._check_budget()
        started = time.monotonic()
        response = self._send({"model": model, "messages": messages, **params}, key)
        answer = answer_from_response(response, key, False, cost_of(response, self.settings))
        request = {"messages": messages, "params": params}
        self.cache.put(key, model, request, response, answer)
        log.info(
            "llm call answered",
            extra={
                "model": model,
                "request_hash": key,
                "seconds": round(time.monotonic() - started, 3),
                "prompt_tokens": answer.prompt_tokens,
                "completion_tokens": answer.completion_tokens,
                "cost_usd": answer.cost_usd,
            },
        )
        return answer

    def ask(self, messages: list[dict[str, str]], parse: Callable[[str], T]) -> T:
        """The parsed answer; an answer that `parse` rejects (`BadAnswer`) is asked again,
        with the reason, up to `max_reasks` times, then the call fails keeping the answer."""
        conversation = list(messages)
        for _ in range(self.settings.max_reasks + 1):
            answer = self.complete(conversation)
            try:
                return parse(answer.text)
            except BadAnswer as bad:
                reason = str(bad)
            log.info(
                "llm answer rejected",
                extra={"request_hash": answer.request_hash, "reason": reason[:300]},
            )
            conversation += [
                {"role": "assistant", "content": answer.text},
                {"role": "user", "content": reask(reason)},
            ]
        excerpt = answer.text[:MAX_EXCERPT_CHARS]
        raise InvalidAnswer(
            f"answer rejected {self.settings.max_reasks + 1} times, last because {reason}; "
            f"the answer is kept in llm_calls (request_hash {answer.request_hash}): {excerpt}"
        )

    def _check_budget(self) -> None:
        budget = self.settings.budget_usd
        if budget is not None and (spent := self.cache.spent()) >= budget:
            raise BudgetReached(f"budget reached: ${spent:.4f} spent of --budget-usd {budget}")

    def _send(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """One request, retried on transient failures; raises `LlmUnavailable` at the end."""
        import openai

        attempt = 0
        while True:
            self._pacer.wait()
            with self._lock:
                self._sent += 1
            try:
                with self._slots:
                    response = self._endpoint().post("/chat/completions", body=body, cast_to=object)
                if not isinstance(response, dict):
                    raise LlmUnavailable(f"the endpoint answered {type(response).__name__}")
                return response
            except openai.APIStatusError as error:
                status, wait = error.status_code, retry_after(error.response.headers)
                retryable = status in RETRYABLE_STATUS or status >= 500
                reason = f"HTTP {status}: {redact(error.message)}"
            except openai.APIConnectionError as error:  # timeouts included
                retryable, wait = True, None
                reason = f"{type(error).__name__}: {redact(str(error))}"
            if not retryable or attempt >= self.settings.max_retries:
                tries = f"after {attempt + 1} attempts" if retryable else "(not retryable)"
                raise LlmUnavailable(f"{self.settings.base_url} failed {tries}: {reason}")
            self._pause(attempt, wait, reason, key)
            attempt += 1

    def _pause(self, attempt: int, asked: float | None, reason: str, key: str) -> None:
        """Back off before the next attempt; a `Retry-After` pauses every request start."""
        delay = backoff(attempt, self.settings, self._rng)
        if asked is not None:
            delay = max(delay, asked)
        delay = min(delay, self.settings.max_backoff_seconds)
        if asked is not None:
            self._pacer.hold(delay)
        log.warning(
            "llm request failed (%s); retry %d in %.2fs",
            reason,
            attempt + 1,
            delay,
            extra={"request_hash": key, "attempt": attempt + 1},
        )
        time.sleep(delay)


def reask(reason: str) -> str:
    """What the model is told when its answer failed the check."""
    return (
        f"Your answer cannot be used: {reason}\n"
        "Write the whole answer again, in the required format, fixing this."
    )


def require_sections(text: str, headings: tuple[str, ...]) -> dict[str, str]:
    """The Markdown sections `## <heading>` of an answer, which must all be there, in order,
    non-empty, with nothing but blank lines before the first."""
    pattern = "".join(
        rf"^##\s*{re.escape(h)}\s*:?\s*$(?P<s{i}>.*?)" for i, h in enumerate(headings)
    )
    match = re.fullmatch(r"\s*" + pattern, text.strip() + "\n", re.DOTALL | re.MULTILINE)
    if match is None:
        wanted = ", ".join(f"`## {h}`" for h in headings)
        raise BadAnswer(f"it must consist of exactly the sections {wanted}, in this order")
    sections = {h: match.group(f"s{i}").strip() for i, h in enumerate(headings)}
    if empty := [h for h, body in sections.items() if not body]:
        raise BadAnswer(f"the section `## {empty[0]}` is empty")
    return sections


@dataclass(frozen=True)
class LlmUsage:
    """What the LLM calls recorded so far cost, for `rocqcot status`."""

    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    def line(self) -> str:
        if not self.calls:
            return "llm: no calls yet"
        return (
            f"llm: {self.calls:,} calls, {self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion tokens, ${self.cost_usd:.4f}"
        )


def usage(session: Session) -> LlmUsage:
    """Calls, tokens and cost recorded in `llm_calls`."""
    row = session.execute(
        sa.select(
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(LlmCall.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(LlmCall.completion_tokens), 0),
            sa.func.coalesce(sa.func.sum(LlmCall.cost_usd), 0.0),
        )
    ).one()
    return LlmUsage(int(row[0]), int(row[1]), int(row[2]), float(row[3]))


def retry_budget_failures(session: Session, table: sa.Table, stage: Stage) -> int:
    """Make rows that failed only because the budget was reached ready again (a new run may
    have a larger budget); returns how many."""
    result = session.execute(
        sa.update(table)
        .where(
            table.c.stage == stage,
            table.c.status == Status.failed,
            table.c.error.like(f"{BudgetReached.__name__}:%"),
        )
        .values(status=Status.pending, attempts=0, error=None)
    )
    return result.rowcount


# Command-line options shared by the LLM steps (flags win over the environment and the file).
ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", help="a YAML file shaped like app/prompts/step_N.yaml"),
]
BaseUrlOption = Annotated[
    str | None, typer.Option("--base-url", help=f"an OpenAI-compatible endpoint [{ENV_BASE_URL}]")
]
ModelOption = Annotated[str | None, typer.Option("--model", help=f"the model [{ENV_MODEL}]")]
OfflineOption = Annotated[
    bool, typer.Option("--offline", help="the offline writer, even with an endpoint set")
]
MaxWorkersOption = Annotated[
    int | None, typer.Option("--max-workers", min=1, help="requests in flight at most [8]")
]
MeanDelayOption = Annotated[
    float | None,
    typer.Option("--mean-delay", min=0.0, help="mean seconds between request starts [0]"),
]
BudgetOption = Annotated[
    float | None,
    typer.Option("--budget-usd", min=0.0, help="no new request once llm_calls cost this much"),
]


@dataclass(frozen=True)
class StepFlags:
    """The flags of an LLM step's command, None where not given."""

    config: Path | None = None
    offline: bool = False
    base_url: str | None = None
    model: str | None = None
    max_workers: int | None = None
    mean_delay: float | None = None
    budget_usd: float | None = None


@dataclass(frozen=True)
class StepReport:
    """What one run of an LLM step did, for its summary line."""

    writer: str
    done: int
    failed: int
    sent: int
    usage: LlmUsage

    def line(self, step: int, written: str) -> str:
        return (
            f"step {step}: {self.done} {written} ({self.writer}), {self.failed} failed; "
            f"{self.sent} requests sent; {self.usage.line()}"
        )


def default_writer(
    step: int, writer_for: Callable[[LlmSettings], T]
) -> Callable[[], contextlib.AbstractContextManager[T]]:
    """The `resources` of an LLM stage run by a plain `rocqcot worker`: its writer, built once
    per process from the step's settings file and the environment."""
    writer = functools.cache(lambda: writer_for(load_settings(step)))
    return lambda: contextlib.nullcontext(writer())


def run_llm_step(
    step: int,
    spec: StageSpec,
    writer_for: Callable[[LlmSettings], Callable[..., Any]],
    flags: StepFlags,
    offline_batch: int,
) -> StepReport:
    """Run an LLM step's stage until no row is ready, every worker thread sharing one writer
    (so one client: one concurrency limit, one pacer); rows stopped by an earlier budget are
    tried again."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    settings = load_settings(
        step,
        flags.config,
        flags.offline,
        base_url=flags.base_url,
        model=flags.model,
        max_workers=flags.max_workers,
        mean_delay=flags.mean_delay,
        budget_usd=flags.budget_usd,
    )
    ensure_schema()
    with session_factory().begin() as session:
        retry_budget_failures(session, spec.model.__table__, spec.stage)
    write = writer_for(settings)
    batch = 1 if settings.online else offline_batch
    shared = dataclasses.replace(
        spec, resources=lambda: contextlib.nullcontext(write), batch_size=batch
    )
    stats = run_workers([shared], concurrency=settings.max_workers)
    client = getattr(write, "client", None)
    if isinstance(client, LlmClient):
        client.close()
    with session_factory()() as session:
        spent = usage(session)
    sent = client.sent if isinstance(client, LlmClient) else 0
    return StepReport(settings.writer, stats.done, stats.failed, sent, spent)


def step_command(
    step: int,
    spec: StageSpec,
    writer_for: Callable[[LlmSettings], Callable[..., Any]],
    written: str,
    offline_batch: int,
    doc: str,
) -> Callable[..., None]:
    """The command of an LLM step that runs its stage and nothing else: the shared flags, then
    the summary line (`written`: what the rows became)."""

    def command(
        max_workers: MaxWorkersOption = None,
        mean_delay: MeanDelayOption = None,
        budget_usd: BudgetOption = None,
        config: ConfigOption = None,
        base_url: BaseUrlOption = None,
        model: ModelOption = None,
        offline: OfflineOption = False,
    ) -> None:
        flags = StepFlags(config, offline, base_url, model, max_workers, mean_delay, budget_usd)
        report = run_llm_step(step, spec, writer_for, flags, offline_batch)
        typer.echo(report.line(step, written))

    command.__doc__ = doc
    return command
