"""Alembic environment: runs migrations on the connection or URL that `migrate.py` passes in."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from adapters.sql.engine import make_single_use_engine
from adapters.sql.schema import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_single_use_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported: run `kinde-credits db upgrade`")
run_migrations_online()
