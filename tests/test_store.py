"""The repository against a real database with the migrations applied: every test that uses the
database runs twice, on a SQLite file and on a PostgreSQL server (tests/pg.py)."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from PIL import Image as PILImage
from sqlalchemy import text as sql

from bot.core.errors import ConfigError, InvalidInput, NotFound
from bot.core.grammar import parse_prompt, resolve
from bot.core.metadata import parse_parameters
from bot.core.models import (
    GuildSettings,
    JobKind,
    JobState,
    NewImage,
    NewJob,
    NsfwRule,
    UserSettings,
)
from bot.store.db import current_revision, downgrade, make_db_engine, make_sessionmaker, upgrade
from bot.store.repos import Store
from bot.store.tables import Base


@pytest.fixture(params=["sqlite", "postgres"])
async def db_url(request, tmp_path):
    """Overrides conftest's: ``db_engine`` and ``store`` follow it. A Postgres database starts
    migrated (copied from a template migrated once); SQLite's is migrated by ``db_engine``."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'easel.db'}"
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = await cluster.create_database(migrated=True)
    yield url
    await cluster.drop_database(url)


def spec(text="a lighthouse at dusk --seed 7 --count 4"):
    """A spec as the service makes them: its model is the one the job records ("tiny")."""
    return replace(resolve(parse_prompt(text), native_side=64), model="tiny")


async def new_job(store, user, **kw):
    job, _created = await store.create_job(
        NewJob(
            user_id=user.id, kind=kw.pop("kind", JobKind.IMAGINE), spec=spec(), model="tiny", **kw
        )
    )
    return job


def images(n, withheld=()):
    return [
        NewImage(
            index=i,
            seed=7 + i,
            width=64,
            height=64,
            path=f"images/x/{i}.png",
            sha256=f"{i:064x}",
            withheld=i in withheld,
        )
        for i in range(n)
    ]


async def test_migration_0003_keeps_every_row_and_fills_the_new_records(db_url):
    """0003 copies tables to make their ids AUTOINCREMENT: nothing referring to them may be lost
    (a copy's DROP TABLE would cascade with foreign keys on), and what the new columns would
    have held is filled in."""
    engine = make_db_engine(db_url)
    await downgrade(engine, "base")
    await upgrade(engine, "0002")
    at = datetime(2026, 1, 1, 12)
    rows = {
        '"user"': [
            {
                "id": 1,
                "key": "discord:5",
                "name": "a",
                "banned": False,
                "settings": '{"private": true}',
                "created_at": at,
            },
        ],
        "member": [
            {"guild_id": 9, "user_id": 1, "banned": True, "updated_at": at},
        ],
        "job": [
            {
                "id": i,
                "user_id": 1,
                "guild_id": 9,
                "channel_id": 7,
                "message_id": 100 + i,
                "kind": "imagine",
                "parent_job_id": parent,
                "init_image_path": init,
                "prompt": "p",
                "negative_prompt": "",
                "model": "tiny",
                "width": 64,
                "height": 64,
                "aspect": "1:1",
                "seed": 1,
                "steps": 4,
                "guidance": 7.0,
                "sampler": "euler",
                "tile": False,
                "count": 4,
                "repro": "{}",
                "state": "done",
                "attempts": 1,
                "charged_images": 4,
                "created_at": at,
            }
            for i, parent, init in (
                (1, None, "uploads/x.png"),
                (2, 1, "images/a.png"),
                (3, 2, None),
            )
        ],
        "image": [
            {
                "job_id": 1,
                "index": 0,
                "seed": 1,
                "width": 64,
                "height": 64,
                "path": "images/a.png",
                "sha256": "x",
                "deleted": False,
                "withheld": False,
                "created_at": at,
            },
        ],
    }
    async with engine.begin() as conn:
        for table, values in rows.items():
            columns = list(values[0])
            names = ", ".join(f'"{c}"' for c in columns)
            params = ", ".join(f":{c}" for c in columns)
            await conn.execute(sql(f"INSERT INTO {table} ({names}) VALUES ({params})"), values)
    await upgrade(engine)
    store = Store(make_sessionmaker(engine))
    assert (await store.get_member(9, 1)).banned  # not cascaded away by the table copy
    assert [i.path for i in await store.get_images(1)] == ["images/a.png"]
    jobs = [await store.get_job(i) for i in (1, 2, 3)]
    assert all(j.from_photo and j.private for j in jobs)  # inherited down the line
    assert await store.images_charged_since(1, at.replace(tzinfo=UTC)) == 12
    assert await store.job_messages(3) == [(7, 103)]
    await engine.dispose()


