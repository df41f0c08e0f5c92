"""Alembic environment: runs on the connection rocqcot hands over, or opens its own."""

from alembic import context

from app.db.models import Base

target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave out the HNSW indexes that retrieval creates per embedding model at run time."""
    return not (type_ == "index" and name and name.startswith("ix_emb_hnsw_"))


def run_migrations(connection) -> None:
    context.configure(
        connection=connection, target_metadata=target_metadata, include_object=include_object
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:  # plain `alembic upgrade head` from the command line
    from app.db.engine import engine

    with engine().begin() as own_connection:
        run_migrations(own_connection)
