"""Step 2: tag the haves that open intermediate goals, rewrite their proofs, re-check them.

A `have` that states a lemma (`have x : T`, proved inline with `by`, by the rest of its chain
or by the sentences that follow) becomes a delegable sub-proof, enclosed in `(*<have>*)` …
`(*</have>*)`. Text only proposes candidates (`app.haves`); Rocq decides, in the walk of
`app.have_rewrite`.

The proof is walked in one Rocq session from the theorem's start (`app.have_tagging`). A worker
keeps its session across the theorems of a file and goes from one theorem to the next running
the proofs in between as `Admitted.`, so only the proofs with a candidate run: step 4 is the
library's one full replay. Proofs without a candidate never reach Rocq. Step 4 tags, in its own
walk, a theorem it evaluates before step 2 did (`step 4 --all` right after step 1, as in
`rocqcot trace`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from sqlalchemy.orm import Session

from app.db.enums import Stage, Status
from app.db.models import Have, Library, SourceFile, Theorem
from app.file_claims import largest_files_first
from app.have_rewrite import patience
from app.have_tagging import Tagged, store_tags, tag, untouched
from app.haves import has_candidate
from app.options import RocqBin, use_rocq
from app.rocq.positions import SourceText
from app.rocq.session import RocqSession
from app.rocq.state import RocqError, State
from app.stages import StageSpec, register

DEFAULT_TIMEOUT = 60.0
FILE_PATIENCE = 600.0
"""Seconds a sentence of the file as written may take (it compiled): the file's prefix, the
text between two theorems. `--pet-timeout` bounds proof sentences."""


# --- Plain data ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TheoremInput:
    """A theorem as step 2 reads it."""

    fqn: str
    file: str
    """The built copy of its source file (absolute path)."""
    library: str
    """The library's built copy, mapped to `prefix` (`-R library prefix`)."""
    prefix: str
    statement: str
    proof: str
    byte_start: int
    """Byte offset of the statement in the file."""
    byte_end: int
    """Byte offset just after the proof's `Qed.`."""

    @property
    def statement_end(self) -> int:
        """Byte offset just after the statement's terminator."""
        return self.byte_start + len(self.statement.encode("utf-8"))


# --- The worker's session --------------------------------------------------------------------


class FileCursor:
    """A worker's Rocq session (started on first use), kept across the theorems it takes:
    going from one theorem of a file to a later one runs only what lies between, whole proofs
    as `Admitted.` (`skip_proofs`), so only the proofs with a candidate run."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._session: RocqSession | None = None
        self._source: tuple[str, SourceText] | None = None

    @property
    def started(self) -> bool:
        """Whether a Rocq session was ever needed."""
        return self._session is not None

    @property
    def session(self) -> RocqSession:
        if self._session is None:
            self._session = RocqSession(timeout=self.timeout, skip_proofs=True)
        return self._session

    def start(self, item: TheoremInput) -> State:
        """The state just after the theorem's statement."""
        source = self._text(item.file)
        self.session.start(item.file, [(item.library, item.prefix)])
        with patience(self.session, FILE_PATIENCE):
            state = self.session.at(item.file, source.byte_position(item.statement_end))
        if state.goals is None or not state.goals.in_proof:
            raise RocqError(f"{item.fqn}: its statement does not open a proof")
        return state

    def _text(self, file: str) -> SourceText:
        if self._source is None or self._source[0] != file:
            self._source = (file, SourceText(Path(file).read_text(encoding="utf-8")))
        return self._source[1]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()


@contextlib.contextmanager
def open_cursor(timeout: float = DEFAULT_TIMEOUT) -> Iterator[FileCursor]:
    """The stage's per-worker resource."""
    cursor = FileCursor(timeout)
    try:
        yield cursor
    finally:
        cursor.close()


# --- The stage -------------------------------------------------------------------------------


def load(session: Session, row_id: int) -> TheoremInput:
    """The theorem and where its file is (the library's built copy)."""
    row = session.execute(
        sa.select(
            Theorem.fqn,
            SourceFile.path,
            Library.output_path,
            Library.logical_prefix,
            Theorem.statement,
            Theorem.proof,
            Theorem.byte_start,
            Theorem.byte_end,
        )
        .join(SourceFile, Theorem.file_id == SourceFile.id)
        .join(Library, SourceFile.library_id == Library.id)
        .where(Theorem.id == row_id)
    ).one()
    fqn, path, library, prefix, statement, proof, start, end = row
    file = str(Path(library) / path)
    return TheoremInput(fqn, file, library, prefix, statement, proof, start, end)


def run(item: TheoremInput, cursor: FileCursor) -> Tagged:
    """Tag the theorem's haves and re-check the rewritten proof (raises if it fails)."""
    if not has_candidate(item.proof):
        return untouched(item.proof)
    return tag(cursor.session, item.fqn, item.proof, cursor.start(item))


SPEC = register(
    StageSpec(
        stage=Stage.haves,
        model=Theorem,
        input_stage=Stage.extract,
        load=load,
        run=run,
        store=store_tags,
        ready_filter=lambda: Theorem.parent_id.is_(None),
        order_by=functools.partial(largest_files_first, Stage.haves),
        batch_size=16,
        lease_seconds=600.0,
        runs_rocq=True,
        max_attempts=2,
        resources=open_cursor,
    )
)


def command(
    max_workers: Annotated[
        int, typer.Option(min=1, help="Rocq sessions in parallel (one per core by default)")
    ] = os.cpu_count() or 1,
    pet_timeout: Annotated[
        float, typer.Option(min=1.0, help="seconds one Rocq call (a sentence) may take")
    ] = DEFAULT_TIMEOUT,
    rocq_bin: RocqBin = None,
) -> None:
    """Tag the haves that open intermediate goals and re-check the rewritten proofs."""
    from app.db.engine import ensure_schema, session_factory
    from workers.runner import run_workers

    use_rocq(rocq_bin)
    ensure_schema()
    spec = dataclasses.replace(SPEC, resources=functools.partial(open_cursor, pet_timeout))
    stats = run_workers([spec], concurrency=max_workers)
    with session_factory()() as session:
        summary = have_summary(session)
    typer.echo(
        f"step 2: {stats.done} theorems done, {summary['failed']} failed; "
        f"{summary['theorems']} theorems with tagged haves, {summary['haves']} haves"
    )


def have_summary(session: Session) -> dict[str, int]:
    """Theorems with tagged haves, haves, and theorems whose rewrite failed."""
    theorems, haves = session.execute(
        sa.select(sa.func.count(sa.distinct(Have.theorem_id)), sa.func.count(Have.id))
    ).one()
    failed = session.execute(
        sa.select(sa.func.count())
        .select_from(Theorem)
        .where(Theorem.stage == Stage.haves, Theorem.status == Status.failed)
    ).scalar_one()
    return {"theorems": theorems, "haves": haves, "failed": failed}


if __name__ == "__main__":
    from app.cli import run_step

    run_step(command)
