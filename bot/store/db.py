"""Opening the database and applying migrations.

SQLite gets WAL (readers never block the writer), ``foreign_keys=ON`` (off by default in SQLite)
and a busy timeout, on every connection. PostgreSQL works by changing the URL to
``postgresql+asyncpg://…``; its connections are checked before use, since a server restart or an
idle timeout closes them while they wait in the pool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

import migrations
from bot.core.errors import ConfigError

MIGRATIONS_DIR = Path(migrations.__file__).parent
BUSY_TIMEOUT_MS = 5000
# The drivers Easel is tested with (both asynchronous), and how to install each.
DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
INSTALL = {"aiosqlite": "pip install aiosqlite", "asyncpg": "pip install 'easel[postgres]'"}
URL_FORMS = "sqlite+aiosqlite:///PATH or postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA synchronous=NORMAL")  # safe with WAL; fsync at checkpoints only
    cursor.close()


def _parse(url: str) -> URL:
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"Setting EASEL_DATABASE_URL: not a database URL; use {URL_FORMS}."
        ) from None
    if DRIVERS.get(parsed.get_backend_name()) != parsed.get_driver_name():
        raise ConfigError(
            f"Setting EASEL_DATABASE_URL: {parsed.drivername}:// is not supported; use {URL_FORMS}."
        )
    return parsed


def make_db_engine(url: str) -> AsyncEngine:
    parsed = _parse(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    if sqlite and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {}
    if not sqlite:
        # pool_pre_ping: a cheap round trip on checkout replaces a connection the server closed
        # (restart, failover, idle timeout) instead of failing the command that drew it
        # (SQLAlchemy, "Dealing with Disconnects"). The application name shows Easel's
        # connections in pg_stat_activity.
        options["pool_pre_ping"] = True
        options["connect_args"] = {"server_settings": {"application_name": "easel"}}
    try:
        engine = create_async_engine(parsed, **options)
    except ModuleNotFoundError:
        driver = parsed.get_driver_name()
        raise ConfigError(
            f"Setting EASEL_DATABASE_URL: the {driver} driver is not installed ({INSTALL[driver]})."
        ) from None
    if sqlite:
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def _run(connection: Connection, url: str, action: str, revision: str) -> None:
    cfg = alembic_config(url)
    cfg.attributes["connection"] = connection
    getattr(command, action)(cfg, revision)


async def _migrate(engine: AsyncEngine, action: str, revision: str) -> None:
    """Run Alembic on one connection. On SQLite, foreign keys are off meanwhile, as SQLite's own
    procedure for schema changes says: a migration that copies a table drops the old one, and a
    DROP TABLE with foreign keys on deletes the rows that refer to it (cascades included). They
    are checked, and turned back on, afterwards."""
    url = engine.url.render_as_string(hide_password=False)
    sqlite = engine.dialect.name == "sqlite"
    async with engine.connect() as conn:
        if sqlite:  # outside any transaction, or SQLite ignores it
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        try:
            await conn.run_sync(_run, url, action, revision)
            if sqlite:
                broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                if broken:
                    raise RuntimeError(f"migration left rows that refer to nothing: {broken[:5]}")
            await conn.commit()
        finally:
            if sqlite:
                await conn.rollback()
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision`` on this engine's database."""
    await _migrate(engine, "upgrade", revision)


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    await _migrate(engine, "downgrade", revision)


def safe_url(url: str) -> str:
    """The database URL as it may be printed or logged: no password."""
    return make_url(url).render_as_string(hide_password=True)


def url_password(url: str) -> str:
    """The password in a database URL ("" when there is none), to keep out of the logs."""
    return make_url(url).password or ""


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    def _current(conn: Connection) -> str | None:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        return await conn.run_sync(_current)
