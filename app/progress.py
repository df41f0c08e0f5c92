"""Progress bars for `rocqcot run`: each step's rows finished and still waiting, every second."""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import threading
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa

from app.db import engine as db
from app.db import queue
from app.db.enums import STEP_OF, Status


class StepProgress:
    """Progress bars for `rocqcot run`: while a step runs, a thread counts every second the
    rows its stages finished since it started and the rows still ready for them. The step's
    own lines and log records are printed above the bars (written straight to the terminal,
    they would break the display)."""

    def __init__(self, enabled: bool) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.progress import TimeElapsedColumn as Elapsed

        columns = (TextColumn("{task.description:<22}"), BarColumn(30), MofNCompleteColumn())
        self.enabled = enabled
        self.bars = Progress(
            *columns, Elapsed(), console=Console(file=sys.stdout), disable=not enabled,
            redirect_stdout=False, redirect_stderr=False,
        )  # fmt: skip
        self._stop = threading.Event()
        self._logs = _ConsoleLog(self.bars.console)
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> StepProgress:
        self.bars.start()
        if self.enabled:
            root = logging.getLogger()
            self._handlers, root.handlers = root.handlers, [self._logs]
            self._logs.setFormatter(self._handlers[0].formatter if self._handlers else None)
        return self

    def __exit__(self, *_: object) -> None:
        self.bars.stop()
        if self.enabled:
            logging.getLogger().handlers = self._handlers

    @contextlib.contextmanager
    def step(self, number: int) -> Iterator[None]:
        """Show step `number`'s bar while the block runs."""
        stages = " + ".join(stage.value for stage, step in STEP_OF.items() if step == number)
        task = self.bars.add_task(f"step {number:>2} {stages}", total=None)
        with db.session_factory()() as session:
            since = session.execute(sa.select(sa.func.now())).scalar_one()
        self._stop.clear()
        poller = threading.Thread(target=self._poll, args=(task, number, since), daemon=True)
        poller.start()
        output = io.StringIO()
        try:
            with contextlib.redirect_stdout(output) if self.enabled else contextlib.nullcontext():
                yield
        finally:
            self._stop.set()
            poller.join()
            self._update(task, number, since)
            if output.getvalue():
                self.bars.console.print(output.getvalue().rstrip("\n"), markup=False,
                                        highlight=False)  # fmt: skip

    def _poll(self, task: Any, number: int, since: Any) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(sa.exc.SQLAlchemyError):
                self._update(task, number, since)

    def _update(self, task: Any, number: int, since: Any) -> None:
        finished, remaining = step_counts(number, since)
        self.bars.update(task, completed=finished, total=finished + remaining)


class _ConsoleLog(logging.Handler):
    """Log records printed above the progress bars."""

    def __init__(self, console: Any) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        self.console.print(self.format(record), markup=False, highlight=False)


def step_counts(number: int, since: Any) -> tuple[int, int]:
    """Rows step `number` finished (done or failed) since `since`, and rows still ready for
    it or running."""
    from app.stages import stage_spec

    finished = remaining = 0
    with db.session_factory()() as session:
        for stage in (stage for stage, step in STEP_OF.items() if step == number):
            spec = stage_spec(stage.value)
            table = spec.model.__table__
            count = sa.select(sa.func.count()).select_from(table)
            finished += session.execute(
                count.where(
                    table.c.stage == stage,
                    table.c.status.in_([Status.done, Status.failed]),
                    table.c.updated_at >= since,
                )
            ).scalar_one()
            waiting = sa.or_(
                queue.ready_rows(spec),
                sa.and_(table.c.stage == stage, table.c.status == Status.running),
            )
            remaining += session.execute(count.where(waiting), {"worker_name": ""}).scalar_one()
    return finished, remaining
