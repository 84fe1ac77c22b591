"""Shared fixtures: a real SQLite file with real migrations for every test that needs one, and a
throwaway PostgreSQL server (started once, only when a test asks for it)."""

from __future__ import annotations

import os

# No test may reach a model hub; the tiny model is built locally.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest

from bot.store.db import make_db_engine, make_sessionmaker, upgrade
from bot.store.files import ImageFiles
from bot.store.repos import Store


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite+aiosqlite:///{tmp_path / 'easel.db'}"


@pytest.fixture
async def db_engine(db_url):
    engine = make_db_engine(db_url)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def store(db_engine):
    return Store(make_sessionmaker(db_engine))


@pytest.fixture(scope="session")
def postgres_cluster():
    """A PostgreSQL server for this test session, deleted at the end (see tests/pg.py).

    Fails, rather than skips, where PostgreSQL is not installed: the store is tested on both."""
    from tests.pg import PostgresCluster, PostgresUnavailable

    try:
        cluster = PostgresCluster.start()
    except PostgresUnavailable as exc:
        problem = str(exc)
    else:
        problem = None
    if problem:  # failed outside the except block, so the message is shown once
        pytest.fail(problem, pytrace=False)
    yield cluster
    cluster.stop()


@pytest.fixture
async def postgres_url(postgres_cluster):
    """The URL of a new, empty Postgres database (no migrations applied), dropped after the
    test. Another process may open it too."""
    url = await postgres_cluster.create_database()
    yield url
    await postgres_cluster.drop_database(url)


@pytest.fixture
def files(tmp_path):
    return ImageFiles(tmp_path / "data")


@pytest.fixture
def make_service(store, files, tiny_model):
    """A service on the real store and an engine running the tiny model: 4 steps by default,
    up to 50 allowed. ``start=False`` leaves the engine stopped (jobs stay queued)."""
    from bot.core.grammar import Defaults, Limits
    from bot.core.service import Service, ServiceConfig
    from engine.worker import Engine

    engines: list[Engine] = []

    def make(start=True, *, classifier=None, text_classifier=None, helpers=None, **config):
        engine = Engine(tiny_model, preview_interval=0, max_per_owner=10)
        if start:
            engine.start()
        engines.append(engine)
        config.setdefault("limits", Limits(max_steps=50))
        cfg = ServiceConfig(defaults=Defaults(steps=4), **config)
        return Service(
            store,
            files,
            engine,
            cfg,
            classifier=classifier,
            text_classifier=text_classifier,
            helpers=helpers,
        )

    yield make
    for engine in engines:
        engine.stop()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    """One data directory per test session holding the tiny model (built once, ~3 s)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_model(model_dir):
    from engine.loading import load_model

    return load_model("tiny", data_dir=model_dir)


def pytest_collection_modifyitems(items):
    # Every test that runs the fake Discord server is end to end, so `-m "not e2e"` means what
    # it says.
    for item in items:
        if "fake" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture
async def fake():
    """The fake Discord server. After each test: every interaction was answered within
    Discord's 3 seconds, and nothing Easel posted could ping anyone."""
    from tests.fake_discord import FakeDiscord

    async with FakeDiscord() as fake:
        yield fake
    late = [(i.id, i.response_delay) for i in fake.late_responses]
    assert not late, f"interactions answered after Discord's deadline: {late}"
    pinging = [m["content"][:80] for m in fake.messages_that_could_ping()]
    assert not pinging, f"messages that could ping someone: {pinging}"


@pytest.fixture
async def h(fake, store, files, tiny_model, tmp_path):
    """The real bot, service and engine (tiny model) against the fake Discord server."""
    from tests.harness import Harness

    harness = Harness(fake, store, files, tiny_model, tmp_path)
    yield harness
    harness.close()
