"""The LLM client against a local OpenAI-compatible server and the real Postgres cache:
answers, retries (429 with Retry-After, 5xx, timeouts), the cache, the budget, the
concurrency limit, re-asks, and keys that never leak."""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from app import llm
from app.db import engine as db
from app.db.models import LlmCall
from tests.llm_server import LlmServer, Reply

HELLO = [{"role": "user", "content": "hello"}]


def settings(server: LlmServer, **changes: object) -> llm.LlmSettings:
    """Fast settings for tests: short backoffs and timeouts."""
    values: dict[str, object] = {
        "base_url": server.base_url,
        "model": "test-model",
        "backoff_seconds": 0.01,
        "max_backoff_seconds": 3.0,
        "timeout_seconds": 5.0,
        "max_retries": 3,
    }
    return llm.LlmSettings(**(values | changes))


@pytest.fixture
def server():
    with LlmServer() as running:
        yield running


def recorded() -> list[LlmCall]:
    """The recorded calls, once the records on their way are in."""
    llm.shared_cache().flush()
    with db.session_factory()() as session:
        return list(session.execute(sa.select(LlmCall).order_by(LlmCall.id)).scalars())


def test_an_answer_is_recorded_with_tokens_and_cost_then_served_from_the_cache(
    migrated: str, server: LlmServer
) -> None:
    server.script(Reply("hi there", cost=0.002))
    client = llm.LlmClient(settings(server))
    first = client.complete(HELLO)
    assert (first.text, first.cached, first.cost_usd) == ("hi there", False, 0.002)
    assert first.prompt_tokens > 0 and first.completion_tokens > 0
    again = llm.LlmClient(settings(server)).complete(HELLO)
    assert (again.text, again.cached, again.request_hash) == ("hi there", True, first.request_hash)
    assert server.count == 1
    (call,) = recorded()
    assert call.model == "test-model" and call.cost_usd == 0.002
    assert call.request["messages"] == HELLO and call.response["choices"][0]["message"]
    with db.session_factory()() as session:
        assert llm.usage(session).calls == 1


def test_other_parameters_are_another_request(migrated: str, server: LlmServer) -> None:
    llm.LlmClient(settings(server)).complete(HELLO)
    llm.LlmClient(settings(server, request_config={"temperature": 0.5})).complete(HELLO)
    llm.LlmClient(settings(server, model="other")).complete(HELLO)
    assert server.count == 3


def test_many_threads_share_the_cache_in_batches(migrated: str, server: LlmServer) -> None:
    client = llm.LlmClient(settings(server, max_workers=16))
    questions = [[{"role": "user", "content": f"q{i}"}] for i in range(64)]
    with ThreadPoolExecutor(16) as pool:
        first = list(pool.map(client.complete, questions))
        client.close()  # waits for the records, which do not hold up their requests
        assert len(recorded()) == 64
        again = list(pool.map(client.complete, questions))  # a closed client starts again
    assert not any(a.cached for a in first) and all(a.cached for a in again)
    assert [a.request_hash for a in again] == [a.request_hash for a in first]
    assert server.count == 64


