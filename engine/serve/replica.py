"""The Ray Serve deployment: each replica is one device (a GPU, or a share of a CPU) running
batches with the same :class:`~engine.worker.DeviceExecutor`, model pool and runner as the local
engine, so a batch makes the same images wherever it runs.

A call (:meth:`EaselReplica.run`) streams its batch back with a Serve streaming response (an
async generator), one tuple per event:

- ``(STARTED, where)``: the replica took the batch (``host:pid``);
- ``(PROGRESS, index, step, total, preview or None)``: job ``index`` of the batch;
- ``(RESULT, index, GenerationResult)``;
- ``(FAILED, index, error class name, message, out_of_memory)``: an
  :class:`~engine.requests.EngineError` of that name.

Cancelling the call (Serve raises ``CancelledError`` in the generator) stops the batch at the next
step, as a cancellation does on a local device.

Models map onto Serve's model multiplexing: the bot sends a batch with its model's catalogue
name as the multiplexed model id, so Serve routes it to a replica that holds that model when one
is free, and each replica keeps the :data:`MODELS_PER_REPLICA` it used most recently (the pool's
memory budget, ``EASEL_MODEL_MEMORY``, still applies within that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

from ray import serve

from engine.requests import EngineError, GenerationError, GenerationRequest
from engine.worker import DeviceExecutor, Job, PoolSpec, first_line

APP = "easel"
DEPLOYMENT = "EaselReplica"
# Serve's own default for max_num_models_per_replica.
MODELS_PER_REPLICA = 3

STARTED, PROGRESS, RESULT, FAILED = "started", "progress", "result", "failed"


class _Resident:
    """A model Serve's multiplexing counts as loaded here; unloaded when Serve drops it."""

    def __init__(self, replica: EaselReplica, name: str) -> None:
        self._replica = replica
        self.name = name
        self._released = False

    def __del__(self) -> None:
        # Serve calls this when it drops the model (least recently used beyond the limit); the
        # garbage collector may call it again later, when the model may be in use once more.
        if not self._released:
            self._released = True
            self._replica.device.call(self._replica.pool.unload, self.name)


def failure(index: int, error: BaseException) -> tuple[Any, ...]:
    if not isinstance(error, EngineError):
        error = GenerationError(f"Generation failed: {first_line(error)}")
    return (FAILED, index, type(error).__name__, str(error), getattr(error, "out_of_memory", False))


@serve.deployment(
    name=DEPLOYMENT,
    # One batch at a time, as on a local device; the bot's fair queue holds the rest.
    max_ongoing_requests=1,
)
class EaselReplica:
    def __init__(
        self,
        spec: PoolSpec,
        preload: str | None = "",
        warm_up: int = 0,
    ) -> None:
        """``preload``: the model to load (and warm up) before the replica takes work; "" is
        the catalogue's default, None loads on the first batch."""
        # Ray gives a replica its GPU through CUDA_VISIBLE_DEVICES, so "auto" finds it.
        self.pool = spec.pool("auto")
        self.where = f"{socket.gethostname()}:{os.getpid()}"
        self.device = DeviceExecutor(self.pool, name=self.where, warm_up=warm_up)
        self.device.start()
        if preload is not None:
            self.device.preload(preload).result()

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def _resident(self, name: str) -> _Resident:
        await asyncio.wrap_future(self.device.call(self.device.acquire, name))
        return _Resident(self, name)

    async def run(
        self,
        requests: list[GenerationRequest],
        preview_interval: float,
        listening: list[bool],
    ) -> AsyncIterator[tuple[Any, ...]]:
        """Run one batch; ``listening[i]``: whether job ``i``'s progress is wanted."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        model = serve.get_multiplexed_model_id()
        if model:
            try:
                await self._resident(model)
            except Exception as exc:  # e.g. a model that cannot load: each job says why
                for index in range(len(requests)):
                    yield failure(index, exc)
                return
        jobs: list[Job] = []
        for index, request in enumerate(requests):

            def progress(p: Any, index: int = index) -> None:
                events.put_nowait((PROGRESS, index, p.step, p.total, p.preview))

            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            jobs.append(Job(index, request, future, progress if listening[index] else None, loop))
            future.add_done_callback(
                lambda _, index=index: loop.call_soon_threadsafe(events.put_nowait, (RESULT, index))
            )
        self.device.start_batch(jobs, preview_interval, lambda: None)
        yield (STARTED, self.where)
        pending = len(jobs)
        try:
            while pending:
                event = await events.get()
                if event[0] != RESULT:
                    yield event
                    continue
                pending -= 1
                job = jobs[event[1]]
                error = job.future.exception()
                yield (
                    (RESULT, job.ticket, job.future.result())
                    if error is None
                    else failure(job.ticket, error)
                )
        finally:  # cancelled by the caller, or done: either way nothing more runs for it
            for job in jobs:
                job.cancelled.set()
