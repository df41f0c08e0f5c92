"""Step 4 with `--all` against `coqc` of the same files, measured in one run.

Run: `python -m bench.evaluate [--rocq-bin DIR] [--files seq.v div.v …] [--max-workers N]
[--trace] [--profile]`
(the database's toolchain) against a database
where steps 0 and 1 ran (`ROCQCOT_HOME=/tmp/rc_ssr rocqcot run` builds MathComp's ssreflect
part in about a minute; point `ROCQCOT_HOME` or `DATABASE_URL` at it). Every theorem of the
chosen files (default: all files with theorems) is reset and evaluated again by the step's own
workers, after the dictionary is built; each file is then compiled by `coqc` with the same load
path (into a temporary folder), one after the other. The step-4 rows of those files are
replaced: run it on a database you can spare. Ratio = the whole step (dictionary and workers)
over all `coqc` runs, wall time; with `--max-workers 1` both sides use one core. The last line
is `RESULT evaluate_over_coqc=<ratio> theorems=<evaluated> failed=<failed>`. With `--trace`,
the files' tags are dropped too, so step 4 tags the haves in its walk, as in `rocqcot trace`.
With `--profile`, one worker runs the stage's functions in this thread under cProfile and
prints the time spent waiting for Rocq against the step's own Python work, the time of each
phase of the step (tagging, have statements, …) and the hot spots.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import re
import subprocess
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from app import dictionary
from app.db import queue
from app.db.engine import ensure_schema, session_factory
from app.db.enums import Stage, Status
from app.db.models import Have, Library, ProofStep, SourceFile, Theorem
from app.evaluator import ReplayFailed
from app.rocq.toolchain import Toolchain
from app.stages import StageSpec
from app.steps import step_4
from bench.rocq import add_rocq_bin, chosen
from workers.runner import run_workers


def chosen_files(names: list[str]) -> list[tuple[int, str, str, str]]:
    """(id, path, output folder, prefix) of the files to measure, in dependency order."""
    query = (
        sa.select(SourceFile.id, SourceFile.path, Library.output_path, Library.logical_prefix)
        .join(Library, SourceFile.library_id == Library.id)
        .where(sa.exists().where(Theorem.file_id == SourceFile.id))
        .order_by(SourceFile.dependency_order)
    )
    with session_factory()() as session:
        rows = [tuple(row) for row in session.execute(query)]
    unknown = sorted(set(names) - {row[1] for row in rows})
    if unknown:
        known = ", ".join(row[1] for row in rows[:3])
        raise SystemExit(
            f"no file with theorems at {', '.join(unknown)} in the library (paths such as {known})"
        )
    return [row for row in rows if not names or row[1] in names]


def reset(file_ids: list[int], untag: bool) -> int:
    """Drop the files' step-4 rows (and their tags if `untag`: step 4 then tags them, as in
    `rocqcot trace`) and queue their theorems again; returns how many."""
    with session_factory().begin() as session:
        theorems = sa.select(Theorem.id).where(Theorem.file_id.in_(file_ids))
        session.execute(sa.delete(ProofStep).where(ProofStep.theorem_id.in_(theorems)))
        session.execute(
            sa.delete(Theorem).where(Theorem.file_id.in_(file_ids), Theorem.parent_id.is_not(None))
        )
        queued = (
            sa.update(Theorem)
            .where(Theorem.file_id.in_(file_ids), Theorem.parent_id.is_(None))
            .values(stage=Stage.evaluate, status=Status.pending, attempts=0, error=None)
            .values(evaluation=None)
        )
        if untag:
            session.execute(sa.delete(Have).where(Have.theorem_id.in_(theorems)))
            queued = queued.values(tagged_proof=None, tactics=None)
        return session.execute(queued).rowcount


def evaluate(workers: int, profile: bool) -> float:
    """The step: dictionary, then the workers until no row is ready (or, to profile, the
    stage's own functions on each row in this thread); wall seconds."""
    start = time.perf_counter()
    with session_factory().begin() as session:
        dictionary.build_dictionary(session)
    if profile:
        profiled(step_4.SPEC)
    else:
        run_workers([step_4.SPEC], concurrency=workers)
    return time.perf_counter() - start


def profiled(spec: StageSpec) -> None:
    """Run the stage's load, run and store on every ready row under cProfile, then print where
    the time went: waiting for Rocq (`poll`) against the Python work of the step."""
    rows = sa.select(Theorem.id).where(queue.ready_rows(spec)).order_by(*spec.order_by())
    profiler = cProfile.Profile()
    with session_factory()() as session:
        ids = list(session.execute(rows, {"worker_name": "profile"}).scalars())
    assert spec.resources is not None
    with spec.resources() as resource:
        profiler.enable()
        for row_id in ids:
            with session_factory().begin() as session:
                item = spec.load(session, row_id)
            try:
                result = spec.call(item, resource)
            except ReplayFailed:
                continue
            with session_factory().begin() as session:
                spec.store(session, row_id, result)
                done = sa.update(Theorem).where(Theorem.id == row_id).values(status=Status.done)
                session.execute(done)
        profiler.disable()
    profiler.dump_stats(Path(tempfile.gettempdir()) / "rocqcot-step4.prof")
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())  # type: ignore[attr-defined]
    waiting = sum(
        entry[2]
        for (_, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
        if name == "<method 'poll' of 'select.poll' objects>"
    )
    print(
        f"profile: {total:.1f} s in all, {waiting:.1f} s waiting for Rocq, "
        f"{total - waiting:.1f} s of Python ({100 * (total - waiting) / max(total, 1e-9):.0f} %)"
    )
    for phase, seconds in phases(stats):
        print(f"  {phase:<44} {seconds:8.1f} s")
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumtime").print_stats("app/", 25)


PHASES = {
    "step_4.py:_tag": "tagging the haves (step 2's walk)",
    "evaluator.py:_replay": "chains replayed, with their goals",
    "have_statement.py:state_have": "stating the haves",
    "evaluator.py:_in_place": "haves evaluated in their parent's walk",
    "evaluator.py:_sub": "haves evaluated after their parent's Qed",
    "chain_names.py:prefetch": "types of the names (prefetched)",
    "chain_names.py:named": "names of each chain",
    "step_4.py:store": "writing the results",
}
"""Functions of step 4 whose whole time (their callees' included) the profile reports, each
as the phase it is. Phases nest: the chains replayed include the haves stated and evaluated
in place, and the names of each chain."""


def phases(stats: pstats.Stats) -> list[tuple[str, float]]:
    """The seconds spent in each phase (`PHASES`), callees included; a recursive call counted
    once."""
    found = {}
    for (file, _, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        key = f"{Path(file).name}:{function}"
        if key in PHASES:
            found[PHASES[key]] = entry[3]
    return [(phase, found.get(phase, 0.0)) for phase in PHASES.values()]


def compile_all(toolchain: Toolchain, files: list[tuple[int, str, str, str]]) -> float:
    """`coqc` of each file in turn, with the library's load path; wall seconds."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        for file_id, path, output, prefix in files:
            target = Path(out) / str(file_id) / (Path(path).name + "o")  # coqc wants the name
            target.parent.mkdir()
            arguments = ("-R", output, prefix, "-o", str(target), str(Path(output) / path))
            subprocess.run(toolchain.command("coqc", *arguments), check=True, capture_output=True)
    return time.perf_counter() - start


def outcome(file_ids: list[int]) -> tuple[int, int, collections.Counter[str]]:
    """Theorems evaluated, failed, and the failures by reason."""
    with session_factory()() as session:
        rows = session.execute(
            sa.select(Theorem.status, Theorem.error).where(
                Theorem.file_id.in_(file_ids), Theorem.parent_id.is_(None)
            )
        ).all()
    reasons = collections.Counter(_reason(error) for status, error in rows if status == "failed")
    done = sum(1 for status, _ in rows if status == Status.done)
    return done, sum(reasons.values()), reasons


def _reason(error: str | None) -> str:
    """An error without its theorem and chain, so that alike failures count together."""
    text = (error or "").split("`: ", 1)[-1]
    return re.sub(r"\s+", " ", text)[:120]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_rocq_bin(parser)
    parser.add_argument("--files", nargs="*", default=[], help="paths in the library")
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument(
        "--trace", action="store_true", help="drop the tags too: step 4 tags, as in a trace"
    )
    parser.add_argument(
        "--profile", action="store_true", help="one worker in this thread, under cProfile"
    )
    args = parser.parse_args()
    toolchain = chosen(args.rocq_bin)
    ensure_schema()
    files = chosen_files(args.files)
    ids = [file_id for file_id, *_ in files]
    queued = reset(ids, args.trace)
    print(f"{len(files)} files, {queued} theorems queued")
    if not queued:
        raise SystemExit("no theorem to evaluate: run steps 0 to 2 on the library first")
    ours = evaluate(args.max_workers, args.profile)
    coqc = compile_all(toolchain, files)
    done, failed, reasons = outcome(ids)
    print(f"coqc {coqc:.1f} s, step 4 --all {ours:.1f} s ({args.max_workers} workers)")
    print(f"evaluated {done} of {queued} ({100 * done / max(queued, 1):.2f} %), {failed} failed")
    for reason, count in reasons.most_common(10):
        print(f"  {count:5d}  {reason}")
    print(f"RESULT evaluate_over_coqc={ours / coqc:.3f} theorems={done} failed={failed}")


if __name__ == "__main__":
    main()