def test_the_cache_reconnects_when_its_connection_dies(migrated: str, server: LlmServer) -> None:
    """As after a database restart: the cache's server process is terminated under it."""
    client = llm.LlmClient(settings(server))
    client.complete(HELLO)
    with db.engine().begin() as connection:
        killed = connection.execute(
            sa.text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    assert killed >= 1
    assert client.complete(HELLO).cached
    assert client.complete([{"role": "user", "content": "new"}]).cached is False
    assert server.count == 2


def test_cost_from_prices_when_the_endpoint_reports_none(migrated: str, server: LlmServer):
    priced = settings(server, prompt_usd_per_million=1e6, completion_usd_per_million=0.0)
    answer = llm.LlmClient(priced).complete(HELLO)
    assert answer.cost_usd == answer.prompt_tokens


def test_429_with_retry_after_waits_as_asked_then_succeeds(migrated: str, server: LlmServer):
    server.script(Reply(status=429, headers={"Retry-After": "1"}), Reply("after the wait"))
    started = time.monotonic()
    answer = llm.LlmClient(settings(server)).complete(HELLO)
    assert answer.text == "after the wait"
    assert time.monotonic() - started >= 1.0
    assert server.count == 2


def test_500_twice_then_success(migrated: str, server: LlmServer) -> None:
    server.script(Reply(status=500), Reply(status=503), Reply("third time"))
    assert llm.LlmClient(settings(server)).complete(HELLO).text == "third time"
    assert server.count == 3


def test_a_timeout_is_retried(migrated: str, server: LlmServer) -> None:
    server.script(Reply("too late", delay=2.0), Reply("in time"))
    started = time.monotonic()
    answer = llm.LlmClient(settings(server, timeout_seconds=0.4)).complete(HELLO)
    assert answer.text == "in time"
    assert time.monotonic() - started < 1.9
    assert server.count == 2


def test_retries_are_bounded_then_the_reason_is_raised(migrated: str, server: LlmServer):
    server.script(*[Reply(status=500)] * 4)
    with pytest.raises(llm.LlmUnavailable, match=r"after 4 attempts: HTTP 500"):
        llm.LlmClient(settings(server, max_retries=3)).complete(HELLO)
    assert server.count == 4 and recorded() == []


def test_a_client_error_is_not_retried(migrated: str, server: LlmServer) -> None:
    server.script(Reply(status=400, message="bad request"))
    with pytest.raises(llm.LlmUnavailable, match="not retryable"):
        llm.LlmClient(settings(server)).complete(HELLO)
    assert server.count == 1


def test_the_key_is_never_logged_nor_raised_nor_stored(
    migrated: str, server: LlmServer, monkeypatch: pytest.MonkeyPatch, caplog
) -> None:
    key = "sk-test-0123456789abcdefghij"
    monkeypatch.setenv(llm.ENV_KEY, key)
    server.script(Reply(status=500, message=f"upstream saw {key}"), Reply("fine"))
    server.script(Reply(status=401, message=f"Incorrect API key provided: {key}"))
    caplog.set_level(logging.DEBUG)
    client = llm.LlmClient(settings(server))
    client.complete(HELLO)
    with pytest.raises(llm.LlmUnavailable) as raised:
        client.complete([{"role": "user", "content": "again"}])
    assert "401" in str(raised.value) and key not in str(raised.value)
    assert key not in caplog.text and "sk-test" not in caplog.text
    assert all(key not in repr((c.request, c.response)) for c in recorded())
    assert key not in repr(client.settings)


def test_at_most_max_workers_requests_are_in_flight(migrated: str) -> None:
    with LlmServer(delay=0.2) as server:
        client = llm.LlmClient(settings(server, max_workers=3))
        threads = [
            threading.Thread(target=client.complete, args=([{"role": "user", "content": str(i)}],))
            for i in range(12)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert server.count == 12 and server.max_in_flight == 3


def test_the_pacer_spreads_starts_by_the_mean_delay() -> None:
    pacer = llm.Pacer(0.05, rng=random.Random(7))
    expected = sum(random.Random(7).uniform(0, 0.1) for _ in range(9))
    started = time.monotonic()
    for _ in range(10):
        pacer.wait()
    assert abs((time.monotonic() - started) - expected) < 0.05


PRICED = {
    "request_config": {"max_tokens": 100},
    "prompt_usd_per_million": 1.0,
    "completion_usd_per_million": 100.0,
}
"""Prices under which a short request's worst cost is just over $0.01."""


def test_the_budget_stops_new_requests_but_not_cached_answers(migrated: str, server: LlmServer):
    server.responder = lambda _request: Reply("paid", cost=0.01)
    client = llm.LlmClient(settings(server, budget_usd=0.025, **PRICED))
    client.complete([{"role": "user", "content": "one"}])
    client.complete([{"role": "user", "content": "two"}])
    with pytest.raises(llm.BudgetReached, match=r"\$0\.0200 spent .* may cost \$0\.0101"):
        client.complete([{"role": "user", "content": "three"}])
    assert client.complete([{"role": "user", "content": "one"}]).cached
    assert server.count == 2


def test_requests_in_flight_never_overshoot_the_budget(migrated: str) -> None:
    """Sixteen threads ask at once: each request's worst cost is reserved before it is sent,
    so five fit in $0.055 and the others stop, instead of all passing a check of the spent
    cost (then $0)."""
    with LlmServer(lambda _request: Reply("paid", cost=0.01, delay=0.3)) as server:
        client = llm.LlmClient(settings(server, budget_usd=0.055, max_workers=16, **PRICED))
        questions = [[{"role": "user", "content": f"q{i:02}"}] for i in range(16)]

        def ask(messages: list[dict[str, str]]) -> str:
            try:
                return client.complete(messages).text
            except llm.BudgetReached:
                return "stopped"

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, questions))
        client.close()
    assert answers.count("paid") == 5 == server.count
    assert sum(call.cost_usd for call in recorded()) <= 0.055


def test_a_budget_needs_a_worst_case(migrated: str, server: LlmServer) -> None:
    with pytest.raises(llm.LlmConfigError, match="`max_tokens` in request_config"):
        llm.LlmClient(settings(server, budget_usd=1.0, completion_usd_per_million=1.0))
    unpriced = settings(server, budget_usd=1.0, request_config={"max_tokens": 10})
    with pytest.raises(llm.LlmConfigError, match="needs `prompt_usd_per_million`"):
        llm.LlmClient(unpriced)


