"""Where rocqcot keeps its state, read from the environment once."""

from __future__ import annotations

import os
from pathlib import Path


def rocqcot_home() -> Path:
    """The folder for the embedded database and caches (`$ROCQCOT_HOME`, default `./.rocqcot`)."""
    return Path(os.environ.get("ROCQCOT_HOME", ".rocqcot")).resolve()


def database_url_from_env() -> str | None:
    """`DATABASE_URL` when set: any PostgreSQL server with pgvector instead of the embedded one."""
    return os.environ.get("DATABASE_URL") or None
