"""Fault injection, with real Rocq, a real PostgreSQL and the local OpenAI-compatible server:
the LLM endpoint answering 429, 500, garbage, slowly or ignoring the format (default suite);
`rocqcot run` on the embedded database whose postmaster is killed at six points, or whose
`coqidetop` processes are killed and frozen (slow). Each run ends with the dataset of an
undisturbed run, never a traceback, and no row left running. (Workers and whole runs killed
at any instant: `tests/test_workers.py`, `tests/test_run.py`.)"""

from __future__ import annotations

import contextlib
import json
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import sqlalchemy as sa

from app.db import engine as db
from app.db.enums import Stage
from app.db.models import LibraryObject, LlmCall, Theorem
from app.db.reprocess import reprocess
from app.steps import step_5, step_6
from tests.embedded import Home, embedded_home
from tests.llm_server import LlmServer, Reply
from tests.test_step_4 import make_demo
from tests.test_step_5_6 import (  # noqa: F401  (evaluated: a fixture)
    all_inputs,
    cot_rows,
    evaluated,
    objects,
    responder,
    use_server,
)

ARGS = ("--prefix", "demo", "--k-have", "4", "--k-wo-have", "1", "--no-progress")
DATASET = Path("export/dataset/train.jsonl")
FAULTS = ("429", "500", "garbage", "shape", "slow", "prose")


def faulty(good: Callable[[dict[str, Any]], Reply]) -> tuple[Callable[..., Reply], list[str]]:
    """A responder that answers each question (its first two messages) with the next fault
    the first time it is asked, then as `good` does; and the faults it served."""
    seen: set[str] = set()
    served: list[str] = []
    lock = threading.Lock()

    def respond(request: dict[str, Any]) -> Reply:
        key = json.dumps(request["messages"][:2])
        with lock:
            fault = None if key in seen else FAULTS[len(seen) % len(FAULTS)]
            seen.add(key)
            if fault:
                served.append(fault)
        match fault:
            case "429":
                return Reply(status=429, headers={"Retry-After": "0.05"})
            case "500":
                return Reply(status=500, message="upstream is down")
            case "garbage":
                return Reply(body="<html><body>502 Bad Gateway</body></html>")
            case "shape":
                return Reply(body='{"error": {"message": "overloaded", "code": 529}}')
            case "slow":
                return Reply("too late", delay=3.0)
            case "prose":
                return Reply("Sure! Here is what you asked for, in my own words.")
        return good(request)

    return respond, served


def llm_results() -> tuple[dict[str, Any], dict[str, str | None]]:
    return (
        {fqn: row.blocks for fqn, row in cot_rows().items()},
        {name: entry.docstring for name, entry in objects().items()},
    )


