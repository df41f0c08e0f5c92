"""`rocqcot trace`: the full trace of a library as a product, like LeanDojo's traced
repositories: steps 0, 1 and 4 `--all` on every theorem (no selection, no LLM), then one
JSONL file per library with its card (`app.exports.trace`). Step 4 tags each theorem's haves
(step 2's work) in the walk that evaluates it, so each file's proofs are replayed once after
the build.

It rides on the steps' own incremental work: a second run after a change rebuilds the changed
files, re-extracts and re-tags their theorems, evaluates only those again, then re-exports (a
file whose bytes are unchanged is not rewritten). Each stage's wall time is printed, so that
`bench/trace.py` can read it.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from app import config
from app.db import engine as db
from app.options import FullOption, InputOption, PrefixOption, RocqBin, use_rocq
from app.plural import plural
from app.steps import step_0, step_1, step_4


def default_out() -> Path:
    """Where the trace goes without `--out`: `$ROCQCOT_HOME/trace`."""
    return config.rocqcot_home() / "trace"


def command(
    full: FullOption = False,
    source: InputOption = None,
    prefix: PrefixOption = None,
    max_workers: Annotated[
        int | None, typer.Option(min=1, help="parallel Rocq processes [cores]")
    ] = None,
    pet_timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds one Rocq call may take (step 4)")
    ] = step_4.DEFAULT_TIMEOUT,
    out: Annotated[
        Path | None, typer.Option(help="the trace's folder [$ROCQCOT_HOME/trace]")
    ] = None,
    rocq_bin: RocqBin = None,
) -> None:
    """Steps 0, 1 and 4 --all (which tags the haves, step 2's work, in the same walk) on
    every theorem of the library, then its trace: one JSONL file per library
    (`<library>.jsonl`) and its card (`<library>_card.md`)."""
    from app.exports.trace import write_traces

    toolchain = use_rocq(rocq_bin)
    typer.echo(f"toolchain: {toolchain.summary()}")
    library = step_0.library_arguments(full, source, prefix)
    workers = max_workers or os.cpu_count() or 1
    stages: list[tuple[str, Callable[[], None]]] = [
        ("step 0", functools.partial(step_0.command, **library, output=None, jobs=workers)),
        ("step 1", step_1.command),
        ("step 4", functools.partial(step_4.command, dictionary=None, max_workers=workers,
                                     pet_timeout=pet_timeout, all_=True)),
    ]  # fmt: skip
    for name, call in stages:
        timed(name, call)
    folder = out or default_out()
    started = time.monotonic()
    with db.session_factory()() as session:
        written = write_traces(session, folder)
    seconds = time.monotonic() - started
    for info in written:
        theorems, haves = info.counts.theorems, info.counts.haves
        typer.echo(
            f"trace: {info.library}: {plural(info.records, 'record')} in {info.path} "
            f"({theorems['traced']} theorems traced, {theorems['failed']} failed; "
            f"{haves['traced']} haves traced, {haves['failed']} failed); card {info.card}"
        )
    typer.echo(f"trace: export took {seconds:.1f} s")


def timed(name: str, call: Callable[[], None]) -> None:
    """Run one stage and say when it starts and how long it took."""
    typer.echo(f"trace: {name} started")
    started = time.monotonic()
    call()
    typer.echo(f"trace: {name} took {time.monotonic() - started:.1f} s")
