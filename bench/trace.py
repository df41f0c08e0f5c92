"""`rocqcot trace` against a plain parallel build of the same library, measured in one run.

Plain: the library's original sources copied to a temporary folder and built with the
toolchain's `coq_makefile` and `make -jN` (as `bench/build_extract.py` does). Ours: `rocqcot
trace` (steps 0, 1, 4 --all, which tags the haves in its walk, and the export) from an empty
`ROCQCOT_HOME` in a temporary folder (its embedded PostgreSQL started on demand, as a user's
first run). Printed: the wall time of each stage of the trace (its own `trace: … took` lines)
and, during each stage, the share of each core that was busy (`/proc/stat`, the whole machine),
the load average (sampled each second) and the cores that Rocq (`coqc`, `coqidetop`), rocqcot's
own Python and its database server kept busy: issue 18 asks the evaluator's own cost to stay
below Rocq's. The last line is `RESULT trace_over_make=<ratio> theorems=<traced>
failed=<failed proofs+haves>`, read from the trace's card. Target (issue 18): at most 2.0 on
all of MathComp, every core above 80% busy during step 4. `--keep DIR` traces into `DIR`
(empty or new) and keeps it, for probes on the traced database afterwards.

    python -m bench.trace [--rocq-bin DIR] [--full] [--jobs N] [--keep DIR] [LIBRARY [--prefix P]]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import yaml

from app.steps.step_0 import library_arguments
from bench.build_extract import plain
from bench.rocq import add_rocq_bin, chosen

ROOT = Path(__file__).resolve().parents[1]
STAGE_TIME = re.compile(r"^trace: (.+) took ([\d.]+) s$")
STAGE_START = re.compile(r"^trace: (.+) started$")


def cpu_times() -> list[tuple[int, int]]:
    """(busy, total) jiffies of each core since boot, from `/proc/stat`."""
    cores = []
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if re.fullmatch(r"cpu\d+", name):
            ticks = [int(v) for v in values[:8]]
            idle = ticks[3] + ticks[4]  # idle, iowait
            cores.append((sum(ticks) - idle, sum(ticks)))
    return cores


KINDS = ("Rocq", "rocqcot", "database")
ROCQ_NAMES = ("coq", "rocq")
"""Process names of Rocq's executables (`coqidetop.opt`, `coqc`, `rocq`); rocqcot's own are
Python."""


def kind_of(process: psutil.Process) -> str:
    """Whose work a process of the trace does: Rocq's, or rocqcot's own."""
    return "Rocq" if process.name().startswith(ROCQ_NAMES) else "rocqcot"


@dataclass
class Sampler:
    """Samples, each second while running, the load average and the CPU seconds of a process
    and its descendants, by kind (`kind_of`), and of the embedded database server that serves
    `pgdata` (a process that ends between two samples loses its last second)."""

    root: psutil.Process
    pgdata: Path
    loads: list[float] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    _last: dict[int, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> threading.Thread:
        self._sample()
        thread = threading.Thread(target=self._loop, daemon=True)
        thread.start()
        return thread

    def stop(self, thread: threading.Thread) -> None:
        self._stop.set()
        thread.join()
        self._sample()

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            self._sample()

    def _processes(self) -> list[tuple[str, psutil.Process]]:
        """The trace's processes by kind, and the database server's (started detached)."""
        try:
            ours = [(kind_of(p), p) for p in [self.root, *self.root.children(recursive=True)]]
        except psutil.NoSuchProcess:
            return []
        for process in psutil.process_iter(["name", "cmdline"]):
            if process.info["name"] == "postgres" and str(self.pgdata) in (
                process.info["cmdline"] or []
            ):
                with contextlib.suppress(psutil.NoSuchProcess):
                    server = [process, *process.children(recursive=True)]
                    ours += [("database", p) for p in server]
        return ours

    def _sample(self) -> None:
        self.loads.append(os.getloadavg()[0])
        first_sample = not self._last
        for kind, process in self._processes():
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            used = times.user + times.system
            baseline = used if first_sample else 0.0  # the first sample is the baseline
            self.seconds[kind] = (
                self.seconds.get(kind, 0.0) + used - self._last.get(process.pid, baseline)
            )
            self._last[process.pid] = used


@dataclass
class StageLoad:
    """How busy the machine was during one stage."""

    cores: list[float] = field(default_factory=list)
    """Each core's busy share."""
    loads: list[float] = field(default_factory=list)
    ours: dict[str, float] = field(default_factory=dict)
    """CPU seconds over the stage's wall seconds (2.0: two cores) of Rocq, rocqcot's own Python
    and its database server."""


@dataclass
class TraceRun:
    """What one `rocqcot trace` run measured."""

    wall: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    loads: dict[str, StageLoad] = field(default_factory=dict)


