"""Step 2 on a whole library against a plain `make -jN` of the same files, in one run.

Needs a database where steps 0 and 1 are done (`ROCQCOT_HOME` or `DATABASE_URL`, e.g. after
`rocqcot step 0` and `rocqcot step 1`, about 10 minutes for MathComp on 2 cores). Step 2 is
reset for every theorem of that database (tagged proofs and haves are deleted), so that it
runs in full. The library's built copy (comment-stripped `.v` files) is copied to a work
folder and compiled by a Makefile of plain `coqc -R . <prefix> file.v` rules; then
`rocqcot step 2 --max-workers N` runs. Wall time is what counts; CPU seconds (this process
and its children) are printed too because the machine may be shared. Only the library's own
files are compiled (Rocq's SSReflect files that step 0 records beside them, `from_rocq`, are
built against the installed ones by both sides). `--rocq-bin` must name the database's toolchain.

    python bench/haves.py [--rocq-bin DIR] [--jobs 2] [--workdir DIR]

The last line is `RESULT step2_over_make=<ratio> haves=<count> recheck_rate=<rate>`, the rate
being theorems with a tagged have over those plus the failed ones.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)  # not `bench/`: its `select.py` would shadow the standard library's

import argparse  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from app.db import engine as db  # noqa: E402
from app.db.enums import Stage, Status  # noqa: E402
from app.db.models import Have, Library, SourceFile, Theorem  # noqa: E402
from app.rocq.dependencies import dependencies  # noqa: E402
from app.rocq.toolchain import Toolchain  # noqa: E402
from app.steps.step_2 import have_summary  # noqa: E402
from bench.rocq import add_rocq_bin, chosen  # noqa: E402


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


def measured(action: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of a call."""
    cpu, started = cpu_seconds(), time.monotonic()
    action()
    return time.monotonic() - started, cpu_seconds() - cpu


def library() -> tuple[Path, str, list[str]]:
    """The built copy of the database's library, its prefix and its own files (the rows of
    Rocq's files that step 0 built beside it, `from_rocq`, are not in that copy)."""
    with db.session_factory()() as session:
        output, prefix = session.execute(
            sa.select(Library.output_path, Library.logical_prefix)
        ).one()
        own = sa.select(SourceFile.path).where(SourceFile.from_rocq.is_(False))
        files = session.execute(own).scalars().all()
    return Path(output), prefix, sorted(files)


def reset_step_2() -> None:
    """Every top-level theorem back to done with step 1, without tags or haves."""
    with db.session_factory().begin() as session:
        session.execute(sa.delete(Have))
        session.execute(
            sa.update(Theorem)
            .where(Theorem.parent_id.is_(None))
            .values(
                stage=Stage.extract,
                status=Status.done,
                attempts=0,
                error=None,
                tagged_proof=None,
                lease_until=None,
                worker=None,
            )
        )


def makefile(toolchain: Toolchain, root: Path, prefix: str) -> str:
    """Make rules compiling every file after the files it requires, as coq_makefile would."""
    graph = dependencies(root, prefix, toolchain=toolchain)
    vo = [file.removesuffix(".v") + ".vo" for file in graph.order]
    coqc = toolchain.executable("coqc")
    lines = [f"all: {' '.join(vo)}", "%.vo: %.v", f"\t{coqc} -R . {prefix} $<"]
    for file in graph.order:
        deps = " ".join(dep.removesuffix(".v") + ".vo" for dep in sorted(graph.requires[file]))
        lines.append(f"{file.removesuffix('.v')}.vo: {file} {deps}")
    return "\n".join(lines) + "\n"


def plain_build(
    toolchain: Toolchain, source: Path, files: list[str], prefix: str, target: Path, jobs: int
) -> None:
    """Copy the files and compile them with `make -jN`."""
    shutil.rmtree(target, ignore_errors=True)
    for file in files:
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / file, target / file)
    (target / "Makefile").write_text(makefile(toolchain, target, prefix))
    make = ["make", "-s", f"-j{jobs}", "-C", str(target)]
    subprocess.run(make, check=True, capture_output=True)


def step_2(jobs: int) -> None:
    command = [sys.executable, "-m", "app", "step", "2", "--max-workers", str(jobs)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(command, check=True, capture_output=True, text=True, env=env)
    print(done.stdout.strip(), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("--jobs", type=int, default=2, help="make -jN and --max-workers N")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-")))
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    db.ensure_schema()
    source, prefix, files = library()
    target = args.workdir / "make"
    make_wall, make_cpu = measured(
        lambda: plain_build(toolchain, source, files, prefix, target, args.jobs)
    )
    print(f"make -j{args.jobs}: {make_wall:.1f} s wall, {make_cpu:.1f} s CPU", flush=True)
    reset_step_2()
    step_wall, step_cpu = measured(lambda: step_2(args.jobs))
    print(f"step 2 --max-workers {args.jobs}: {step_wall:.1f} s wall, {step_cpu:.1f} s CPU")
    with db.session_factory()() as session:
        summary = have_summary(session)
    tagged, failed = summary["theorems"], summary["failed"]
    rate = tagged / (tagged + failed) if tagged + failed else 1.0
    print(f"theorems with tagged haves {tagged}, haves {summary['haves']}, failed {failed}")
    print(f"ratio: {step_wall / make_wall:.3f} wall, {step_cpu / make_cpu:.3f} CPU")
    print(
        f"RESULT step2_over_make={step_wall / make_wall:.3f} haves={summary['haves']} "
        f"recheck_rate={rate:.4f}"
    )


if __name__ == "__main__":
    main()
