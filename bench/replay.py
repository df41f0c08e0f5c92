"""Replay library files sentence by sentence with goals after each, against `coqc`.

Run: `python -m bench.replay [--rocq-bin DIR] [--files FILE.v ...]`. Files are relative to the
toolchain's MathComp (default: ssreflect/div.v and ssreflect/seq.v) or, on a toolchain without
MathComp (Rocq 9.2 in Debian forky), to its standard library (default: Lists/ListDec.v and
Sorting/Permutation.v); absolute paths work too. Each file is copied to a temporary folder that
Rocq sees (its requirements stay installed), compiled by the toolchain's `coqc`, then replayed
in a `RocqSession` of the same toolchain, fetching the goals after every sentence. Wall time is
what the pipeline pays; CPU time (coqc, or coqidetop plus this process) is printed too because
it stays steady on a busy machine; `--repeat N` keeps the best of N runs. The last line is
`RESULT replay_over_coqc=<total replay wall time / total coqc wall time>`.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from app.rocq.positions import SourceText
from app.rocq.sentences import split_sentences
from app.rocq.session import RocqSession
from app.rocq.toolchain import Toolchain
from bench.rocq import add_rocq_bin, chosen, stdlib_root

MATHCOMP_FILES = ("ssreflect/div.v", "ssreflect/seq.v")
STDLIB_FILES = ("Lists/ListDec.v", "Sorting/Permutation.v")
T = TypeVar("T")


@dataclass(frozen=True, order=True)
class Timing:
    """Wall and CPU seconds of one run (CPU: this process and its waited-for children)."""

    wall: float
    cpu: float


def _cpu() -> float:
    """CPU seconds used so far by this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def measure(action: Callable[[], T]) -> tuple[Timing, T]:
    """Time an action; its result."""
    wall, cpu = time.perf_counter(), _cpu()
    result = action()
    return Timing(time.perf_counter() - wall, _cpu() - cpu), result


def inputs(toolchain: Toolchain, names: list[str]) -> list[Path]:
    """The files to replay: given ones (relative to the toolchain's MathComp, or to its
    standard library when it has no MathComp), else the defaults of that library."""
    mathcomp = toolchain.default_library()
    root, defaults = (
        (mathcomp, MATHCOMP_FILES) if mathcomp.is_dir() else (stdlib_root(toolchain), STDLIB_FILES)
    )
    return [root / name for name in names or defaults]


def compile_with_coqc(toolchain: Toolchain, file: Path, out_dir: Path) -> None:
    """Compile `file` with the toolchain's `coqc` (its .vo goes to `out_dir`)."""
    target = out_dir / f"{file.stem}.vo"
    command = toolchain.command("coqc", "-o", str(target), str(file))
    subprocess.run(command, check=True, capture_output=True)


def replay(toolchain: Toolchain, file: Path) -> tuple[int, int]:
    """Replay every sentence with the goals after each: sentence and goal counts."""
    source = SourceText(file.read_text(encoding="utf-8"))
    ends = [end for _, end in split_sentences(source.data)]
    goals = 0
    with RocqSession(toolchain=toolchain) as session:
        session.start(file)
        for end in ends:
            state = session.at(file, source.byte_position(end))
            goals += len(session.goals(state).foreground)
    return len(ends), goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("--files", nargs="*", default=[], help="files of the library to replay")
    parser.add_argument("--repeat", type=int, default=1, help="keep the best of N runs of each")
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    totals = {"coqc": Timing(0, 0), "replay": Timing(0, 0)}
    with tempfile.TemporaryDirectory() as work:
        out_dir, copies = Path(work) / "out", Path(work) / "src"
        out_dir.mkdir()
        copies.mkdir()
        for original in inputs(toolchain, args.files):
            file = Path(shutil.copy(original, copies / original.name))
            coqc = min(
                measure(lambda f=file: compile_with_coqc(toolchain, f, out_dir))[0]
                for _ in range(args.repeat)
            )
            runs = [measure(lambda f=file: replay(toolchain, f)) for _ in range(args.repeat)]
            ours, counts = min(t for t, _ in runs), runs[0][1]
            for key, timing in (("coqc", coqc), ("replay", ours)):
                totals[key] = Timing(totals[key].wall + timing.wall, totals[key].cpu + timing.cpu)
            print(
                f"{file.name}: {counts[0]} sentences, {counts[1]} goals shown; "
                f"coqc {coqc.wall:.2f} s (cpu {coqc.cpu:.2f}), "
                f"replay {ours.wall:.2f} s (cpu {ours.cpu:.2f}), ratio {ours.wall / coqc.wall:.2f}"
            )
    coqc, ours = totals["coqc"], totals["replay"]
    print(f"total: coqc {coqc.wall:.2f} s, replay {ours.wall:.2f} s")
    print(f"cpu: coqc {coqc.cpu:.2f} s, replay {ours.cpu:.2f} s, ratio {ours.cpu / coqc.cpu:.3f}")
    print(f"RESULT replay_over_coqc={ours.wall / coqc.wall:.3f}")


if __name__ == "__main__":
    main()
