"""Homes with their own embedded PostgreSQL, as users get it by default (no `DATABASE_URL`),
for the tests of the server's supervision and of the faults: start, find, kill, stop."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Home:
    """A `ROCQCOT_HOME` and the environment of `rocqcot` commands that use it."""

    path: Path
    env: dict[str, str]

    @property
    def pgdata(self) -> Path:
        return self.path / "pgdata"

    def postmaster(self) -> int | None:
        """The pid of the running postmaster (a zombie is not running), or None."""
        pid_file = self.pgdata / "postmaster.pid"
        if not pid_file.exists():
            return None
        pid = int(pid_file.read_text().split()[0])
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return None
        return pid if alive else None

    def kill_postmaster(self) -> int:
        """SIGKILL the postmaster, as a crash would; returns its pid."""
        pid = self.postmaster()
        assert pid is not None, "no embedded server is running"
        os.kill(pid, signal.SIGKILL)
        return pid

    def stop(self) -> None:
        """Stop the server at once (immediate shutdown) and wait until it is gone."""
        pid = self.postmaster()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 30
        while self.postmaster() is not None and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def embedded_home(project_root: Path) -> Iterator[Home]:
    """A fresh home outside pytest's private folders (the server runs as its own user when
    the tests run as root), its server stopped and the folder removed at the end."""
    path = Path(tempfile.mkdtemp(prefix="rocqcot-home-"))
    path.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env |= {"ROCQCOT_HOME": str(path), "PYTHONPATH": str(project_root), "PYTHONUNBUFFERED": "1"}
    home = Home(path, env)
    try:
        yield home
    finally:
        home.stop()
        shutil.rmtree(path, ignore_errors=True)
