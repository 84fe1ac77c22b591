"""The engine on the tiny model: real diffusers pipelines, the real worker thread."""

from __future__ import annotations

import asyncio
import io
import threading
import time

import pytest
import torch
from PIL import Image

from engine.pipelines import Runner
from engine.preview import latents_to_preview
from engine.requests import (
    EngineStopped,
    GenerationError,
    GenerationRequest,
    JobCancelled,
    Operation,
    OwnerAtCapacity,
    QueueAtCapacity,
)
from engine.samplers import SCHEDULERS
from engine.worker import Engine

TIMEOUT = 60


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request(
    prompt="a lighthouse at dusk", seeds=(7, 8, 9, 10), owner="ann", **kw
) -> GenerationRequest:
    values = dict(
        operation=Operation.TXT2IMG,
        prompt=prompt,
        negative="",
        width=64,
        height=64,
        steps=4,
        guidance=7.0,
        sampler="euler_a",
        seeds=tuple(seeds),
        owner=owner,
    )
    values.update(kw)
    return GenerationRequest(**values)


@pytest.fixture
def make_engine(tiny_model):
    engines: list[Engine] = []

    def make(start=True, **kw) -> Engine:
        engine = Engine(tiny_model, **{"preview_interval": 0.0, **kw})
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


def run_alone(engine: Engine, req: GenerationRequest) -> list[bytes]:
    return [png(i) for i in engine.submit(req).result(TIMEOUT).images]


def test_same_request_gives_byte_identical_images(make_engine):
    engine = make_engine()
    first = run_alone(engine, request())
    second = run_alone(engine, request())
    assert first == second
    assert len(set(first)) == 4  # four different seeds, four different images
    assert run_alone(engine, request(seeds=(8, 9, 10, 11)))[0] == first[1]


def test_each_grid_image_can_be_remade_alone(make_engine):
    engine = make_engine()
    grid = run_alone(engine, request(seeds=(7, 8, 9, 10)))
    for i, seed in enumerate((7, 8, 9, 10)):
        assert run_alone(engine, request(seeds=(seed,))) == [grid[i]]


@pytest.mark.parametrize("guidance", [7.0, 1.0])  # with and without the unconditional pass
def test_batched_results_equal_unbatched_ones(make_engine, guidance):
    requests = [
        request("a red fox", (1, 2), owner="a", guidance=guidance),
        request("a blue whale at night", (3,), owner="b", guidance=guidance),
        request("tea", (4, 5, 6), owner="c", guidance=guidance, negative="blurry"),
    ]
    batched_engine = make_engine(start=False, batch_max_images=8)
    handles = [batched_engine.submit(r) for r in requests]
    batched_engine.start()  # all three are waiting: one pipeline call
    results = [h.result(TIMEOUT) for h in handles]
    assert [r.batch_images for r in results] == [6, 6, 6]

    alone = make_engine()
    for req, result in zip(requests, results, strict=True):
        assert [png(i) for i in result.images] == run_alone(alone, req)


def test_fair_order_round_robin_across_users(make_engine):
    engine = make_engine(start=False, batch_max_images=0)  # no batching: one job per call
    order: list[str] = []
    lock = threading.Lock()

    def track(name):
        def on_progress(p):
            if p.step == 0:
                with lock:
                    order.append(name)

        return on_progress

    submissions = [("ann", "a1"), ("ann", "a2"), ("ann", "a3"), ("bob", "b1"), ("cat", "c1")]
    handles = [
        engine.submit(request(seeds=(1,), owner=owner, job_id=i), on_progress=track(name))
        for i, (owner, name) in enumerate(submissions)
    ]
    assert [h.position for h in handles] == [0, 1, 2, 1, 2]  # positions when submitted
    assert [e.job_id for e in engine.snapshot()] == [0, 3, 4, 1, 2]  # and now
    engine.start()
    for h in handles:
        h.result(TIMEOUT)
    assert order == ["a1", "b1", "c1", "a2", "a3"]


def test_full_queue_and_per_user_cap_are_refused_at_once(make_engine):
    engine = make_engine(start=False, queue_size=3, max_per_owner=2)
    engine.submit(request(owner="ann"))
    engine.submit(request(owner="ann"))
    with pytest.raises(OwnerAtCapacity, match="already have 2 jobs waiting"):
        engine.submit(request(owner="ann"))
    engine.submit(request(owner="bob"))
    with pytest.raises(QueueAtCapacity, match="queue is full"):
        engine.submit(request(owner="cat"))


def test_cancel_a_queued_job(make_engine):
    engine = make_engine(start=False)
    keep = engine.submit(request(job_id=1, seeds=(1,)))
    drop = engine.submit(request(job_id=2, seeds=(2,)))
    assert engine.cancel(2)
    assert not engine.cancel(99)
    engine.start()
    assert len(keep.result(TIMEOUT).images) == 1
    with pytest.raises(JobCancelled):
        drop.result(TIMEOUT)