def test_llm_steps_through_a_misbehaving_endpoint_write_what_a_good_one_writes(
    evaluated,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Every question first meets a fault (429, 500, an HTML page, JSON of another shape, an
    answer slower than the timeout, prose instead of the format): steps 5 and 6 succeed and
    write exactly what they write against a well-behaved endpoint."""
    config = {5: tmp_path / "step_5.yaml", 6: tmp_path / "step_6.yaml"}
    for step, path in config.items():
        original = (Path(step_5.__file__).parents[1] / "prompts" / f"step_{step}.yaml").read_text()
        path.write_text(
            original + "\ntimeout_seconds: 1\nbackoff_seconds: 0.01\nmax_backoff_seconds: 0.2\n"
        )
    inputs = all_inputs()
    with LlmServer(responder(inputs, [])) as server:
        use_server(monkeypatch, server)
        step_5.command(max_workers=4, config=config[5])
        step_6.command(max_workers=4, config=config[6])
    reference = llm_results()
    with db.session_factory().begin() as session:
        for fqn in session.execute(sa.select(Theorem.fqn)).scalars().all():
            reprocess(session, fqn, Stage.cot)
        session.execute(
            sa.update(LibraryObject)
            .where(LibraryObject.docstring_source == "llm")
            .values(docstring=None, docstring_source=None, stage=Stage.evaluate)
        )
        session.execute(sa.delete(LlmCall))  # nothing answered before: every question is sent
    respond, served = faulty(responder(inputs, []))
    with LlmServer(respond) as server:
        use_server(monkeypatch, server)
        step_5.command(max_workers=4, config=config[5])
        step_6.command(max_workers=4, config=config[6])
    assert set(served) == set(FAULTS)
    assert llm_results() == reference


# --- Whole runs on the embedded database (slow) -------------------------------------------


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "in")


def start_run(home: Home, library: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`rocqcot run` in the home's folder; its output lines, collected as they come."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "run", "--input", str(library), *ARGS],
        cwd=home.path, env=home.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    lines: list[str] = []

    def read() -> None:
        assert process.stdout is not None
        lines.extend(process.stdout)

    threading.Thread(target=read, daemon=True).start()
    return process, lines


def wait_for(lines: list[str], marker: str, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 600
    while not any(marker in line for line in lines):
        assert process.poll() is None, "".join(lines)
        assert time.monotonic() < deadline, f"no {marker!r} in:\n" + "".join(lines)
        time.sleep(0.05)


def finish(process: subprocess.Popen[str], lines: list[str]) -> str:
    process.wait(timeout=900)
    time.sleep(0.2)  # the reader's last lines
    output = "".join(lines)
    assert process.returncode == 0, output
    assert "Traceback" not in output, output
    return output


def running_rows(home: Home) -> int:
    shown = subprocess.run(
        [sys.executable, "-m", "app", "status", "--json"], env=home.env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    return sum(row["rows"] for row in json.loads(shown.stdout) if row["status"] == "running")


@pytest.fixture(scope="module")
def reference(library: Path, project_root_module: Path) -> Iterator[bytes]:
    """The dataset of an undisturbed run on the embedded database."""
    with embedded_home(project_root_module) as home:
        process, lines = start_run(home, library)
        finish(process, lines)
        yield (home.path / DATASET).read_bytes()


@pytest.fixture(scope="module")
def project_root_module() -> Path:
    return Path(__file__).resolve().parents[1]


KILLS = (("step 0:", 0.0), ("step 1:", 0.3), ("step 2:", 2.0), ("step 3:", 1.5),
         ("step 5:", 0.2), ("step 7:", 1.0), ("step 9:", 0.0))  # fmt: skip
"""Where the postmaster dies: a second or two after each step's line (inside the next step's
work: the have search, the evaluation, the searches), or right at it (between steps)."""


@pytest.mark.slow
def test_a_run_whose_server_is_killed_at_seven_points_writes_the_same_dataset(
    library: Path, reference: bytes, project_root_module: Path
) -> None:
    with embedded_home(project_root_module) as home:
        process, lines = start_run(home, library)
        for marker, after in KILLS:
            wait_for(lines, marker, process)
            time.sleep(after)
            while home.postmaster() is None:  # coming back from the previous kill
                assert process.poll() is None, "".join(lines)
                time.sleep(0.05)
            home.kill_postmaster()
        output = finish(process, lines)
        back = [float(s) for s in re.findall(r"server is back after ([\d.]+) s", output)]
        waits = [float(s) for s in re.findall(r"database back after ([\d.]+) s", output)]
        print(f"{len(KILLS)} kills; restarts took {back} s; workers waited {waits} s")
        assert back, output
        assert (home.path / DATASET).read_bytes() == reference
        assert running_rows(home) == 0


def coqidetops(process: subprocess.Popen[str]) -> list[psutil.Process]:
    """The coqidetop processes that a run started (its children, never anyone else's)."""
    try:
        children = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [child for child in children if child.name().startswith("coqidetop")]


@pytest.mark.slow
def test_a_run_whose_rocq_processes_are_killed_and_frozen_writes_the_same_dataset(
    library: Path, reference: bytes, project_root_module: Path
) -> None:
    """Each new coqidetop of the run (the have search's, the evaluation's, the ones started
    again) meets the next fault a moment after it starts: frozen (as a looping tactic leaves
    it: the call times out and the process is replaced), killed, killed."""
    faults = [signal.SIGSTOP, signal.SIGKILL, signal.SIGKILL]
    with embedded_home(project_root_module) as home:
        process, lines = start_run(home, library)
        seen: set[int] = set()
        hit: list[str] = []
        while process.poll() is None and faults:
            for child in coqidetops(process):
                if child.pid not in seen:
                    seen.add(child.pid)
                    time.sleep(0.3)  # let it load its file and start working
                    with contextlib.suppress(psutil.NoSuchProcess):  # a short-lived one
                        child.send_signal(faults[0])
                        hit.append(faults.pop(0).name)
                    break
            time.sleep(0.02)
        finish(process, lines)
        print(f"coqidetop faults: {hit}")
        assert len(hit) >= 2, hit
        assert (home.path / DATASET).read_bytes() == reference
        assert running_rows(home) == 0
