"""The LLM client: one endpoint asked through the cache, within the concurrency, the pacing
and the budget, retrying what is transient.

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

import contextlib
import email.utils
import json
import logging
import os
import random
import re
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from app.llm.answers import (
    Answer,
    NotACompletion,
    answer_from_response,
    chat_completion,
    reask,
    request_hash,
)
from app.llm.budget import Budget, cost_of
from app.llm.cache import CallCache, shared_cache
from app.llm.errors import BadAnswer, InvalidAnswer, LlmUnavailable
from app.llm.settings import ENV_KEY, LlmSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_STATUS = frozenset({408, 409, 429})
MAX_EXCERPT_CHARS = 1500


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
        self._budget = None if settings.budget_usd is None else Budget(settings, self.cache.spent)

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
        started = time.monotonic()
        with self._reservation(messages, params) as paid:
            response = self._send({"model": model, "messages": messages, **params}, key)
            answer = answer_from_response(response, key, False, cost_of(response, self.settings))
            request = {"messages": messages, "params": params}
            self.cache.put(key, model, request, response, answer)
            paid(answer.cost_usd)
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

    def _reservation(
        self, messages: list[dict[str, str]], params: Mapping[str, Any]
    ) -> contextlib.AbstractContextManager[Callable[[float], None]]:
        """The budget's reservation of the request's worst cost (nothing without a budget)."""
        if self._budget is None:
            return contextlib.nullcontext(lambda _cost: None)
        return self._budget.reserved(messages, params)

    def _send(self, body: dict[str, Any], key: str) -> dict[str, Any]:
        """One request, retried on transient failures (an answer that is not a chat completion
        is one: a proxy's error page, a truncated body); raises `LlmUnavailable` at the end."""
        import openai

        attempt = 0
        while True:
            self._pacer.wait()
            with self._lock:
                self._sent += 1
            try:
                with self._slots:
                    try:
                        answered = self._endpoint().post(
                            "/chat/completions", body=body, cast_to=object
                        )
                    except json.JSONDecodeError as error:  # declared JSON, is not
                        answered = error.doc
                return chat_completion(answered)
            except NotACompletion as error:
                retryable, wait, reason = True, None, redact(str(error))
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