async def test_migrations_upgrade_and_downgrade_cleanly(db_url):
    engine = make_db_engine(db_url)
    await upgrade(engine)
    assert await current_revision(engine) is not None
    await downgrade(engine, "base")
    assert await current_revision(engine) is None
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: c.dialect.get_table_names(c))
    assert set(tables) <= {"alembic_version"}
    await upgrade(engine)  # and back up again
    await engine.dispose()


async def test_models_and_migrations_do_not_drift(db_engine):
    def diff(conn):
        return compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )

    async with db_engine.connect() as conn:
        assert await conn.run_sync(diff) == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
async def test_sqlite_runs_in_wal_with_foreign_keys(db_engine, tmp_path):
    async with db_engine.connect() as conn:
        mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
        busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    assert (mode, fks) == ("wal", 1)
    assert busy >= 1000


@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_postgres_connections_closed_by_the_server_are_replaced(db_engine, db_url):
    """A database restart or an idle timeout must not fail the next command."""
    store = Store(make_sessionmaker(db_engine))
    user = await store.get_or_create_user("discord:1", "ann")  # leaves a connection in the pool
    admin = make_db_engine(db_url)
    async with admin.connect() as conn:
        closed = (
            await conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'easel' AND datname = current_database() "
                "AND pid <> pg_backend_pid()"
            )
        ).scalar()
    await admin.dispose()
    assert closed >= 1
    assert (await store.get_user(user.id)).name == "ann"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://easel:secret@db/easel",
        "postgresql+psycopg2://easel@db/easel",
        "sqlite:///easel.db",
        "mysql+aiomysql://easel@db/easel",
        "not a url",
    ],
)
def test_database_url_names_a_supported_driver(url):
    with pytest.raises(ConfigError) as error:
        make_db_engine(url)
    message = str(error.value)
    assert message.startswith("Setting EASEL_DATABASE_URL: ")
    assert "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE" in message
    assert "secret" not in message


def test_postgres_without_asyncpg_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match=r"asyncpg driver is not installed .*easel\[postgres\]"):
        make_db_engine("postgresql+asyncpg://easel@db/easel")


async def test_users_are_created_once_and_keep_their_settings(store):
    a = await store.get_or_create_user("discord:1", "ann")
    again = await store.get_or_create_user("discord:1", "ann2")
    assert a.id == again.id and again.name == "ann2"
    settings = UserSettings(aspect="16:9", presets={"wide": "--ar 21:9"}, remix_mode=True)
    await store.save_user_settings(a.id, settings)
    assert (await store.get_user(a.id)).settings == settings
    await store.get_or_create_user("discord:3", "cy")  # default settings: not listed
    assert await store.all_user_settings() == {"discord:1": settings}
    assert (await store.find_user("discord:1")).discord_id == 1
    assert await store.find_user("discord:2") is None
    with pytest.raises(NotFound):
        await store.get_user(999)


async def test_ban_and_quota_override(store):
    u = await store.get_or_create_user("local:bob", "bob")
    until = datetime.now(UTC) + timedelta(hours=1)
    banned = await store.set_ban(u.id, banned=True, reason="spam", until=until)
    assert banned.is_banned(datetime.now(UTC)) and banned.ban_reason == "spam"
    assert not banned.is_banned(until + timedelta(seconds=1))
    assert banned.banned_until == until
    unbanned = await store.set_ban(u.id, banned=False, reason=None, until=None)
    assert not unbanned.is_banned(datetime.now(UTC)) and unbanned.ban_reason is None
    q = await store.set_quota(u.id, daily_quota=5, reset_usage=True)
    assert q.daily_quota == 5 and q.quota_reset_at is not None


async def test_guild_settings_round_trip(store):
    assert await store.get_guild_settings(5) == GuildSettings()
    gs = GuildSettings(nsfw_rule=NsfwRule.AGE_RESTRICTED, allowed_channel_ids=(1, 2), max_steps=20)
    await store.save_guild_settings(5, gs)
    assert await store.get_guild_settings(5) == gs