def run_trace(arguments: list[str], env: dict[str, str], pgdata: Path) -> TraceRun:
    """Run `rocqcot trace`, echo its lines, time its stages and watch the CPUs in step 4."""
    measured = TraceRun()
    command = [sys.executable, "-m", "app", "trace", *arguments]
    started = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    watch: StageWatch | None = None
    for line in process.stdout:
        line = line.rstrip("\n")
        print(f"  {line}", flush=True)
        if STAGE_START.match(line):
            watch = StageWatch(psutil.Process(process.pid), pgdata)
        elif found := STAGE_TIME.match(line):
            measured.stages[found.group(1)] = float(found.group(2))
            if watch:
                measured.loads[found.group(1)] = watch.stop()
                watch = None
    if process.wait() != 0:
        raise SystemExit(f"rocqcot trace failed with exit status {process.returncode}")
    measured.wall = time.monotonic() - started
    return measured


class StageWatch:
    """The machine's cores, its load and rocqcot's processes from a stage's start to its end."""

    def __init__(self, root: psutil.Process, pgdata: Path) -> None:
        self.before, self.started = cpu_times(), time.monotonic()
        self.sampler = Sampler(root, pgdata)
        self.thread = self.sampler.start()

    def stop(self) -> StageLoad:
        self.sampler.stop(self.thread)
        after, seconds = cpu_times(), time.monotonic() - self.started
        cores = [
            (b1 - b0) / max(t1 - t0, 1)
            for (b0, t0), (b1, t1) in zip(self.before, after, strict=True)
        ]
        busy = {kind: used / max(seconds, 1e-9) for kind, used in self.sampler.seconds.items()}
        return StageLoad(cores, self.sampler.loads, busy)


def card_facts(out: Path) -> dict[str, Any]:
    """The front matter of the (one) trace card in `out`."""
    card = next(out.glob("*_card.md"))
    return yaml.safe_load(card.read_text(encoding="utf-8").split("---\n")[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("library", nargs="?", type=Path, help="a library [MathComp's]")
    parser.add_argument("--prefix", help="its logical prefix [its folder's]")
    parser.add_argument("--full", action="store_true", help="all of MathComp, not ssreflect")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", type=Path, help="trace into this folder and keep it")
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    library = library_arguments(args.full, args.library, args.prefix)
    source, prefix = Path(library["source"]).resolve(), library["prefix"]
    arguments = ["--max-workers", str(args.jobs), *(["--full"] if args.full else [])]
    if args.library:
        arguments += ["--input", str(source), "--prefix", prefix]
    with tempfile.TemporaryDirectory() as tmp:
        home = args.keep.resolve() if args.keep else Path(tmp)
        home.mkdir(parents=True, exist_ok=True)
        home.chmod(0o755)  # the embedded server runs as its own user when we are root
        print(f"plain build of {source} (coq_makefile + make -j{args.jobs}) …", flush=True)
        plain_s = plain(toolchain, source, home / "plain", prefix, args.jobs)
        env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
        env |= {"ROCQCOT_HOME": str(home / "rocqcot"), "PYTHONUNBUFFERED": "1"}
        print("rocqcot trace from an empty ROCQCOT_HOME …", flush=True)
        ours = run_trace([*arguments, "--out", str(home / "trace")], env, home / "rocqcot/pgdata")
        facts = card_facts(home / "trace")
        subprocess.run([sys.executable, "-m", "app", "db", "stop"], cwd=ROOT, env=env, check=True)
    report(plain_s, ours, facts, args.jobs)


def report(plain_s: float, ours: TraceRun, facts: dict[str, Any], jobs: int) -> None:
    theorems, haves = facts["trace"]["theorems"], facts["trace"]["haves"]
    failed = theorems["failed"] + haves["failed"]
    print(f"coq_makefile + make -j{jobs}: {plain_s:.1f} s")
    for stage, seconds in ours.stages.items():
        print(f"{stage}: {seconds:.1f} s ({seconds / plain_s:.2f}x the plain build)")
        if (load := ours.loads.get(stage)) is None:
            continue  # the export says when it ends only
        cores = ", ".join(f"cpu{i} {100 * share:.0f}%" for i, share in enumerate(load.cores))
        loads = load.loads or [0.0]
        kinds = ", ".join(f"{kind} {load.ours.get(kind, 0.0):.2f}" for kind in KINDS)
        print(f"  whole machine: busy {cores}; load average (1 min) mean "
              f"{sum(loads) / len(loads):.2f}, max {max(loads):.2f}; "
              f"cores busy of {jobs}: {kinds}")  # fmt: skip
    print(f"rocqcot trace in all: {ours.wall:.1f} s")
    print(f"theorems: {theorems}; haves: {haves}; proof steps {facts['trace']['proof_steps']}")
    for failure in facts["failures"][:10]:
        print(f"  {failure['count']:5d}  step {failure['stage']}: {failure['reason']}")
    print(f"RESULT trace_over_make={ours.wall / plain_s:.2f} theorems={theorems['traced']} "
          f"failed={failed}")  # fmt: skip


if __name__ == "__main__":
    main()
