"""Alembic environment: async engine, batch mode for SQLite, the project's naming convention.

Called two ways: by Easel itself (``bot.store.db.upgrade`` hands over a connection) and by the
``alembic`` command for writing new migrations (``alembic revision --autogenerate -m ...``).
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from bot.store.db import make_db_engine
from bot.store.tables import Base, UTCDateTime

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from bot.settings import load_settings

    return load_settings().db_url


def render_item(type_: str, obj: object, autogen_context: object) -> str | bool:
    # Migrations must not import application types; UTC handling lives in the models.
    if type_ == "type" and isinstance(obj, UTCDateTime):
        return "sa.DateTime()"
    return False


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
        render_item=render_item,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    db = make_db_engine(_url())
    async with db.connect() as connection:
        await connection.run_sync(do_run_migrations)
        await connection.commit()
    await db.dispose()


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    connection = config.attributes.get("connection")
    if connection is None:
        asyncio.run(run_async_migrations())
    else:
        do_run_migrations(connection)
