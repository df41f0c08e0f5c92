"""Alembic environment: runs on the connection rocqcot hands over, or opens its own."""

from alembic import context

from app.db.models import Base

target_metadata = Base.metadata


def run_migrations(connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:  # plain `alembic upgrade head` from the command line
    from app.db.engine import engine

    with engine().begin() as own_connection:
        run_migrations(own_connection)
