"""Migrations up and down on a fresh embedded database."""

from __future__ import annotations

import sqlalchemy as sa

from app.db import engine as db
from app.db.models import STAGED_TABLES, Base

EXPECTED_TABLES = {table.name for table in Base.metadata.sorted_tables}


def _schema() -> tuple[set[str], set[str], set[str]]:
    with db.engine().connect() as connection:
        inspector = sa.inspect(connection)
        tables = set(inspector.get_table_names())
        views = set(inspector.get_view_names())
        types = set(
            connection.execute(
                sa.text("SELECT typname FROM pg_type WHERE typname IN ('stage', 'status')")
            ).scalars()
        )
    return tables, views, types


def test_upgrade_creates_every_table_and_the_status_view(database_url: str) -> None:
    assert db.current_revision() is None
    db.upgrade("head")
    tables, views, types = _schema()
    assert tables >= EXPECTED_TABLES
    assert "stage_status" in views
    assert types == {"stage", "status"}
    for model in STAGED_TABLES:
        columns = {c.name for c in model.__table__.columns}
        assert {"stage", "status", "attempts", "error", "lease_until", "updated_at"} <= columns


def test_downgrade_to_base_drops_everything_and_upgrade_again(database_url: str) -> None:
    db.upgrade("head")
    db.downgrade("base")
    tables, views, types = _schema()
    assert tables == {"alembic_version"}
    assert views == set() and types == set()
    assert db.current_revision() is None
    db.upgrade("head")
    assert _schema()[0] >= EXPECTED_TABLES


def test_models_match_the_migrations(migrated: str) -> None:
    """Autogenerate finds nothing to add: the models and the migration agree."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    with db.engine().connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
