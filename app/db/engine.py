"""Connecting to the database and bringing its schema to head."""

from __future__ import annotations

import functools
import itertools
import logging
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from app import config
from app.db import embedded
from app.errors import DatabaseUnavailable, RocqcotError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def database_url() -> str:
    """`DATABASE_URL` if set, else the embedded server's URL (starting it if needed)."""
    url = config.database_url_from_env()
    if url is None:
        return embedded.embedded_database_url(config.rocqcot_home())
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
    external = config.database_url_from_env() is not None
    psql = (shutil.which("psql") if external else None) or str(embedded.psql_path())
    address = url._replace(password=None).render_as_string(hide_password=False)
    return Command([psql, address, *args], env)


def stop_embedded() -> str:
    """Stop the embedded server; a line saying what happened."""
    if config.database_url_from_env() is not None:
        raise RocqcotError(
            "DATABASE_URL is set: rocqcot does not run that server, it cannot stop it"
        )
    home = config.rocqcot_home()
    if embedded.stop_embedded(home):
        return f"stopped the embedded server in {home / 'pgdata'}"
    return f"the embedded server in {home / 'pgdata'} is not running"


@functools.cache
def engine() -> Engine:
    """The process-wide engine.

    Commits are durable, except the work queue's own (`fast_commits`). A pooled connection is
    checked before use (`pool_pre_ping`), so after a server restart only the statements in
    flight fail (the workers' retry loop runs them again); a new connection that the embedded
    server refuses because it died starts it again first.
    """
    eng = sa.create_engine(
        database_url(),
        pool_size=16,  # kept open: LLM stages run dozens of worker threads
        max_overflow=32,
        pool_pre_ping=True,
        connect_args={"connect_timeout": 5},
    )
    if config.database_url_from_env() is None:
        sa.event.listen(eng, "do_connect", functools.partial(_connect, config.rocqcot_home()))
    sa.event.listen(eng.pool, "invalidate", _count_loss)
    try:
        with eng.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as error:
        reason = str(error.orig).strip().splitlines()[0] if error.orig else str(error)
        raise DatabaseUnavailable(
            f"cannot connect to {eng.url.render_as_string(hide_password=True)}: {reason}"
        ) from None
    return eng


_losses = itertools.count()
_lost = 0


def _count_loss(*_: object) -> None:
    global _lost
    _lost = next(_losses) + 1


def connections_lost() -> int:
    """How many pooled connections this process found dead (the server restarted, the network
    dropped): a worker that sees it change knows transactions may have been lost."""
    return _lost


def fast_commits(session: Session) -> None:
    """Let this transaction's commit return before it is on disk (`synchronous_commit=off`).

    For the work queue's claims and results only: each is an idempotent upsert or a guarded
    status change, so a server crash that loses the last few hundred milliseconds of them
    makes those rows run again (their workers release what they lost at once), and `durable`
    at the end of a step puts every earlier commit on disk before the next step reads it.
    """
    session.execute(sa.text("SET LOCAL synchronous_commit = off"))


def durable() -> None:
    """Wait until every commit made so far is on disk. A synchronous commit flushes the log up
    to itself, so every earlier commit too; but PostgreSQL flushes only for a transaction that
    wrote to the log, so this one rewrites the schema's one-row version table as it is."""
    with engine().begin() as connection:
        connection.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))


def _connect(home: Path, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
    """Connect to the embedded server; one that refuses because it died is started again."""
    try:
        return dialect.connect(*cargs, **cparams)
    except Exception as refused:
        if not is_connection_error(refused):
            raise
        try:
            restarted = embedded.revive(home)
        except Exception as error:  # still coming back: the caller's retry loop tries again
            log.warning("the embedded server could not be started yet: %s", error)
            raise refused from None
        if not restarted:
            raise
        return dialect.connect(*cargs, **cparams)


def is_connection_error(error: BaseException) -> bool:
    """Whether a database error means the server is unreachable, restarting or dropped the
    connection (retry once it is back), rather than a statement's own failure."""
    import psycopg

    if isinstance(error, sa.exc.DBAPIError):
        if error.connection_invalidated:
            return True
        error = error.orig if error.orig is not None else error
    lost = isinstance(error, psycopg.OperationalError | psycopg.InterfaceError)
    return lost and not isinstance(error, psycopg.errors.QueryCanceled)


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
