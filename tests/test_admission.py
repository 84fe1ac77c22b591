"""Admission across processes: two Easel processes (say the bot and an `easel imagine`) taking
jobs for one user at the same moment never exceed the per-user job cap or the daily quota, on
SQLite and on PostgreSQL. The store serialises each user's admissions in the database itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from bot.core.service import Actor, Service, ServiceConfig
from bot.store.db import make_db_engine, make_sessionmaker, upgrade
from bot.store.files import ImageFiles
from bot.store.repos import Store
from engine.catalogue import load_catalogue
from engine.pool import ModelPool
from engine.worker import Engine

CHECKOUT = Path(__file__).resolve().parents[1]
# One process, the store alone: one job for a member, admitted by a rule that takes its time
# (half a second between reading the member's jobs and recording the new one), so two processes
# that were not serialised would both see room for it.
SLOW = """
import asyncio, sys, time
from pathlib import Path
from bot.core.errors import TooManyJobs
from bot.core.grammar import parse_prompt, resolve
from bot.core.models import JobKind, NewJob
from bot.store.db import make_db_engine, make_sessionmaker
from bot.store.repos import Store

url, data = sys.argv[1], Path(sys.argv[2])

def admit(unfinished, reserved, used):
    if unfinished >= 1:
        raise TooManyJobs("full")
    time.sleep(0.5)

async def main():
    db = make_db_engine(url)
    store = Store(make_sessionmaker(db))
    user = await store.get_or_create_user("discord:9", "slow")
    spec = resolve(parse_prompt("a slow race"), native_side=64)
    (data / f"ready-{time.time()}").touch()
    while len(list(data.glob("ready-*"))) < 2:
        await asyncio.sleep(0.01)
    try:
        await store.create_job(NewJob(user.id, JobKind.IMAGINE, spec, "tiny"), admit=admit)
        print("admitted")
    except TooManyJobs:
        print("refused")
    await db.dispose()

asyncio.run(main())
"""


@pytest.fixture(params=["sqlite", "postgres"])
async def url(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'easel.db'}"
        db = make_db_engine(url)
        await upgrade(db)
        await db.dispose()
        yield url
        return
    cluster = request.getfixturevalue("postgres_cluster")
    url = await cluster.create_database(migrated=True)
    yield url
    await cluster.drop_database(url)


async def test_two_services_never_exceed_the_job_cap_or_the_quota(url, tmp_path, model_dir):
    """Two services on their own connection pools (as two processes have), sixteen requests at
    once from each of two members: one asks for single images (the job cap binds), one for grids
    of four (the daily quota binds). The engines are not started: admitted jobs keep waiting."""
    services, dbs = [], []
    for _ in range(2):
        db = make_db_engine(url)
        dbs.append(db)
        engine = Engine(ModelPool(load_catalogue(None, "tiny"), data_dir=model_dir))
        config = ServiceConfig(max_queued_per_user=3, daily_images_per_user=10)
        services.append(Service(Store(make_sessionmaker(db)), ImageFiles(tmp_path), engine, config))
    one = Actor("discord:7", "one-by-one", guild_id=1, channel_id=2)
    grids = Actor("discord:8", "grids", guild_id=1, channel_id=2)
    try:
        results = await asyncio.gather(
            *(s.imagine(one, f"a race {i} --count 1") for s in services for i in range(8)),
            *(s.imagine(grids, f"a race {i} --count 4") for s in services for i in range(8)),
            return_exceptions=True,
        )
        names = [type(r).__name__ for r in results]
        assert sorted(names[:16]) == ["Submission"] * 3 + ["TooManyJobs"] * 13, names
        assert sorted(names[16:]) == ["QuotaExceeded"] * 14 + ["Submission"] * 2, names
        assert await services[0].store.count_jobs() == 5
    finally:
        for db in dbs:
            await db.dispose()


async def test_the_stores_admission_is_serialised_across_processes(url, tmp_path):
    env = {"PYTHONPATH": str(CHECKOUT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-c", SLOW, url, str(tmp_path)]
    processes = [
        await asyncio.create_subprocess_exec(
            *command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    said = []
    for process in processes:
        out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        assert process.returncode == 0, err.decode()[-2000:]
        said.append(out.decode().strip())
    assert sorted(said) == ["admitted", "refused"]
