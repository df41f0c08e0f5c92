"""The default database: the embedded PostgreSQL that users get without `DATABASE_URL`.
Started on demand, reused by later commands, started again by whoever finds it dead (a
command, a worker in the middle of its rows), several homes side by side; and an external
server that stays away is one line after a bounded wait."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.embedded import Home, embedded_home

PROBES = 240


@pytest.fixture
def home(project_root: Path) -> Iterator[Home]:
    with embedded_home(project_root) as made:
        yield made


def rocqcot(home: Home, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], env=home.env | env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip


def psql(home: Home, sql: str) -> str:
    """Run SQL through `rocqcot`'s own engine (no second way into the database)."""
    code = (
        "import sys, sqlalchemy as sa\nfrom app.db import engine as db\n"
        "with db.engine().begin() as c:\n"
        "    rows = c.execute(sa.text(sys.argv[1]))\n"
        "    print('\\n'.join(' '.join(map(str, r)) for r in rows) if rows.returns_rows else '')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, sql], env=home.env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_server_starts_on_demand_and_later_commands_reuse_it(home: Home) -> None:
    assert home.postmaster() is None
    first = rocqcot(home, "db", "url")
    assert first.returncode == 0, first.stderr
    socket = str(home.pgdata.resolve()).replace("/", "%2F")
    assert first.stdout.strip().endswith(f"/rocqcot?host={socket}")
    pid = home.postmaster()
    assert pid is not None
    status = rocqcot(home, "status")
    assert status.returncode == 0 and "no rows yet" in status.stdout, status.stderr
    assert rocqcot(home, "db", "url").stdout == first.stdout
    assert home.postmaster() == pid, "a later command started another server"


def test_several_homes_side_by_side(project_root: Path) -> None:
    with embedded_home(project_root) as one, embedded_home(project_root) as two:
        urls = [rocqcot(home, "db", "url").stdout.strip() for home in (one, two)]
        assert urls[0] != urls[1]
        assert one.postmaster() != two.postmaster() and None not in (
            one.postmaster(),
            two.postmaster(),
        )
        psql(one, "CREATE TABLE mark (home text); INSERT INTO mark VALUES ('one')")
        assert psql(one, "SELECT home FROM mark") == "one"
        assert psql(two, "SELECT count(*) FROM pg_tables WHERE tablename = 'mark'") == "0"


def test_a_command_restarts_a_dead_server_and_the_data_is_back(home: Home) -> None:
    assert rocqcot(home, "status").returncode == 0
    psql(home, "CREATE TABLE kept (n int); INSERT INTO kept SELECT generate_series(1, 100)")
    dead = home.kill_postmaster()
    status = rocqcot(home, "status")
    assert status.returncode == 0, status.stderr
    assert "Traceback" not in status.stderr
    assert home.postmaster() not in (None, dead)
    assert psql(home, "SELECT count(*) FROM kept") == "100"


def probe_worker(home: Home, **env: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "workers", "--stage", "probe"], env=home.env | env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_worker_resumes_when_the_server_is_killed_under_it(home: Home, tmp_path: Path) -> None:
    """The postmaster is killed twice while a worker runs probes: the worker starts it again,
    says so, and finishes every row; each result is written once, and no row stays running.
    The lease is longer than the test may take: a row whose claim or result the crash lost in
    the worker's own name is released at once, not at the end of its lease. The queue's commits
    do not wait for the disk, so the rows finished in the last few hundred milliseconds before a
    crash run again (at most 30 rows of 20 ms per crash). Prints the seconds from each kill
    until five more rows ran, and the rows run twice."""
    log = tmp_path / "calls.log"
    assert rocqcot(home, "db", "upgrade").returncode == 0
    psql(
        home,
        "INSERT INTO probes (payload, stage, status, attempts, writes) SELECT "
        f"jsonb_build_object('sleep', 0.02, 'log', '{log}'), 'probe', 'pending', 0, 0 "
        f"FROM generate_series(1, {PROBES})",
    )
    worker = probe_worker(home, ROCQCOT_PROBE_LEASE="600")
    resumed = []
    for kill_at in (60, 150):
        while not log.exists() or len(log.read_text().splitlines()) < kill_at:
            time.sleep(0.01)
        before = len(log.read_text().splitlines())
        home.kill_postmaster()
        killed = time.monotonic()
        while len(log.read_text().splitlines()) < before + 5:
            time.sleep(0.01)
        resumed.append(time.monotonic() - killed)
    out, err = worker.communicate(timeout=240)
    assert worker.returncode == 0, err
    assert "Traceback" not in err
    assert len(re.findall(r"server had died: starting it again", err)) == 2, err
    assert len(re.findall(r"server is back after", err)) == 2, err
    assert len(re.findall(r"database unavailable", err)) <= 2, err  # once per outage at most
    assert f"{PROBES} done, 0 failed" in out
    states = psql(home, "SELECT status, count(*), max(writes) FROM probes GROUP BY status")
    assert states == f"done {PROBES} 1"
    calls = collections.Counter(line.split()[0] for line in log.read_text().splitlines())
    twice = sum(1 for count in calls.values() if count > 1)
    print(f"resumed {', '.join(f'{s:.2f}' for s in resumed)} s after each kill; "
          f"{twice} rows run twice")  # fmt: skip
    assert len(calls) == PROBES and twice <= 60


def test_an_external_server_that_stays_away_is_one_line(home: Home) -> None:
    """With `DATABASE_URL`, nothing can be restarted: a command says the server is unreachable
    in one line, and a worker whose server goes away waits, says so once, and gives up."""
    unreachable = "postgresql://nobody@127.0.0.1:9/none"
    status = rocqcot(home, "status", DATABASE_URL=unreachable)
    assert status.returncode == 1
    assert status.stderr.startswith("rocqcot: error: cannot connect to ")
    assert len(status.stderr.strip().splitlines()) == 1, status.stderr
    assert rocqcot(home, "db", "upgrade").returncode == 0
    url = rocqcot(home, "db", "url").stdout.strip()
    psql(
        home,
        "INSERT INTO probes (payload, stage, status, attempts, writes) SELECT "
        "jsonb_build_object('sleep', 0.05), 'probe', 'pending', 0, 0 FROM generate_series(1, 200)",
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "workers", "--stage", "probe"],
        env=home.env | {"DATABASE_URL": url, "ROCQCOT_DATABASE_WAIT": "3"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    while psql(home, "SELECT count(*) FROM probes WHERE status = 'done'") == "0":
        time.sleep(0.1)
    home.stop()  # gone for good: nobody restarts a server named by DATABASE_URL
    _out, err = worker.communicate(timeout=120)
    assert worker.returncode == 1
    assert "Traceback" not in err
    assert len(re.findall("database unavailable", err)) == 1, err
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith("rocqcot: error: the database stayed unreachable for 3 s")
    )
