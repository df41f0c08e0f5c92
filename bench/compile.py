"""Compare `app.rocq.build` with a plain `make -jN` of the same files.

Copies a library's `.v` files twice into a work directory, compiles one copy with a Makefile
of plain `coqc -R . <prefix> file.v` rules (the order coqdep gives) and the other with
`build()`, and prints wall-clock and child CPU seconds of each. The machine may be shared:
CPU seconds show whether a difference in wall time is the build's own overhead.

    python -m bench.compile --jobs 2 [--rocq-bin DIR] [--source DIR] [--prefix mathcomp]
        [--workdir DIR]

The source defaults to the toolchain's MathComp; the work directory must be one the toolchain
sees (under /tmp, the default, for a toolchain in a Debian root).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from app.rocq.build import build, default_jobs
from app.rocq.dependencies import dependencies, source_files
from app.rocq.toolchain import Toolchain
from bench.rocq import add_rocq_bin, chosen


def copy_sources(source: Path, target: Path) -> None:
    """A fresh copy of the library's `.v` files only."""
    shutil.rmtree(target, ignore_errors=True)
    for file in source_files(source):
        (target / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source / file, target / file)


def makefile(toolchain: Toolchain, root: Path, prefix: str) -> str:
    """Make rules compiling every file after its requirements, as coq_makefile would."""
    graph = dependencies(root, prefix, toolchain=toolchain)
    vo = [file.removesuffix(".v") + ".vo" for file in graph.order]
    coqc = toolchain.executable("coqc")
    lines = [f"all: {' '.join(vo)}", "%.vo: %.v", f"\t{coqc} -R . {prefix} $<"]
    for file in graph.order:
        deps = " ".join(dep.removesuffix(".v") + ".vo" for dep in sorted(graph.requires[file]))
        lines.append(f"{file.removesuffix('.v')}.vo: {file} {deps}")
    return "\n".join(lines) + "\n"


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and its finished children."""
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, who))


def measured(run: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock seconds and CPU seconds (this process and its children) of a call."""
    cpu, started = cpu_seconds(), time.monotonic()
    run()
    return time.monotonic() - started, cpu_seconds() - cpu


def main() -> None:
    """Run both builds and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("--source", type=Path, help="the library [the toolchain's MathComp]")
    parser.add_argument("--prefix", default="mathcomp")
    parser.add_argument("--jobs", type=int, default=default_jobs())
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.mkdtemp(prefix="bench-")))
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    source = args.source or toolchain.default_library()
    make_root, build_root = args.workdir / "make", args.workdir / "rocqcot"
    copy_sources(source, make_root)
    copy_sources(source, build_root)
    (make_root / "Makefile").write_text(makefile(toolchain, make_root, args.prefix))
    make = ["make", "-s", f"-j{args.jobs}", "-C", str(make_root)]
    make_wall, make_cpu = measured(lambda: subprocess.run(make, check=True, capture_output=True))
    print(f"make -j{args.jobs}: {make_wall:.1f} s wall, {make_cpu:.1f} s CPU", flush=True)
    result = None

    def ours() -> None:
        nonlocal result
        result = build(build_root, args.prefix, jobs=args.jobs)

    build_wall, build_cpu = measured(ours)
    assert result is not None
    statuses = {str(r.status) for r in result.files.values()}
    print(f"build(jobs={args.jobs}): {build_wall:.1f} s wall, {build_cpu:.1f} s CPU, {statuses}")
    print(f"ratio: {build_wall / make_wall:.3f} wall, {build_cpu / make_cpu:.3f} CPU")
    rerun_wall, _ = measured(lambda: build(build_root, args.prefix, jobs=args.jobs))
    print(f"rerun (all unchanged): {rerun_wall:.1f} s")


if __name__ == "__main__":
    main()
