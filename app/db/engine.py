"""Connecting to the database and bringing its schema to head."""

from __future__ import annotations

import functools
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from app import config
from app.db.embedded import embedded_database_url, psql_path
from app.db.embedded import stop_embedded as embedded_stop
from app.errors import DatabaseUnavailable, RocqcotError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """`DATABASE_URL` if set, else the embedded server's URL (starting it if needed)."""
    url = config.database_url_from_env()
    if url is None:
        return embedded_database_url(config.rocqcot_home())
    # Plain postgresql:// URLs mean psycopg 3 here, not SQLAlchemy's psycopg2 default.
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def libpq_url(hide_password: bool) -> str:
    """The database's URL as psql and libpq take it (no SQLAlchemy driver name)."""
    url = sa.engine.make_url(database_url()).set(drivername="postgresql")
    if not url.password:
        return url._replace(password=None).render_as_string(hide_password=False)
    return url.render_as_string(hide_password=hide_password)


@dataclass(frozen=True)
class Command:
    argv: list[str]
    env: dict[str, str]


def psql_command(args: list[str]) -> Command:
    """psql on the database: the system's psql for another server when there is one, else
    the wheel's; the password goes through the environment, never the command line."""
    url = sa.engine.make_url(database_url()).set(drivername="postgresql")
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    embedded = config.database_url_from_env() is None
    psql = (None if embedded else shutil.which("psql")) or str(psql_path())
    address = url._replace(password=None).render_as_string(hide_password=False)
    return Command([psql, address, *args], env)


def stop_embedded() -> str:
    """Stop the embedded server; a line saying what happened."""
    if config.database_url_from_env() is not None:
        raise RocqcotError(
            "DATABASE_URL is set: rocqcot does not run that server, it cannot stop it"
        )
    home = config.rocqcot_home()
    if embedded_stop(home):
        return f"stopped the embedded server in {home / 'pgdata'}"
    return f"the embedded server in {home / 'pgdata'} is not running"


@functools.cache
def engine() -> Engine:
    """The process-wide engine.

    Commits do not wait for the WAL flush (`synchronous_commit=off`): every write is an
    idempotent upsert or a guarded status change, so if the server itself crashes, the last
    few hundred milliseconds of finished rows simply run again; nothing is duplicated or lost.
    A restarted server is reconnected to by the workers' retry loop (`with_reconnect`).
    """
    eng = sa.create_engine(
        database_url(),
        pool_size=16,  # kept open: LLM stages run dozens of worker threads
        max_overflow=32,
        connect_args={"connect_timeout": 5, "options": "-c synchronous_commit=off"},
    )
    try:
        with eng.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise DatabaseUnavailable(
            f"cannot connect to {eng.url.render_as_string(hide_password=True)}: {reason}"
        ) from None
    return eng


@functools.cache
def session_factory() -> sessionmaker:
    """Sessions bound to the process-wide engine; objects stay readable after commit."""
    return sessionmaker(engine(), expire_on_commit=False)


def alembic_config() -> Config:
    """Alembic's configuration, pointing at `migrations/` and at this process's database."""
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    return cfg


MIGRATION_LOCK = 7_301_001  # advisory lock key: workers starting together migrate one at a time


def _migrate(action: Callable[[Config, str], None], revision: str) -> None:
    with engine().begin() as connection:
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        action(cfg, revision)


def upgrade(revision: str = "head") -> None:
    """Migrate the schema up to `revision`."""
    _migrate(command.upgrade, revision)


def downgrade(revision: str) -> None:
    """Migrate the schema down to `revision` (`base` drops everything)."""
    _migrate(command.downgrade, revision)


def current_revision() -> str | None:
    """The revision the database is at, or None before the first migration."""
    from alembic.runtime.migration import MigrationContext

    with engine().connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


@functools.cache
def ensure_schema() -> None:
    """Bring the schema to head once per process; every command calls this before it works."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if current_revision() != head:
        upgrade("head")
