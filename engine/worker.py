"""The engine: one thread owns the pipeline (diffusers schedulers are not thread-safe).

Requests enter a bounded fair queue; compatible ones (same model, LoRAs, size, steps …) run as
one batched pipeline call; progress and previews go back to the asyncio loop with
``call_soon_threadsafe``; cancellation and stopping take effect at the next step boundary
(``threading.Event``s, as InvokeAI's session processor).

The models come from a :class:`~engine.pool.ModelPool`: a batch's model is loaded when its turn
comes, so turns stay round-robin across users whatever model each wants (a model switch costs
time, never anyone's place in the queue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from engine.adapters import unknown_lora
from engine.catalogue import AdapterEntry, Catalogue, ModelEntry
from engine.fairqueue import FairQueue
from engine.families import FAMILIES
from engine.loading import LoadedModel, ModelLoadError, is_out_of_memory
from engine.pipelines import Runner, StepAborted
from engine.pool import ModelPool
from engine.preview import latents_to_preview
from engine.requests import (
    EngineError,
    EngineHealth,
    EngineStopped,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    JobCancelled,
    ModelInfo,
    NotAvailable,
    Progress,
    QueuedJob,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[..., None]


@dataclass(eq=False)
class _Job:
    ticket: int
    request: GenerationRequest
    future: concurrent.futures.Future[GenerationResult]
    on_progress: ProgressCallback | None
    loop: asyncio.AbstractEventLoop | None
    cancelled: threading.Event = field(default_factory=threading.Event)


class JobHandle:
    """What :meth:`Engine.submit` returns: await it on the loop, or block on it from a thread."""

    def __init__(self, engine: Engine, job: _Job, position: int) -> None:
        self._engine = engine
        self._job = job
        self.position = position  # in the queue when submitted; 0 = next
        self.job_id = job.request.job_id
        self.ticket = job.ticket

    async def wait(self) -> GenerationResult:
        return await asyncio.wrap_future(self._job.future)

    def result(self, timeout: float | None = None) -> GenerationResult:
        return self._job.future.result(timeout)

    def done(self) -> bool:
        return self._job.future.done()

    def cancel(self) -> bool:
        return self._engine.cancel_ticket(self.ticket)


class Engine:
    def __init__(
        self,
        model: LoadedModel | ModelPool,
        *,
        queue_size: int = 100,
        max_per_owner: int = 3,
        batch_max_images: int = 8,
        preview_interval: float = 1.0,
    ) -> None:
        """``model``: a model pool (a catalogue), or one loaded model (a catalogue of one)."""
        self.pool = model if isinstance(model, ModelPool) else ModelPool.of(model)
        self.batch_max_images = batch_max_images
        self.preview_interval = preview_interval
        self._queue: FairQueue[_Job] = FairQueue(max_items=queue_size, max_per_owner=max_per_owner)
        self._cond = threading.Condition()
        self._running: list[_Job] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tickets = itertools.count(1)
        self._health = EngineHealth(alive=False, model=self.pool.info(), queued=0, running=0)

    @property
    def info(self) -> ModelInfo:
        """The default model's ModelInfo (until it is loaded, without its identity)."""
        return self.pool.info()

    @property
    def catalogue(self) -> Catalogue:
        return self.pool.catalogue

    # -- what there is (cheap: nothing is loaded; fine on the event loop) -------------------

    def models(self) -> tuple[ModelEntry, ...]:
        """The catalogue: name, family, description, defaults (steps, guidance, sampler,
        native_side), nsfw_only, fast, few_step."""
        return self.pool.catalogue.entries()

    def model_info(self, name: str = "") -> ModelInfo:
        """One model's ModelInfo. Raises UnknownModel."""
        return self.pool.info(name)

    def loras(self) -> tuple[AdapterEntry, ...]:
        return self.pool.lora_entries()

    def embeddings(self) -> tuple[AdapterEntry, ...]:
        return self.pool.embedding_entries()

    def check(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its model's catalogue name, or the InvalidRequest that it cannot
        run here: an unknown model or LoRA, a sampler or option its family lacks."""
        problem = request.problem()
        if problem is not None:
            raise GenerationError(problem)
        entry = self.pool.entry(request.model)
        for name, _ in request.loras:
            if self.pool.loras.find(name) is None:
                raise unknown_lora(name, self.pool.loras)
        if entry.family is not None:  # else it is checked once the model is loaded
            problem = FAMILIES[entry.family].request_problem(
                entry.name,
                sampler=request.sampler,
                width=request.width,
                height=request.height,
                tile=request.tile,
            )
            if problem is not None:
                raise NotAvailable(problem)
        return replace(request, model=entry.name)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._loop, name="easel-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the thread, mid-generation if need be; unfinished jobs fail with EngineStopped
        (the service leaves them queued in the database, to resume at the next start)."""
        self._stop.set()
        with self._cond:
            waiting = [job for _, job in self._queue.items()]
            for job in waiting:
                self._queue.remove(lambda j, job=job: j is job)
            self._cond.notify_all()
        for job in waiting:
            _fail(job, EngineStopped("Easel is shutting down; the job will resume at restart."))
        if self._thread is not None:
            self._thread.join(timeout)

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> JobHandle:
        """Queue ``request``. Raises QueueFull / OwnerQueueFull at once instead of waiting.

        ``on_progress(Progress)`` is called on ``loop`` (thread-safely) when given, else on the
        engine thread.
        """
        request = self.check(request)
        job = _Job(next(self._tickets), request, concurrent.futures.Future(), on_progress, loop)
        with self._cond:
            if self._stop.is_set():  # checked under the lock that stop() takes, so no job
                raise EngineStopped("Easel is shutting down.")  # slips in after it
            position = self._queue.push(
                request.owner, job, size=request.count, key=request.batch_key()
            )
            position += 1 if self._running else 0
            self._cond.notify()
        return JobHandle(self, job, position)

    def cancel_ticket(self, ticket: int) -> bool:
        return self._cancel(lambda job: job.ticket == ticket)

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job, or stop a running one at the next step. False if unknown."""
        return self._cancel(lambda job: job.request.job_id == job_id)

    def _cancel(self, match: Callable[[_Job], bool]) -> bool:
        with self._cond:
            queued = self._queue.remove(match)
            running = next((j for j in self._running if match(j)), None)
        if queued is not None:
            _fail(queued, JobCancelled("Cancelled."))
            return True
        if running is not None and not running.cancelled.is_set():
            running.cancelled.set()
            _fail(running, JobCancelled("Cancelled."))
            return True
        return False

    # -- looking -------------------------------------------------------------------------------

    def snapshot(self) -> list[QueuedJob]:
        with self._cond:
            running = [
                QueuedJob(j.request.job_id, j.request.owner, 0, j.request.count)
                for j in self._running
            ]
            # Position: jobs ahead (the running batch counts as one), so 0 is "next".
            busy = 1 if self._running else 0
            waiting = [
                QueuedJob(j.request.job_id, j.request.owner, busy + i, j.request.count)
                for i, j in enumerate(self._queue.order())
            ]
        return running + waiting

    def position(self, job_id: int) -> int | None:
        for entry in self.snapshot():
            if entry.job_id == job_id:
                return entry.position
        return None

    def health(self) -> EngineHealth:
        with self._cond:
            self._health.alive = self._thread is not None and self._thread.is_alive()
            self._health.queued = len(self._queue)
            self._health.running = len(self._running)
            health = EngineHealth(**vars(self._health))
        health.extra = {
            **health.extra,
            "models_loaded": [m.name for m in self.pool.loaded()],
            "model_memory_bytes": self.pool.used_bytes(),
            "model_loads": self.pool.loads,
            "model_evictions": self.pool.evictions,
        }
        return health

    # -- the thread ----------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                while not len(self._queue) and not self._stop.is_set():
                    self._cond.wait()
                if self._stop.is_set():
                    break
                batch = self._queue.pop_batch(self.batch_max_images)
                self._running = batch
            try:
                self._run(batch)
            finally:
                with self._cond:
                    self._running = []
        with self._cond:
            self._health.alive = False

    def _run(self, batch: list[_Job]) -> None:
        try:
            self._generate(batch)
        except StepAborted:  # stopping, or every job of the batch was cancelled
            error = EngineStopped("Easel stopped mid-job.") if self._stop.is_set() else None
            for job in batch:
                _fail(job, error)
        except InvalidRequest as exc:  # the model's family cannot run these jobs
            self._fail_all(batch, exc)
        except ModelLoadError as exc:
            log.error("%s", exc)
            self._fail_all(batch, GenerationError(str(exc)))
        except Exception as exc:
            if is_out_of_memory(exc):
                self._health.out_of_memory += 1
                _free_memory()
                if len(batch) > 1:
                    log.warning(
                        "Out of memory with %d jobs batched; running them one by one.", len(batch)
                    )
                    for job in batch:
                        self._run([job])
                    return
                error = GenerationError(
                    "Out of memory: try a smaller size, fewer images or fewer steps.",
                    out_of_memory=True,
                )
            else:
                log.exception("Generation failed")
                error = GenerationError(f"Generation failed: {_short(exc)}")
            self._fail_all(batch, error)

    def _fail_all(self, batch: list[_Job], error: GenerationError) -> None:
        self._health.jobs_failed += len(batch)
        self._health.last_error = str(error)
        for job in batch:
            _fail(job, error)

    def _generate(self, batch: list[_Job]) -> None:
        # Settled jobs are skipped: after an out-of-memory split, a batch's earlier groups are.
        live = [job for job in batch if not job.cancelled.is_set() and not job.future.done()]
        if not live:
            return
        entry, model, runner = self.pool.acquire(live[0].request.model)
        self._health.model = self.pool.info()
        # The entry's own LoRAs (an LCM-LoRA entry) first; the job's own weight wins.
        mine = {n.casefold() for n, _ in live[0].request.loras}
        loras = tuple((n, w) for n, w in entry.loras if n.casefold() not in mine)
        loras += live[0].request.loras
        requests = [replace(j.request, loras=loras) for j in live]
        prepared = runner.prepare(requests)
        for group in prepared.groups:
            jobs = [live[i] for i in group]
            if len(prepared.groups) > 1 and all(j.cancelled.is_set() for j in jobs):
                continue
            self._generate_group(entry, model, runner, jobs, [requests[i] for i in group])

    def _generate_group(
        self,
        entry: ModelEntry,
        model: LoadedModel,
        runner: Runner,
        live: list[_Job],
        requests: list[GenerationRequest],
    ) -> None:
        started = time.perf_counter()
        last_preview = [started]
        offsets = list(itertools.accumulate((j.request.count for j in live), initial=0))

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            if self._stop.is_set() or all(j.cancelled.is_set() for j in live):
                raise StepAborted
            now = time.perf_counter()
            want_preview = (
                self.preview_interval > 0
                and now - last_preview[0] >= self.preview_interval
                and step < total
            )
            if want_preview:
                last_preview[0] = now
            for job, offset in zip(live, offsets, strict=False):
                if job.on_progress is None or job.cancelled.is_set():
                    continue
                preview = None
                if want_preview and job.request.previews:
                    preview = latents_to_preview(latents[offset], model.family)
                _notify(job, step, total, preview)

        for job in live:  # step 0: the job has started
            if job.on_progress is not None:
                _notify(job, 0, job.request.denoising_steps(), None)
        output = runner.run(requests, on_step)
        seconds = time.perf_counter() - started
        batch_images = sum(j.request.count for j in live)
        repro = {**output.repro, "model": entry.name}
        for job, job_images, encoded in zip(live, output.images, output.encoded, strict=True):
            if job.cancelled.is_set() or job.future.done():
                continue
            result = GenerationResult(
                tuple(job_images),
                repro,
                seconds,
                batch_images,
                dropped_tokens=encoded.dropped_tokens,
                dropped_text=encoded.dropped_text,
                notes=(*encoded.notes, *output.notes),
            )
            _settle(job, result)
            self._health.jobs_done += 1


def _notify(job: _Job, step: int, total: int, preview: Image.Image | None) -> None:
    progress = Progress(job.request.job_id, step, total, preview)
    callback = job.on_progress
    assert callback is not None
    if job.loop is not None:
        # A closed loop means nobody is listening any more.
        with contextlib.suppress(RuntimeError):
            job.loop.call_soon_threadsafe(callback, progress)
    else:
        try:
            callback(progress)
        except Exception:
            log.exception("Progress callback failed")


def _settle(job: _Job, result: GenerationResult) -> None:
    # A cancel on another thread may have failed the future a moment ago; it stays failed.
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        job.future.set_result(result)


def _fail(job: _Job, error: EngineError | None) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled already
        job.future.set_exception(error or JobCancelled("Cancelled."))


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]
