"""The Ray Serve path end to end: a local Ray started here, two CPU replicas of the tiny model,
and the real service and database in front, as the bot runs them with EASEL_ENGINE=ray.

Ray takes a while to start (about 20 s here for the cluster and both replicas), so one cluster
serves the whole module and the tests are few: a grid, a variation, a cancellation, and a replica
killed mid-job."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from bot.core.errors import Cancelled
from bot.core.grammar import Defaults, Limits
from bot.core.models import JobKind, JobState
from bot.core.service import Actor, Service, ServiceConfig
from engine.catalogue import load_catalogue
from engine.pool import ModelPool
from engine.worker import Engine, PoolSpec

ray = pytest.importorskip("ray", reason="ray[serve] is the scale-out dependency")

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
BOB = Actor(key="discord:2", name="bob", guild_id=100, channel_id=200)
TIMEOUT = 120
LONG = "--steps 300"  # long enough to act on mid-job, about 2 s of a replica's time here


@pytest.fixture(scope="module")
def ray_engine(model_dir, tiny_model):
    """An engine whose batches run on two Ray Serve replicas (the tiny model is built once,
    by ``tiny_model``, before the replicas read it)."""
    from ray import serve

    from engine.serve import RayExecutor

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    pool = ModelPool(load_catalogue(None, "tiny"), data_dir=model_dir, device="cpu")
    executor = RayExecutor(PoolSpec.of(pool), replicas=2, gpus_per_replica=0, cpus_per_replica=1)
    engine = Engine(pool, executors=[executor], preview_interval=1e-9, max_per_owner=10)
    try:
        engine.start()
        executor.wait_ready(TIMEOUT)
        yield engine
    finally:
        engine.stop()
        serve.shutdown()
        ray.shutdown()


@pytest.fixture
def service(ray_engine, store, files):
    config = ServiceConfig(defaults=Defaults(steps=4), limits=Limits(max_steps=500))
    return Service(store, files, ray_engine, config)


@pytest.fixture
def local_service(tiny_model, store, files):
    engine = Engine(tiny_model, preview_interval=0)
    engine.start()
    yield Service(store, files, engine, ServiceConfig(defaults=Defaults(steps=4)))
    engine.stop()


async def started(submission, steps: list[int]) -> None:
    while not any(step >= 1 for step in steps):
        await asyncio.sleep(0.02)
    assert not submission.handle.done()


async def test_a_grid_streams_previews_and_equals_the_local_engines(service, local_service):
    progress: list = []
    outcome = await service.finish(
        await service.imagine(ANN, "a lighthouse at dusk --seed 7", on_progress=progress.append)
    )
    assert outcome.job.state is JobState.DONE and len(outcome.images) == 4
    # Progress and previews came back from the replica, on the event loop, for every step.
    assert [p.step for p in progress] == [0, 1, 2, 3, 4]
    assert [p.preview is not None for p in progress] == [False, True, True, True, False]
    # The same pixels as the in-process engine makes: where a batch runs changes nothing.
    local = await local_service.finish(
        await local_service.imagine(BOB, "a lighthouse at dusk --seed 7")
    )
    assert [i.sha256 for i in outcome.images] == [i.sha256 for i in local.images]
    assert await service.images_used_today(await service.user(ANN)) == 4


async def test_a_variation_runs_on_a_replica_from_the_stored_image(service):
    grid = await service.finish(await service.imagine(ANN, "a castle --seed 40"))
    vary = await service.finish(await service.vary(ANN, grid.job.id, 1, strong=True))
    assert vary.job.kind is JobKind.VARIATION and vary.job.state is JobState.DONE
    assert len(vary.images) == 4 and vary.job.spec.strength == pytest.approx(0.65)
    assert {i.sha256 for i in vary.images}.isdisjoint({i.sha256 for i in grid.images})


async def test_cancelling_reaches_the_replica_and_charges_nothing(service, ray_engine):
    steps: list[int] = []
    long = await service.imagine(
        ANN, f"a slow fox {LONG} --count 1", on_progress=lambda p: steps.append(p.step)
    )
    await started(long, steps)
    other_steps: list[int] = []
    other = await service.imagine(  # keeps the other replica busy meanwhile
        BOB, f"a slow hare {LONG} --count 1", on_progress=lambda p: other_steps.append(p.step)
    )
    await started(other, other_steps)
    assert (await service.cancel(ANN, long.job.id)).state is JobState.CANCELLED
    with pytest.raises(Cancelled):
        await service.finish(long)
    # The cancelled job's replica stopped at its next step, so a new job runs there at once,
    # while the other replica is still busy.
    quick = await service.finish(await service.imagine(ANN, "a quick hare --count 1"))
    assert quick.job.state is JobState.DONE and not other.handle.done()
    assert await service.images_used_today(await service.user(ANN)) == 1
    await service.cancel(BOB, other.job.id)


async def test_a_replica_killed_mid_job_the_job_finishes_once_elsewhere(service, ray_engine):
    retries = ray_engine.health().extra["retries"]
    steps: list[int] = []
    job = await service.imagine(
        ANN, f"a stubborn fox {LONG} --count 2", on_progress=lambda p: steps.append(p.step)
    )
    await started(job, steps)
    where = ray_engine.health().extra["running_on"][job.job.id]
    pid = where.rsplit(":", 1)[1]
    os.kill(int(pid), signal.SIGKILL)
    outcome = await service.finish(job)
    assert outcome.job.state is JobState.DONE and len(outcome.images) == 2
    assert ray_engine.health().extra["retries"] == retries + 1
    assert steps.count(0) == 2  # it started twice: once on each replica
    result = job.handle.result(0)
    assert result.attempts == 2
    # Done once, charged once: one set of images, two images on the quota.
    assert len(await service.store.get_images(job.job.id)) == 2
    assert await service.images_used_today(await service.user(ANN)) == 2


async def test_the_app_runs_batches_on_ray_when_configured(ray_engine, model_dir, tmp_path):
    """EASEL_ENGINE=ray as `easel run` reads it: the app builds no local device, and a job runs
    on the cluster's replicas (this module's Ray: the app joins the Ray this process started)."""
    from bot.app import open_app, settings

    configured = settings(
        engine="ray",
        ray_replicas=2,
        ray_gpus_per_replica=0,
        data_dir=model_dir,
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'easel.db'}",
        default_steps=4,
    )
    async with open_app(configured) as app:
        assert [e.name for e in app.engine.executors] == ["ray:easel"]
        assert app.engine.pool.loaded() == []  # the weights are on the replicas only
        app.engine.executors[0].wait_ready(TIMEOUT)
        outcome = await app.service.finish(await app.service.imagine(ANN, "a harbour --seed 5"))
        assert outcome.job.state is JobState.DONE and len(outcome.images) == 4
        assert ray_engine.health().extra["running_on"] == {}
