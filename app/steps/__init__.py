"""The pipeline's steps, one module each; importing this package registers their stages."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class StepInfo:
    number: int
    title: str
    issue: int
    """The issue that builds it, named when the step is not there yet."""


STEPS = [
    StepInfo(0, "copy, strip comments and build the library", 4),
    StepInfo(1, "extract every theorem", 4),
    StepInfo(2, "tag the haves and re-check the proofs", 5),
    StepInfo(3, "select diverse theorems with BM25", 6),
    StepInfo(4, "replay and annotate the selected proofs; the dictionary", 7),
    StepInfo(5, "write the chains of thought", 8),
    StepInfo(6, "write missing docstrings", 8),
    StepInfo(7, "repair failed searches", 9),
    StepInfo(8, "keep the best query", 9),
    StepInfo(9, "keep the CoTs whose searches all succeed", 10),
    StepInfo(10, "split the CoTs into training examples", 10),
]


def step_module(number: int) -> ModuleType | None:
    """The module of step N (importing it registers its stage), or None if not built yet."""
    try:
        return importlib.import_module(f"app.steps.step_{number}")
    except ModuleNotFoundError as missing:
        if missing.name != f"app.steps.step_{number}":
            raise
        return None


def register_all() -> None:
    """Import every stage module so that each registers its stage."""
    importlib.import_module("app.steps.probe")
    for step in STEPS:
        step_module(step.number)