async def test_job_lifecycle_records_images_and_charges_what_the_core_decides(store):
    u = await store.get_or_create_user("local:c", "c")
    job = await new_job(store, u, guild_id=10, channel_id=11)
    assert job.state is JobState.QUEUED and job.spec == spec()
    assert await store.pending(u.id) == (1, 4)
    running = await store.mark_running(job.id)
    assert running.state is JobState.RUNNING and running.attempts == 1 and running.started_at
    done = await store.finish_job(
        job.id, JobState.DONE, repro={"torch": "x"}, images=images(4, withheld={3}), charged=3
    )
    assert done.state is JobState.DONE and done.charged_images == 3 and done.repro == {"torch": "x"}
    assert [i.index for i in await store.get_images(job.id)] == [0, 1, 2, 3]
    assert (await store.get_image(job.id, 1)).seed == 8
    assert (await store.get_image(job.id, 3)).withheld
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    assert await store.images_charged_since(u.id, midnight) == 3
    assert await store.images_charged_since(u.id, datetime.now(UTC) + timedelta(seconds=1)) == 0
    assert await store.pending(u.id) == (0, 0)

    failed = await new_job(store, u)
    await store.finish_job(failed.id, JobState.FAILED, error="out of memory")
    assert (await store.get_job(failed.id)).error == "out of memory"
    assert await store.images_charged_since(u.id, midnight) == 3
    with pytest.raises(NotFound):
        await store.get_image(job.id, 7)


async def test_a_finished_job_is_never_finished_again(store):
    """A cancel that wins the race: the late result writes nothing and charges nothing."""
    u = await store.get_or_create_user("local:c2", "c2")
    job = await new_job(store, u)
    await store.mark_running(job.id)
    await store.finish_job(job.id, JobState.CANCELLED)
    late = await store.finish_job(job.id, JobState.DONE, images=images(4), charged=4)
    assert late.state is JobState.CANCELLED and late.charged_images == 0
    assert await store.get_images(job.id) == []
    assert await store.images_charged_since(u.id, datetime.now(UTC) - timedelta(days=1)) == 0
    assert (await store.mark_running(job.id)).state is JobState.CANCELLED


async def test_provenance_and_parameters_are_kept_with_the_job(store):
    u = await store.get_or_create_user("local:p", "p")
    job = await new_job(
        store,
        u,
        kind=JobKind.IMG2IMG,
        from_photo=True,
        age_restricted=True,
        private=True,
        runner="bot:host:1:2",
        params={"zoom": 1.5, "loras": ["ink"]},
    )
    again = await store.get_job(job.id)
    assert (again.from_photo, again.age_restricted, again.private) == (True, True, True)
    assert again.params == {"zoom": 1.5, "loras": ["ink"]} and again.runner == "bot:host:1:2"
    assert (await store.set_runner(job.id, "cli:host:3:4")).runner == "cli:host:3:4"
    assert (await store.set_delivery_error(job.id, "Missing Access")).delivery_error == (
        "Missing Access"
    )
    assert (await store.set_delivery_error(job.id, None)).delivery_error is None
    await store.mark_running(job.id)
    requeued = await store.requeue(job.id, runner="bot:host:5:6")
    assert (requeued.state, requeued.started_at, requeued.runner) == (
        JobState.QUEUED,
        None,
        "bot:host:5:6",
    )


async def test_request_key_makes_a_double_click_one_job(store):
    u = await store.get_or_create_user("local:d", "d")
    new = NewJob(user_id=u.id, kind=JobKind.VARIATION, spec=spec(), model="tiny", request_key="k1")
    first, created1 = await store.create_job(new)
    second, created2 = await store.create_job(new)
    assert created1 and not created2 and first.id == second.id
    assert await store.count_jobs(user_id=u.id) == 1
    assert (await store.find_job_by_request_key("k1")).id == first.id


async def test_presses_of_one_button_are_counted_and_the_latest_found(store):
    u = await store.get_or_create_user("local:r", "r")
    assert await store.latest_request("btn:7") == (None, 0)
    keys = ["btn:7#0", "btn:7#1", "btn:7#2", "btn:70#0"]
    made = [await new_job(store, u, kind=JobKind.REROLL, request_key=k) for k in keys]
    latest, presses = await store.latest_request("btn:7")
    assert (latest.id, presses) == (made[2].id, 3)
    assert await store.latest_request("btn:_") == (None, 0)  # LIKE wildcards are literal


async def test_simultaneous_first_commands_make_one_user(store):
    users = await asyncio.gather(*(store.get_or_create_user("discord:7", "gil") for _ in range(6)))
    assert len({u.id for u in users}) == 1
    assert (await store.find_user("discord:7")).id == users[0].id


