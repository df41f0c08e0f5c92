"""The shared worker: crash safety, concurrency, retries and leases, on the real database."""

from __future__ import annotations

import collections
import signal
import subprocess
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from app.db import engine as db
from app.db import queue
from app.db.enums import Stage, Status
from app.db.models import Probe
from app.steps import probe
from workers.runner import Worker, run_workers


def add_probes(count: int, **payload: object) -> None:
    with db.session_factory().begin() as session:
        probe.add_probes(session, [dict(payload) for _ in range(count)])


def probe_rows() -> list[Probe]:
    with db.session_factory()() as session:
        return list(session.execute(sa.select(Probe).order_by(Probe.id)).scalars())


def start_worker(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "--stage", "probe", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def calls_per_row(log: Path) -> collections.Counter[int]:
    return collections.Counter(int(line.split()[0]) for line in log.read_text().splitlines())


def test_sigkill_mid_task_loses_and_duplicates_nothing(
    migrated: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    add_probes(300, sleep=0.01, log=str(log))
    env = dict(subprocess_env, ROCQCOT_PROBE_LEASE="3")
    victim, survivor = start_worker(env), start_worker(env)
    while not log.exists() or len(log.read_text().splitlines()) < 60:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert survivor.wait(timeout=120) == 0, survivor.stderr.read()
    restarted = start_worker(env)  # nothing may be left; it must still exit cleanly
    assert restarted.wait(timeout=60) == 0, restarted.stderr.read()

    rows = probe_rows()
    assert len(rows) == 300
    assert all(row.status == Status.done for row in rows)
    assert all(row.writes == 1 for row in rows), "a result was written twice"
    assert all(row.result == {"echo": row.payload} for row in rows)
    calls = calls_per_row(log)
    assert set(calls) == {row.id for row in rows}
    # Only the row the victim was working on may have run twice (its result was never written).
    assert sum(1 for n in calls.values() if n > 1) <= 1


def test_four_workers_never_process_a_row_twice(
    migrated: str, subprocess_env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "calls.log"
    add_probes(400, sleep=0.002, log=str(log))
    workers = [start_worker(subprocess_env) for _ in range(4)]
    for worker in workers:
        assert worker.wait(timeout=120) == 0, worker.stderr.read()
    calls = calls_per_row(log)
    assert len(calls) == 400 and set(calls.values()) == {1}
    assert len({line.split()[1] for line in log.read_text().splitlines()}) > 1, "one worker did all"
    assert all(row.status == Status.done and row.writes == 1 for row in probe_rows())


def test_threads_of_one_worker_share_the_rows(migrated: str, tmp_path: Path) -> None:
    log = tmp_path / "calls.log"
    add_probes(100, log=str(log))
    stats = run_workers([probe.SPEC], concurrency=3)
    assert stats.done == 100 and stats.failed == 0
    assert set(calls_per_row(log).values()) == {1}


def test_failing_row_is_retried_then_kept_failed_with_its_reason(migrated: str) -> None:
    add_probes(2)
    add_probes(1, fail=True)
    stats = Worker(probe.SPEC).run()
    assert stats.done == 2 and stats.failed == 1  # rows, not the three failed attempts
    failed = [row for row in probe_rows() if row.status == Status.failed]
    assert len(failed) == 1
    assert failed[0].attempts == probe.SPEC.max_attempts
    assert "ValueError: probe" in failed[0].error and "asked to fail" in failed[0].error


def test_expired_lease_makes_a_row_claimable_and_lost_lease_cannot_finish(migrated: str) -> None:
    add_probes(1)
    factory = db.session_factory()
    with factory.begin() as session:
        [row_id] = queue.claim(session, probe.SPEC, "host:1:dead", 10)
    with factory.begin() as session:  # still leased: nobody else gets it
        assert queue.claim(session, probe.SPEC, "host:2:alive", 10) == []
    with factory.begin() as session:
        expired = sa.func.now() - sa.text("'1s'::interval")
        session.execute(sa.update(Probe).values(lease_until=expired))
    with factory.begin() as session:
        assert queue.claim(session, probe.SPEC, "host:2:alive", 10) == [row_id]
    try:
        with factory.begin() as session:
            queue.finish(session, probe.SPEC, "host:1:dead", row_id)
        raise AssertionError("a worker finished a row it no longer held")
    except Exception as error:
        assert type(error).__name__ == "LeaseLost"
    with factory.begin() as session:
        queue.finish(session, probe.SPEC, "host:2:alive", row_id)
    [row] = probe_rows()
    assert row.status == Status.done and row.attempts == 2 and row.stage == Stage.probe


def test_rows_of_a_dead_local_worker_are_released_at_once(migrated: str) -> None:
    add_probes(3)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    import socket

    with db.session_factory().begin() as session:
        queue.claim(session, probe.SPEC, f"{socket.gethostname()}:{dead}:x", 3)
    started = time.monotonic()
    stats = Worker(probe.SPEC).run()  # the lease is 30 s: waiting for it would be slow
    assert stats.done == 3
    assert time.monotonic() - started < 10
    assert all(row.writes == 1 for row in probe_rows())


def test_a_stage_resource_is_opened_once_per_worker_and_handed_to_each_row(migrated: str) -> None:
    import contextlib
    import dataclasses

    opened: list[str] = []
    seen: list[tuple[int, str]] = []

    @contextlib.contextmanager
    def session():
        opened.append("open")
        yield "the session"
        opened.append("closed")

    def run(item: probe.ProbeInput, resource: str) -> dict:
        seen.append((item.id, resource))
        return {}

    add_probes(5)
    spec = dataclasses.replace(probe.SPEC, run=run, resources=session)
    assert Worker(spec).run().done == 5
    assert opened == ["open", "closed"]
    assert [resource for _, resource in seen] == ["the session"] * 5
