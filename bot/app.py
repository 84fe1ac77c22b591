"""Wiring, in one place, at start-up: settings → database → store → engine → service → adapters."""

from __future__ import annotations

from bot.settings import Settings, load_settings
from bot.store.db import current_revision, make_engine, upgrade


def settings(**overrides: object) -> Settings:
    return load_settings(**overrides)


async def upgrade_database(settings: Settings) -> str | None:
    engine = make_engine(settings.db_url)
    try:
        await upgrade(engine)
        return await current_revision(engine)
    finally:
        await engine.dispose()