def test_cancel_stops_a_running_job_at_the_next_step(make_engine):
    engine = make_engine()
    started = threading.Event()
    steps: list[int] = []

    def on_progress(p):
        steps.append(p.step)
        if p.step >= 1:
            started.set()

    long = engine.submit(request(job_id=5, seeds=(1,), steps=500), on_progress=on_progress)
    after = engine.submit(request(job_id=6, seeds=(2,), owner="bob"))
    assert started.wait(TIMEOUT)
    t0 = time.perf_counter()
    assert engine.cancel(5)
    with pytest.raises(JobCancelled):
        long.result(TIMEOUT)
    assert len(after.result(TIMEOUT).images) == 1  # the thread lives on
    assert time.perf_counter() - t0 < 10
    assert max(steps) < 500


def test_a_failing_job_fails_alone_and_the_thread_lives_on(make_engine):
    engine = make_engine()
    # A start image whose file is cut short: Pillow opens it lazily and fails on decoding.
    data = png(Image.new("RGB", (64, 64), (200, 30, 30)))
    truncated = Image.open(io.BytesIO(data[: len(data) // 2]))
    broken = request(
        operation=Operation.IMG2IMG, seeds=(1,), strength=0.5, init_images=(truncated,)
    )
    bad = engine.submit(broken)
    good = engine.submit(request(seeds=(1,), owner="bob"))
    with pytest.raises(GenerationError, match="Generation failed"):
        bad.result(TIMEOUT)
    assert len(good.result(TIMEOUT).images) == 1
    health = engine.health()
    assert health.alive and health.jobs_failed == 1 and health.jobs_done >= 1
    assert "Generation failed" in health.last_error


def test_invalid_requests_are_refused_before_queueing(make_engine):
    engine = make_engine(start=False)
    with pytest.raises(GenerationError, match="multiples of 8"):
        engine.submit(request(width=60))
    with pytest.raises(GenerationError, match="leaves no step to run"):
        engine.submit(
            request(
                operation=Operation.IMG2IMG, strength=0.1, init_images=(Image.new("RGB", (64, 64)),)
            )
        )
    assert engine.snapshot() == []


def test_out_of_memory_in_a_batch_retries_jobs_one_by_one(make_engine, monkeypatch):
    # Out-of-memory cannot be provoked safely on a CPU; inject it at the pipeline edge.
    engine = make_engine(start=False, batch_max_images=8)
    real_run = Runner.run
    calls: list[int] = []

    def flaky_run(self, requests, on_step):
        calls.append(len(requests))
        if len(requests) > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_run(self, requests, on_step)

    monkeypatch.setattr(Runner, "run", flaky_run)
    handles = [engine.submit(request(seeds=(i,), owner=o)) for i, o in enumerate("abc")]
    engine.start()
    assert all(len(h.result(TIMEOUT).images) == 1 for h in handles)
    assert calls == [3, 1, 1, 1]
    assert engine.health().out_of_memory == 1


def test_out_of_memory_alone_gives_a_clear_message(make_engine, monkeypatch):
    engine = make_engine()

    def oom(self, requests, on_step):
        raise torch.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(Runner, "run", oom)
    with pytest.raises(GenerationError, match="Out of memory: try a smaller size"):
        engine.submit(request(seeds=(1,))).result(TIMEOUT)
    assert engine.health().alive


def test_stop_ends_the_thread_mid_generation(make_engine):
    engine = make_engine()
    started = threading.Event()
    running = engine.submit(
        request(seeds=(1,), steps=500), on_progress=lambda p: p.step >= 1 and started.set()
    )
    waiting = engine.submit(request(seeds=(2,), owner="bob"))
    assert started.wait(TIMEOUT)
    t0 = time.perf_counter()
    engine.stop()
    assert time.perf_counter() - t0 < 10
    assert not engine.health().alive
    for handle in (running, waiting):
        with pytest.raises(EngineStopped):
            handle.result(1)
    with pytest.raises(EngineStopped):
        engine.submit(request())


async def test_progress_and_previews_arrive_on_the_event_loop(make_engine):
    engine = make_engine(preview_interval=1e-9)  # a preview at every step
    loop = asyncio.get_running_loop()
    seen: list[tuple[int, int, bool, bool]] = []

    def on_progress(p):
        seen.append(
            (
                p.step,
                p.total,
                p.preview is not None,
                threading.current_thread() is threading.main_thread(),
            )
        )

    handle = engine.submit(request(job_id=3, seeds=(1, 2)), on_progress=on_progress, loop=loop)
    result = await handle.wait()
    await asyncio.sleep(0)  # let the last call_soon_threadsafe callbacks run
    assert [s[0] for s in seen] == [0, 1, 2, 3, 4]
    assert all(total == 4 for _, total, _, _ in seen)
    assert all(on_loop for *_, on_loop in seen)
    assert [s[2] for s in seen] == [False, True, True, True, False]  # none at start or the end
    assert len(result.images) == 2
    quiet: list = []
    await (
        make_engine(preview_interval=0)
        .submit(request(seeds=(1,)), on_progress=quiet.append, loop=loop)
        .wait()
    )
    await asyncio.sleep(0)
    assert len(quiet) == 5 and all(p.preview is None for p in quiet)  # 0 turns previews off


def test_preview_is_a_small_rgb_picture():
    preview = latents_to_preview(torch.randn(4, 6, 11), "sd1")
    assert preview.mode == "RGB" and max(preview.size) == 256 and preview.width > preview.height
    assert latents_to_preview(torch.randn(4, 8, 8), "sdxl").size == (256, 256)


@pytest.mark.parametrize("sampler", sorted(SCHEDULERS))
def test_every_sampler_runs_and_is_recorded(make_engine, sampler):
    engine = make_engine()
    result = engine.submit(request(seeds=(1,), sampler=sampler)).result(TIMEOUT)
    assert result.images[0].size == (64, 64)
    cls, _ = SCHEDULERS[sampler]
    assert result.repro["scheduler"] == cls.__name__
    assert result.repro["scheduler_config"]["num_train_timesteps"] == 1000


def test_repro_record_names_model_dtype_device_and_versions(make_engine):
    result = make_engine().submit(request(seeds=(1,))).result(TIMEOUT)
    repro = result.repro
    assert repro["model"] == "tiny" and repro["model_identity"].startswith("sha256:")
    assert (repro["dtype"], repro["device"]) == ("float32", "cpu")
    assert repro["torch"] == torch.__version__ and repro["diffusers"]


def test_image_to_image_and_upscale(make_engine):
    engine = make_engine()
    source = engine.submit(request(seeds=(1,))).result(TIMEOUT).images[0]
    variation = engine.submit(
        request(operation=Operation.IMG2IMG, seeds=(5, 6), strength=0.6, init_images=(source,))
    ).result(TIMEOUT)
    assert [i.size for i in variation.images] == [(64, 64), (64, 64)]
    assert png(variation.images[0]) != png(variation.images[1])
    upscaled = engine.submit(
        request(
            operation=Operation.UPSCALE,
            seeds=(1,),
            width=128,
            height=128,
            strength=0.3,
            init_images=(source,),
        )
    ).result(TIMEOUT)
    assert upscaled.images[0].size == (128, 128)
    assert upscaled.repro["vae_tiling"] is True


def test_tiling_wraps_edges_and_does_not_leak_into_later_jobs(make_engine, tiny_model):
    engine = make_engine()
    plain = run_alone(engine, request(seeds=(3,)))
    tiled = engine.submit(request(seeds=(3,), tile=True)).result(TIMEOUT).images[0]
    assert png(tiled) != plain[0]
    assert run_alone(engine, request(seeds=(3,))) == plain  # padding restored afterwards
    convs = [m for m in tiny_model.txt2img.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.padding_mode == "zeros" for m in convs)


def test_weights_are_shared_between_pipelines(tiny_model):
    assert tiny_model.img2img.unet is tiny_model.txt2img.unet
    assert tiny_model.img2img.vae is tiny_model.txt2img.vae
    assert tiny_model.img2img.text_encoder is tiny_model.txt2img.text_encoder


async def test_a_tiny_autoencoder_decodes_previews_and_changes_no_image(model_dir):
    """EASEL_PREVIEW_DECODERS: previews decoded by a TAESD (here a tiny random one) instead of
    the linear colour map; the finished images are the same bytes either way, and a decoder that
    cannot load leaves the linear previews and the job unharmed."""
    from engine.catalogue import ExtraModels, load_catalogue
    from engine.pool import ModelPool

    loop = asyncio.get_running_loop()
    runs = {}
    for name, decoders in {
        "linear": (),
        "taesd": (("sd1", "tiny"),),
        "broken": (("sd1", str(model_dir / "no-such-taesd")),),
    }.items():
        extras = ExtraModels(preview_decoders=decoders)
        pool = ModelPool(load_catalogue(None, "tiny"), data_dir=model_dir, extras=extras)
        engine = Engine(pool, preview_interval=1e-9)
        engine.start()
        try:
            seen: list = []
            result = await engine.submit(
                request(seeds=(3,)), on_progress=seen.append, loop=loop
            ).wait()
        finally:
            engine.stop()
        await asyncio.sleep(0)
        previews = [png(p.preview) for p in seen if p.preview is not None]
        runs[name] = previews, png(result.images[0])
    assert len(runs["taesd"][0]) == len(runs["linear"][0]) == 3
    assert runs["taesd"][1] == runs["linear"][1] == runs["broken"][1]
    assert not set(runs["taesd"][0]) & set(runs["linear"][0])
    assert runs["broken"][0] == runs["linear"][0]