def test_answers_that_are_not_a_completion_are_retried(
    migrated: str, server: LlmServer, caplog
) -> None:
    server.script(
        Reply(body="<html>502 Bad Gateway</html>"),
        Reply(body='{"error": {"message": "overloaded"}}'),
        Reply(body='{"choices": [{"message": {"content": 5}}]}'),
        Reply(body='{"choices": [{"message": {"content": "cut'),
        Reply("at last"),
    )
    caplog.set_level(logging.WARNING)
    client = llm.LlmClient(settings(server, max_retries=4))
    assert client.complete(HELLO).text == "at last"
    client.close()
    assert server.count == 5
    assert "the endpoint answered what is not JSON: '<html>502 Bad Gateway</html>'" in caplog.text
    assert "the endpoint answered JSON that is not a chat completion" in caplog.text
    assert [call.response["choices"][0]["message"]["content"] for call in recorded()] == ["at last"]


def test_garbage_to_the_end_is_the_endpoint_unavailable(migrated: str, server: LlmServer):
    server.responder = lambda _request: Reply(body="not json at all")
    with pytest.raises(
        llm.LlmUnavailable, match=r"after 4 attempts: the endpoint answered what is not JSON"
    ):
        llm.LlmClient(settings(server, max_retries=3)).complete(HELLO)
    assert server.count == 4 and recorded() == []


def test_an_answer_failing_its_check_is_asked_again_with_the_reason(
    migrated: str, server: LlmServer
) -> None:
    server.script(Reply("no"), Reply("## Verdict\nyes"))
    sections = llm.LlmClient(settings(server)).ask(
        HELLO, lambda text: llm.require_sections(text, ("Verdict",))
    )
    assert sections == {"Verdict": "yes"}
    second = server.requests[1]["messages"]
    assert second[1] == {"role": "assistant", "content": "no"}
    assert "## Verdict" in second[2]["content"]


def test_re_asks_are_bounded_and_the_last_answer_is_kept(migrated: str, server: LlmServer):
    server.responder = lambda _request: Reply("never right")
    client = llm.LlmClient(settings(server, max_reasks=1))
    with pytest.raises(llm.InvalidAnswer, match=r"rejected 2 times.*request_hash [0-9a-f]{64}"):
        client.ask(HELLO, lambda text: llm.require_sections(text, ("Verdict",)))
    assert server.count == 2
    assert recorded()[-1].response["choices"][0]["message"]["content"] == "never right"


def test_require_sections_is_strict() -> None:
    text = "## Statement\nIt holds.\n\n## Proof:\nBy induction."
    assert llm.require_sections(text, ("Statement", "Proof")) == {
        "Statement": "It holds.",
        "Proof": "By induction.",
    }
    unordered, preamble = "## Proof\nx\n## Statement\ny", "Intro\n## Statement\nx\n## Proof\ny"
    for bad in (unordered, preamble, "## Statement\n\n## Proof\ny"):
        with pytest.raises(llm.BadAnswer):
            llm.require_sections(bad, ("Statement", "Proof"))


def test_retry_after_forms() -> None:
    assert llm.retry_after({"retry-after": "2"}) == 2.0
    assert llm.retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    soon = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 30))
    assert 25 < llm.retry_after({"retry-after": soon}) <= 30
    assert llm.retry_after({"retry-after": "whenever"}) is None
    assert llm.retry_after({}) is None


def test_settings_come_from_the_file_then_the_environment_then_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "llm.yaml"
    config.write_text("base_url: http://file/v1\nmodel: from-file\nmax_reasks: 4\n")
    monkeypatch.delenv(llm.ENV_BASE_URL, raising=False)
    monkeypatch.setenv(llm.ENV_MODEL, "from-env")
    loaded = llm.load_settings(5, config, max_workers=3, model=None)
    assert (loaded.base_url, loaded.model, loaded.max_reasks) == ("http://file/v1", "from-env", 4)
    assert loaded.max_workers == 3 and loaded.writer == "llm:from-env"
    assert llm.load_settings(5, config, model="from-flag").model == "from-flag"
    assert llm.load_settings(5, config, offline=True).writer == "offline"
    monkeypatch.delenv(llm.ENV_MODEL)
    assert llm.load_settings(5).writer == "offline"
    config.write_text("base_url: http://file/v1\n")
    with pytest.raises(llm.LlmConfigError, match="no model"):
        llm.load_settings(6, config)
    config.write_text("base_urll: http://typo/v1\n")
    with pytest.raises(llm.LlmConfigError, match="unknown keys base_urll"):
        llm.load_settings(6, config)
