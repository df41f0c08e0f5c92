"""The least any trace built on a separate build can cost, against that build, in one run.

A trace's proof states come from an interactive Rocq (`coqidetop`), which cannot write the
compiled files (`.vo`, `.vos`) that later files require. So a trace pays a build, then at least
one replay of every sentence with the goals after it (what `bench/replay.py` measures on two
files), whatever it records besides. This benchmark measures, in one run, on a library
(MathComp's, by default):

- the plain build: `coq_makefile` + `make -jN`, as `bench/trace.py` times it;
- then, on every file with N files at a time: `coqc`; `coqc -vos`, a build that skips opaque
  proofs (which the replay checks anyway); the replay with goals after every sentence, in a
  `RocqSession` (`bench.replay.replay`); and `coqc` of the file with `Show.` after every proof
  sentence, which prints the goals from the build itself (proof sentences found by keywords:
  a file where that guess fails is named and left out of that figure). Each file is a copy
  compiled against the installed library, so files are independent and every phase runs the
  same jobs on the same cores.

The last line is `RESULT floor_over_make=<1 + replay / make> vos_floor_over_make=<coqc -vos /
coqc + replay / make> replay_over_make=<replay / make> show_over_coqc=<coqc printing goals / coqc>
files=<n>`. A trace that builds, then replays, cannot go below the first figure (it is
`bench.trace`'s `trace_over_make` for a trace that does nothing but fetch goals); one whose build
skipped the opaque proofs, below the second. The last is what a trace printed by the build
itself would pay for its goals.

    python -m bench.trace_floor [--rocq-bin DIR] [--jobs N]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.rocq.sentences import split_sentences
from app.rocq.state import RocqSessionError
from app.rocq.toolchain import Toolchain
from app.steps.step_0 import library_arguments
from bench.build_extract import plain
from bench.replay import compile_with_coqc, replay
from bench.rocq import add_rocq_bin, chosen


def compile_vos(toolchain: Toolchain, file: Path, out_dir: Path) -> None:
    """Compile `file` with `coqc -vos`: its statements and definitions, not its opaque proofs."""
    target = out_dir / f"{file.stem}.vos"
    command = toolchain.command("coqc", "-vos", "-o", str(target), str(file))
    subprocess.run(command, check=True, capture_output=True)


_STATEMENT = re.compile(
    rb"(#\[[^\]]*\]\s*)*((Local|Global|Polymorphic|Monomorphic)\s+)*"
    rb"(Lemma|Theorem|Fact|Remark|Corollary|Proposition|Property|Goal|Next Obligation)\b"
)
_PROOF_END = re.compile(rb"(Qed|Defined|Admitted|Abort|Save)\b")


def with_goals_shown(data: bytes) -> bytes:
    """The file with `Show.` after its statements and every sentence of their proofs."""
    out, previous, in_proof = [], 0, False
    for start, end in split_sentences(data):
        out.append(data[previous:end])
        previous = end
        sentence = data[start:end]
        if in_proof and _PROOF_END.match(sentence):
            in_proof = False
        elif in_proof or _STATEMENT.match(sentence) or sentence == b"Proof.":
            in_proof = True
            out.append(b" Show.")
    out.append(data[previous:])
    return b"".join(out)


def compile_showing_goals(toolchain: Toolchain, file: Path, out_dir: Path) -> None:
    """Compile a copy of `file` that prints its goals (`with_goals_shown`)."""
    shown = out_dir / file.name
    shown.write_bytes(with_goals_shown(file.read_bytes()))
    command = toolchain.command("coqc", str(shown))
    subprocess.run(command, check=True, capture_output=True)


def copies(library: Path, work: Path) -> list[Path]:
    """Copies of the library's files, largest first so that the jobs end together."""
    copied = []
    for original in sorted(library.rglob("*.v")):
        copy = work / "src" / original.relative_to(library)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copied.append(Path(shutil.copy(original, copy)))
    return sorted(copied, key=lambda f: f.stat().st_size, reverse=True)


@dataclass(frozen=True)
class Phase:
    """One action on every file: its wall time, and each file's seconds (None: it failed)."""

    wall: float
    seconds: dict[Path, float | None]


def phase(files: list[Path], jobs: int, action: Callable[[Path], object]) -> Phase:
    """Run `action` on every file, `jobs` at a time; a file where it fails is named."""

    def one(file: Path) -> float | None:
        started = time.perf_counter()
        try:
            action(file)
        except subprocess.CalledProcessError as error:
            print(f"  {file.name}: {error.stderr.decode(errors='replace')[-300:]}", flush=True)
            return None
        except RocqSessionError as error:
            print(f"  {file.name}: {error}", flush=True)
            return None
        return time.perf_counter() - started

    started = time.perf_counter()
    with ThreadPoolExecutor(jobs) as pool:
        seconds = dict(zip(files, pool.map(one, files), strict=True))
    return Phase(time.perf_counter() - started, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    library_input = library_arguments(True, None, None)
    library, prefix = Path(library_input["source"]).resolve(), library_input["prefix"]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        make = plain(toolchain, library, work / "plain", prefix, args.jobs)
        print(f"coq_makefile + make -j{args.jobs}: {make:.1f} s", flush=True)
        files = copies(library, work)

        def out_dir(file: Path, kind: str) -> Path:
            folder = work / kind / file.parent.relative_to(work / "src")
            folder.mkdir(parents=True, exist_ok=True)
            return folder

        print(f"{len(files)} files of {library}, {args.jobs} at a time", flush=True)
        coqc = phase(files, args.jobs, lambda f: compile_with_coqc(toolchain, f, out_dir(f, "vo")))
        print(f"coqc: {coqc.wall:.1f} s", flush=True)
        vos = phase(files, args.jobs, lambda f: compile_vos(toolchain, f, out_dir(f, "vos")))
        print(f"coqc -vos: {vos.wall:.1f} s ({vos.wall / coqc.wall:.2f}x)", flush=True)
        walked = phase(files, args.jobs, lambda f: replay(toolchain, f)).wall
        print(f"replay with goals: {walked:.1f} s ({walked / make:.2f}x make)", flush=True)
        shown = phase(
            files, args.jobs, lambda f: compile_showing_goals(toolchain, f, out_dir(f, "show"))
        ).seconds
        kept = [f for f, t in shown.items() if t is not None and coqc.seconds[f] is not None]
        show_ratio = sum(shown[f] for f in kept) / sum(coqc.seconds[f] for f in kept)
        print(f"coqc printing goals: {show_ratio:.2f}x coqc on {len(kept)} files", flush=True)
    print(
        f"RESULT floor_over_make={1 + walked / make:.2f} "
        f"vos_floor_over_make={vos.wall / coqc.wall + walked / make:.2f} "
        f"replay_over_make={walked / make:.2f} "
        f"show_over_coqc={show_ratio:.2f} files={len(files)}"
    )


if __name__ == "__main__":
    main()