async def test_simultaneous_double_click_makes_one_job(store):
    u = await store.get_or_create_user("local:d2", "d2")
    new = NewJob(user_id=u.id, kind=JobKind.UPSCALE, spec=spec(), model="tiny", request_key="k2")
    results = await asyncio.gather(*(store.create_job(new) for _ in range(6)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert await store.count_jobs(user_id=u.id) == 1


async def test_history_search_and_paging(store):
    u = await store.get_or_create_user("local:e", "e")
    for text in ["a red fox", "a blue whale", "red 100% cotton_shirt"]:
        await store.create_job(
            NewJob(user_id=u.id, kind=JobKind.IMAGINE, spec=spec(text), model="tiny")
        )
    assert [j.spec.prompt for j in await store.list_jobs(user_id=u.id, search="red")] == [
        "red 100% cotton_shirt",
        "a red fox",
    ]
    assert len(await store.list_jobs(user_id=u.id, search="100%")) == 1
    assert await store.list_jobs(user_id=u.id, search="_x") == []  # LIKE wildcards are literal
    page2 = await store.list_jobs(user_id=u.id, limit=2, offset=2)
    assert [j.spec.prompt for j in page2] == ["a red fox"]
    assert await store.count_jobs(user_id=u.id, search="red") == 2


async def test_unfinished_jobs_and_requeue(store):
    u = await store.get_or_create_user("local:f", "f")
    a = await new_job(store, u)
    b = await new_job(store, u)
    await store.mark_running(b.id)
    c = await new_job(store, u)
    await store.finish_job(c.id, JobState.CANCELLED)
    assert [j.id for j in await store.unfinished_jobs()] == [a.id, b.id]
    assert (await store.requeue(b.id)).state is JobState.QUEUED
    await store.set_message(a.id, channel_id=3, message_id=4)
    assert (await store.get_job(a.id)).message_id == 4


async def test_every_message_of_a_job_is_recorded_once(store):
    u = await store.get_or_create_user("local:m", "m")
    job = await new_job(store, u)
    await store.set_message(job.id, channel_id=3, message_id=40)
    await store.add_message(job.id, channel_id=3, message_id=41)  # a U copy
    await store.add_message(job.id, channel_id=3, message_id=41)  # recorded once
    await store.add_message(job.id, channel_id=5, message_id=50_000_000_000_000_000)  # snowflake
    assert await store.job_messages(job.id) == [(3, 40), (3, 41), (5, 50_000_000_000_000_000)]
    assert await store.job_of_message(41) == job.id
    await store.remove_message(41)
    assert await store.job_of_message(41) is None
    assert await store.job_messages(job.id) == [(3, 40), (5, 50_000_000_000_000_000)]
    # A message for a job deleted meanwhile is dropped, not an error.
    await store.add_message(10_000, channel_id=3, message_id=42)
    assert await store.job_of_message(42) is None


async def test_purge_keeps_files_other_jobs_share(store):
    u = await store.get_or_create_user("local:g", "g")
    a, b = await new_job(store, u), await new_job(store, u)
    shared = [NewImage(index=0, seed=1, width=8, height=8, path="images/aa/same.png", sha256="s")]
    await store.finish_job(a.id, JobState.DONE, images=shared)
    await store.finish_job(
        b.id,
        JobState.DONE,
        images=[
            *shared,
            NewImage(index=1, seed=2, width=8, height=8, path="images/bb/own.png", sha256="o"),
        ],
    )
    assert await store.purge_job(b.id) == ["images/bb/own.png"]
    assert all(i.deleted for i in await store.get_images(b.id))
    with pytest.raises(NotFound):
        await store.get_image(b.id, 0)
    assert await store.purge_job(a.id) == ["images/aa/same.png"]


async def test_forget_user_removes_their_rows(store):
    u = await store.get_or_create_user("local:h", "h")
    other = await store.get_or_create_user("local:i", "i")
    job = await new_job(store, u)
    await store.finish_job(job.id, JobState.DONE, images=images(1))
    await store.set_message(job.id, channel_id=1, message_id=2)
    keep = await new_job(store, other)
    assert await store.forget_user(u.id) == ["images/x/0.png"]
    with pytest.raises(NotFound):
        await store.get_job(job.id)
    assert await store.get_images(job.id) == []
    assert await store.job_of_message(2) is None
    assert (await store.get_job(keep.id)).user_id == other.id
    with pytest.raises(NotFound):
        await store.forget_user(999)


async def test_forgetting_keeps_what_enforcement_needs(store):
    u = await store.get_or_create_user("discord:5", "eve")
    await store.save_user_settings(u.id, UserSettings(aspect="16:9"))
    await store.set_ban(u.id, banned=True, reason="spam", until=None)
    await store.set_member_quota(9, u.id, 3)
    job = await new_job(store, u, guild_id=9)
    await store.finish_job(job.id, JobState.DONE, images=images(4), charged=4)
    await store.add_audit(
        actor="discord:5", action="refuse", detail={"category": "nsfw", "prompt": "x"}
    )
    await store.forget_user(u.id)
    kept = await store.get_user(u.id)
    assert (kept.key, kept.name, kept.settings) == ("discord:5", "", UserSettings())
    assert kept.banned and kept.ban_reason == "spam"
    assert (await store.get_member(9, u.id)).daily_quota == 3
    # /forget-me does not give the day's images back.
    since = datetime.now(UTC) - timedelta(hours=1)
    assert await store.images_charged_since(u.id, since) == 4
    assert (await store.list_audit(action="refuse"))[0].detail == {"category": "nsfw"}


async def test_ids_are_never_reused(store):
    """An old button naming a deleted job must never reach someone else's."""
    u = await store.get_or_create_user("local:n", "n")
    other = await store.get_or_create_user("local:o", "o")
    newest = await new_job(store, u)
    await store.forget_user(u.id)
    after = await new_job(store, other)
    assert after.id > newest.id


async def test_blocklist_entries_per_guild_and_global(store):
    await store.add_block_term(1, "dragon*", "admin")
    await store.add_block_term(None, "gore", "owner")
    await store.add_block_term(2, "cats", "admin")
    assert [e.term for e in await store.list_block_terms(1)] == ["dragon*", "gore"]
    with pytest.raises(InvalidInput):
        await store.add_block_term(1, "dragon*", "admin")
    await store.remove_block_term(1, "dragon*")
    with pytest.raises(NotFound):
        await store.remove_block_term(1, "dragon*")
    assert [e.term for e in await store.list_block_terms(1)] == ["gore"]


async def test_a_term_blocked_everywhere_is_listed_once(store):
    await store.add_block_term(None, "gore", "owner")
    with pytest.raises(InvalidInput):
        await store.add_block_term(None, "gore", "owner")


async def test_audit_log_newest_first(store):
    await store.add_audit(
        actor="discord:1", action="ban", target="discord:2", reason="spam", guild_id=9
    )
    await store.add_audit(actor="system", action="refuse", detail={"category": "nsfw"}, guild_id=9)
    await store.add_audit(actor="system", action="refuse", guild_id=8)
    events = await store.list_audit(guild_id=9)
    assert [e.action for e in events] == ["refuse", "ban"]
    assert events[0].detail == {"category": "nsfw"} and events[1].reason == "spam"


async def test_job_stats(store):
    u = await store.get_or_create_user("local:j", "j")
    job = await new_job(store, u, guild_id=4)
    await store.mark_running(job.id)
    await store.finish_job(job.id, JobState.DONE, images=images(4), charged=4)
    stats = await store.job_stats(datetime.now(UTC) - timedelta(days=1), guild_id=4)
    assert stats["jobs"] == 1 and stats["images"] == 4 and len(stats["durations"]) == 1


def test_png_files_carry_parameters_and_are_named_by_hash(files):
    img = PILImage.new("RGB", (16, 16), (200, 10, 10))
    rel, digest, data = files.save_png(img, "a fox\nSteps: 4, Seed: 7, Size: 16x16")
    assert rel == f"images/{digest[:2]}/{digest}.png"
    assert files.read(rel) == data
    with PILImage.open(files.path(rel)) as back:
        assert parse_parameters(back.text["parameters"])["Seed"] == "7"
    again, digest2, _ = files.save_png(img, "a fox\nSteps: 4, Seed: 7, Size: 16x16")
    assert (again, digest2) == (rel, digest)
    assert files.delete(rel) and not files.delete(rel)
    with pytest.raises(ValueError):
        files.path("../../etc/passwd")


async def test_easel_db_upgrade_creates_the_database(tmp_path):
    db = tmp_path / "sub" / "easel.db"
    engine = make_db_engine(f"sqlite+aiosqlite:///{db}")
    await upgrade(engine)
    await engine.dispose()
    names = {
        r[0]
        for r in sqlite3.connect(db).execute("select name from sqlite_master where type='table'")
    }
    assert {"user", "guild", "job", "image", "blocklist_entry", "audit_event"} <= names


async def test_an_edits_mask_is_kept_while_a_job_names_it(store):
    ann = await store.get_or_create_user("local:ann", "ann")
    bob = await store.get_or_create_user("local:bob", "bob")
    shared = {"mask": "masks/ab/ab12.png", "cells": [1]}
    await new_job(store, ann, kind=JobKind.REGION, params={"mask": "masks/cd/cd34.png"})
    await new_job(store, ann, kind=JobKind.REGION, params=shared)
    await new_job(store, bob, kind=JobKind.ZOOM, params=shared)
    assert await store.forget_user(ann.id) == ["masks/cd/cd34.png"]  # bob's job names the other
    unused = ["masks/ab/ab12.png", "masks/ef/ef56.png"]
    assert await store.unreferenced(unused) == ["masks/ef/ef56.png"]
