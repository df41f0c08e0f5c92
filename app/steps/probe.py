"""The `probe` stage: a no-op over the `probes` table that exercises the worker machinery.

Tests and `bench/workers.py` use it to check crash safety and throughput without Rocq. A
probe's payload may ask the stage to sleep (`sleep` seconds) and to append its id to a log
file (`log`), so a test can count how often the stage function really ran.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Probe
from app.stages import StageSpec, register


@dataclass(frozen=True)
class ProbeInput:
    id: int
    payload: dict[str, Any]


def load(session: Session, row_id: int) -> ProbeInput:
    payload = session.execute(sa.select(Probe.payload).where(Probe.id == row_id)).scalar_one()
    return ProbeInput(row_id, payload)


def run(item: ProbeInput) -> dict[str, Any]:
    """Echo the payload, after the requested sleep and log line."""
    if log_path := item.payload.get("log"):
        with open(log_path, "a") as log:
            log.write(f"{item.id} {os.getpid()}\n")
    time.sleep(item.payload.get("sleep", 0))
    if item.payload.get("fail"):
        raise ValueError(f"probe {item.id} asked to fail")
    return {"echo": item.payload}


def store(session: Session, row_id: int, result: dict[str, Any]) -> None:
    """Write the result; `writes` counts how many times a result was written for the row."""
    session.execute(
        sa.update(Probe).where(Probe.id == row_id).values(result=result, writes=Probe.writes + 1)
    )


def add_probes(session: Session, payloads: list[dict[str, Any]]) -> None:
    """Queue probe rows, pending in the probe stage."""
    session.execute(
        sa.insert(Probe),
        [{"payload": p, "stage": Stage.probe, "status": Status.pending} for p in payloads],
    )


SPEC = register(
    StageSpec(
        stage=Stage.probe,
        model=Probe,
        input_stage=None,
        load=load,
        run=run,
        store=store,
        batch_size=int(os.environ.get("ROCQCOT_PROBE_BATCH", "1")),
        lease_seconds=float(os.environ.get("ROCQCOT_PROBE_LEASE", "30")),
    )
)
