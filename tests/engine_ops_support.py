"""What the engine-operation tests (inpainting, ControlNet, image prompts, Subtle upscale)
share: a request on the tiny models' terms, and running requests alone or batched."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from engine.pool import ModelPool
from engine.requests import GenerationRequest, Operation
from engine.worker import Engine

TIMEOUT = 60


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def request(model: str = "tiny", seeds: tuple[int, ...] = (1, 2), **kw: Any) -> GenerationRequest:
    """A small, quick job: 64×64, three steps; ``kw`` sets any other field."""
    values: dict[str, Any] = dict(
        operation=Operation.TXT2IMG,
        prompt="a lighthouse at dusk",
        negative="",
        width=64,
        height=64,
        steps=3,
        guidance=7.0,
        sampler="euler",
        seeds=tuple(seeds),
        model=model,
    )
    values.update(kw)
    return GenerationRequest(**values)


def started(pool: ModelPool, **kw: Any) -> Engine:
    engine = Engine(pool, **{"preview_interval": 0, **kw})
    engine.start()
    return engine


def images(engine: Engine, job: GenerationRequest) -> list[bytes]:
    return [png(i) for i in engine.submit(job).result(TIMEOUT).images]


def assert_batched_equals_alone(
    pool: ModelPool, alone: Engine, jobs: list[GenerationRequest]
) -> None:
    """``jobs``, queued together, run as one pipeline call, and each job's images are the
    bytes it gets alone (and again alone: the same request, the same bytes)."""
    batched = Engine(pool, preview_interval=0, batch_max_images=8)
    handles = [batched.submit(job) for job in jobs]
    batched.start()  # all waiting: one call
    try:
        results = [h.result(TIMEOUT) for h in handles]
    finally:
        batched.stop()
    total = sum(job.count for job in jobs)
    assert [r.batch_images for r in results] == [total] * len(jobs)
    for job, result in zip(jobs, results, strict=True):
        first = images(alone, job)
        assert [png(i) for i in result.images] == first
        assert images(alone, job) == first
