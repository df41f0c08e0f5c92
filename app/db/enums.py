"""Stage and status: Postgres enums mirrored by Python enums."""

from __future__ import annotations

import enum


class Status(enum.StrEnum):
    """Where a row is within its current stage."""

    pending = "pending"
    running = "running"
    done = "done"
    failed = "failed"


class Stage(enum.StrEnum):
    """The pipeline stages, in order; a row's `stage` is the last one it entered.

    The step number of each stage is `STEP_OF[stage]`. `probe` is a no-op stage over the
    `probes` table that checks the worker machinery (tests, `bench/workers.py`).
    """

    build = "build"
    extract = "extract"
    haves = "haves"
    select = "select"
    evaluate = "evaluate"
    cot = "cot"
    docstring = "docstring"
    search = "search"
    repair = "repair"
    best_query = "best_query"
    filter = "filter"
    split = "split"
    probe = "probe"


STEP_OF: dict[Stage, int] = {
    Stage.build: 0,
    Stage.extract: 1,
    Stage.haves: 2,
    Stage.select: 3,
    Stage.evaluate: 4,
    Stage.cot: 5,
    Stage.docstring: 6,
    Stage.search: 7,
    Stage.repair: 7,
    Stage.best_query: 8,
    Stage.filter: 9,
    Stage.split: 10,
}
