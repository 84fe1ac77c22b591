"""The engine: a bounded fair queue, and executors that run its batches.

Requests enter a :class:`~engine.fairqueue.FairQueue`; compatible ones (same model, LoRAs, size,
steps …) run as one batched pipeline call. One dispatcher thread hands each batch, in the queue's
order, to whichever executor has a free slot:

- a :class:`DeviceExecutor` per local device (``cpu``, ``cuda:0``, ``cuda:1`` …): one thread
  that alone touches its device's pipelines (diffusers schedulers are not thread-safe), with its
  own :class:`~engine.pool.ModelPool`;
- or Ray Serve replicas, on this machine or others (:class:`engine.serve.RayExecutor`), each
  running a :class:`DeviceExecutor` of its own.

Progress and previews go back to the asyncio loop with ``call_soon_threadsafe``; cancellation and
stopping take effect at the next step boundary (``threading.Event``s, as InvokeAI's session
processor). Each image's pixels depend on its request alone, not on its batch or executor (on a
CPU; see :mod:`engine.loading`), so the fair order and the results stay the same whatever
executor runs a batch.

The models come from each device's pool: a batch's model is loaded when its turn comes, so
turns stay round-robin across users whatever model each wants (a model switch costs time, never
anyone's place in the queue).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from engine.catalogue import AdapterEntry, Catalogue, ExtraModels, ModelEntry
from engine.fairqueue import FairQueue
from engine.loading import LoadedModel, ModelLoadError, is_out_of_memory
from engine.pipelines import Runner, StepAborted
from engine.pool import ModelPool
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
    Operation,
    Progress,
    QueuedJob,
    first_line,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[..., None]

# One model load at a time in this process: while diffusers loads, accelerate's
# init_empty_weights patches torch.nn.Module.register_parameter for every thread
# (accelerate/big_modeling.py, init_on_device), so two devices loading at once get each other's
# empty (meta) weights.
_LOADING = threading.Lock()


@dataclass(eq=False)
class Job:
    """One request on its way through the engine, with where its outcome goes: a future, and
    progress handed to ``on_progress`` (on ``loop`` when given, else on the running thread)."""

    ticket: int
    request: GenerationRequest
    future: concurrent.futures.Future[GenerationResult]
    on_progress: ProgressCallback | None
    loop: asyncio.AbstractEventLoop | None
    cancelled: threading.Event = field(default_factory=threading.Event)
    attempts: int = 0  # pipeline runs started for it (a retry after a lost replica adds one)
    where: str = ""  # the executor running it, for health

    def notify(self, step: int, total: int, preview: Image.Image | None) -> None:
        callback = self.on_progress
        if callback is None:
            return
        progress = Progress(self.request.job_id, step, total, preview)
        if self.loop is not None:
            # A closed loop means nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(callback, progress)
        else:
            try:
                callback(progress)
            except Exception:
                log.exception("Progress callback failed")

    def settle(self, result: GenerationResult) -> None:
        # A cancel on another thread may have failed the future a moment ago; it stays failed.
        with contextlib.suppress(concurrent.futures.InvalidStateError):
            self.future.set_result(replace(result, attempts=max(self.attempts, 1)))

    def fail(self, error: EngineError | None) -> None:
        with contextlib.suppress(concurrent.futures.InvalidStateError):  # settled already
            self.future.set_exception(error or JobCancelled("Cancelled."))

    @property
    def settled(self) -> bool:
        return self.future.done()


class JobHandle:
    """What :meth:`Engine.submit` returns: await it on the loop, or block on it from a thread."""

    def __init__(self, engine: Engine, job: Job, position: int) -> None:
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


@dataclass
class ExecutorStats:
    jobs_done: int = 0
    jobs_failed: int = 0
    out_of_memory: int = 0
    retries: int = 0  # batches sent again after their executor was lost
    last_error: str | None = None

    def failed(self, batch: Sequence[Job], error: EngineError) -> None:
        self.jobs_failed += len(batch)
        self.last_error = str(error)
        for job in batch:
            job.fail(error)


class Executor:
    """Where batches run. The engine's dispatcher calls :meth:`start_batch` while
    ``slots()`` says there is room; the executor settles every job of the batch (a result or
    an error, unless it is settled already) and then calls ``done``."""

    name = "executor"
    # Seconds between the dispatcher's looks at slots() when it may change by itself (Ray
    # replicas come and go); None when it changes only as batches finish.
    poll_s: float | None = None

    def __init__(self) -> None:
        self.stats = ExecutorStats()

    def start(self) -> None:
        pass

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop mid-batch if need be: unfinished jobs fail with EngineStopped."""

    def alive(self) -> bool:
        return True

    def slots(self) -> int:
        """Batches this executor can run at once now."""
        return 1

    def holds(self, model: str) -> bool:
        """Whether ``model`` (a catalogue name) is loaded here, so a batch for it runs soonest."""
        return False

    def start_batch(
        self, batch: list[Job], preview_interval: float, done: Callable[[], None]
    ) -> None:
        raise NotImplementedError

    def abort(self, batch: list[Job]) -> None:
        """Every job of ``batch``, which runs here, was cancelled: stop it if that is cheap.
        (A device notices by itself at the next step.)"""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class DeviceExecutor(Executor):
    """One device: a thread that alone runs this pool's pipelines, one batch at a time."""

    def __init__(
        self,
        pool: ModelPool,
        *,
        name: str | None = None,
        warm_up: int = 0,
    ) -> None:
        """``warm_up``: the largest batch (images) to warm each model up for as soon as it is
        loaded here, so the compiled denoiser (``EASEL_COMPILE``) and the device's kernels are
        ready before the first user's job (:func:`warm_up_shapes`); 0: no warm-up."""
        super().__init__()
        self.pool = pool
        self.name = name or pool.device
        self.warm_up = warm_up
        self._warmed: set[str] = set()
        self._inbox: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._busy = False

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._serve, name=f"easel-device-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        self._stop.set()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(timeout)

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _serve(self) -> None:
        if self.pool.device.startswith("cuda:") and torch.cuda.is_available():
            # The current CUDA device is per thread; this thread's work goes to this one.
            torch.cuda.set_device(torch.device(self.pool.device))
        while True:
            task = self._inbox.get()
            if task is None:
                return
            try:
                task()
            except Exception:
                log.exception("%s: a task failed", self.name)

    def call(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on this device's thread, after the batches before it."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def task() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args))
            except BaseException as exc:
                future.set_exception(exc)

        self._inbox.put(task)
        return future

    # -- the dispatcher's side ----------------------------------------------------------------

    def slots(self) -> int:
        return 1

    def holds(self, model: str) -> bool:
        return any(m.name.casefold() == model.casefold() for m in self.pool.loaded())

    def start_batch(
        self, batch: list[Job], preview_interval: float, done: Callable[[], None]
    ) -> None:
        def task() -> None:
            try:
                self.run(batch, preview_interval)
            finally:
                done()

        self._inbox.put(task)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "device": self.pool.device,
            "busy": self._busy,
            "jobs_done": self.stats.jobs_done,
            "models_loaded": [m.name for m in self.pool.loaded()],
        }

    def preload(self, name: str = "") -> concurrent.futures.Future[ModelInfo]:
        """Load ``name`` (the default model) here and warm it up, on this device's thread."""

        def load() -> ModelInfo:
            entry, _, runner = self.acquire(name)
            self._warm(entry, runner)
            return self.pool.info(entry.name)

        return self.call(load)

    # -- this device's thread -----------------------------------------------------------------

    def acquire(self, name: str) -> tuple[ModelEntry, LoadedModel, Runner]:
        """:meth:`ModelPool.acquire`, one load at a time in this process."""
        with _LOADING:
            return self.pool.acquire(name)

    def run(self, batch: list[Job], preview_interval: float) -> None:
        """Run ``batch`` here and settle each of its jobs. This device's thread only."""
        self._busy = True
        try:
            self._run(batch, preview_interval)
        finally:
            self._busy = False

    def _run(self, batch: list[Job], preview_interval: float) -> None:
        try:
            self._generate(batch, preview_interval)
        except StepAborted:  # stopping, or every job of the batch was cancelled
            error = EngineStopped("Easel stopped mid-job.") if self._stop.is_set() else None
            for job in batch:
                job.fail(error)
        except InvalidRequest as exc:  # the model's family cannot run these jobs
            self.stats.failed(batch, exc)
        except ModelLoadError as exc:
            log.error("%s", exc)
            self.stats.failed(batch, GenerationError(str(exc)))
        except Exception as exc:
            if is_out_of_memory(exc):
                self.stats.out_of_memory += 1
                _free_memory()
                if len(batch) > 1:
                    log.warning(
                        "Out of memory with %d jobs batched; running them one by one.", len(batch)
                    )
                    for job in batch:
                        self._run([job], preview_interval)
                    return
                error = GenerationError(
                    "Out of memory: try a smaller size, fewer images or fewer steps.",
                    out_of_memory=True,
                )
            else:
                log.exception("Generation failed")
                error = GenerationError(f"Generation failed: {first_line(exc)}")
            self.stats.failed(batch, error)

    def _generate(self, batch: list[Job], preview_interval: float) -> None:
        # Settled jobs are skipped: after an out-of-memory split, a batch's earlier groups are.
        live = [job for job in batch if not job.cancelled.is_set() and not job.settled]
        if not live:
            return
        if self._stop.is_set():
            raise StepAborted
        entry, model, runner = self.acquire(live[0].request.model)
        self._warm(entry, runner)
        # The entry's own LoRAs (an LCM-LoRA entry) first; the job's own weight wins.
        mine = {n.casefold() for n, _ in live[0].request.loras}
        loras = tuple((n, w) for n, w in entry.loras if n.casefold() not in mine)
        loras += live[0].request.loras
        requests = [replace(j.request, loras=loras) for j in live]
        with _LOADING:  # LoRAs, embeddings and companion models load here
            prepared = runner.prepare(requests)
        for job in live:
            job.attempts += 1
        for group in prepared.groups:
            jobs = [live[i] for i in group]
            if len(prepared.groups) > 1 and all(j.cancelled.is_set() for j in jobs):
                continue
            self._generate_group(
                entry, model, runner, jobs, [requests[i] for i in group], preview_interval
            )

    def _generate_group(
        self,
        entry: ModelEntry,
        model: LoadedModel,
        runner: Runner,
        live: list[Job],
        requests: list[GenerationRequest],
        preview_interval: float,
    ) -> None:
        started = time.perf_counter()
        last_preview: list[float | None] = [None]
        offsets = list(itertools.accumulate((j.request.count for j in live), initial=0))

        def on_step(step: int, total: int, latents: torch.Tensor) -> None:
            if self._stop.is_set() or all(j.cancelled.is_set() for j in live):
                raise StepAborted
            now = time.perf_counter()
            # The first preview after the first step, then one per interval: a 20-step job
            # takes well under a second on an H100, so waiting an interval first shows none.
            due = last_preview[0] is None or now - last_preview[0] >= preview_interval
            want_preview = preview_interval > 0 and due and step < total
            if want_preview:
                last_preview[0] = now
            for job, offset in zip(live, offsets, strict=False):
                if job.on_progress is None or job.cancelled.is_set():
                    continue
                preview = None
                if want_preview and job.request.previews:
                    preview = runner.companions.previews.image(latents[offset])
                job.notify(step, total, preview)

        for job in live:  # step 0: the job has started
            job.notify(0, job.request.denoising_steps(), None)
        output = runner.run(requests, on_step)
        seconds = time.perf_counter() - started
        batch_images = sum(j.request.count for j in live)
        repro = {**output.repro, "model": entry.name}
        for job, job_images, encoded in zip(live, output.images, output.encoded, strict=True):
            if job.cancelled.is_set() or job.settled:
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
            job.settle(result)
            self.stats.jobs_done += 1

    def _warm(self, entry: ModelEntry, runner: Runner) -> None:
        """Run the warm-up shapes once per loaded model: compiling (``torch.compile`` compiles
        on a shape's first call) and tuning happen here, not in a user's job."""
        key = entry.name.casefold()
        if not self.warm_up or key in self._warmed:
            return
        self._warmed.add(key)
        t0 = time.perf_counter()
        shapes = warm_up_shapes(entry.native_side, self.warm_up, entry.size_multiple)
        for images, width, height in shapes:
            request = GenerationRequest(
                Operation.TXT2IMG,
                "warm-up",
                "",
                width,
                height,
                2,
                entry.guidance,
                entry.sampler,
                tuple(range(images)),
                model=entry.name,
                loras=entry.loras,
            )
            runner.run([request], lambda *_: None)
        log.info(
            "%s: %s warmed up for %d shapes in %.1f s.",
            self.name,
            entry.name,
            len(shapes),
            time.perf_counter() - t0,
        )


def warm_up_shapes(
    native_side: int, batch_max_images: int, multiple: int = 8
) -> list[tuple[int, int, int]]:
    """The (images, width, height) calls to warm a compiled model with: squares of the sizes a
    batch takes (1 image, a grid of 4, a full batch), so a compiled denoiser has seen a second
    batch size and made the batch dimension dynamic before a user's job, and a 4:3 image, so it
    has done the same for the spatial ones (torch.compile's automatic dynamic shapes recompile
    once on the second distinct size, then not again)."""
    wide = (
        (native_side * 4 // 3) // multiple * multiple,
        (native_side * 3 // 4) // multiple * multiple,
    )
    sizes = sorted({1, min(4, batch_max_images), batch_max_images})
    return [*((n, native_side, native_side) for n in sizes), (1, *wide)]


@dataclass(frozen=True)
class PoolSpec:
    """What it takes to build a :class:`~engine.pool.ModelPool` anywhere: the catalogue and
    the loading settings, without a device. Picklable, for Ray replicas on other machines
    (paths are then those of the machine that builds the pool)."""

    catalogue: Catalogue
    data_dir: Path
    dtype: str = "auto"
    memory_budget: int | None = None
    compile_unet: bool = False
    cpu_threads: int = 0
    lora_dir: Path | None = None
    embeddings_dir: Path | None = None
    extras: ExtraModels | None = None

    @classmethod
    def of(cls, pool: ModelPool) -> PoolSpec:
        return cls(
            catalogue=pool.catalogue,
            data_dir=pool.data_dir,
            dtype=pool.dtype,
            memory_budget=pool.memory_budget,
            compile_unet=pool.compile_unet,
            cpu_threads=pool.cpu_threads,
            lora_dir=pool.loras.folder,
            embeddings_dir=pool.embeddings.folder,
            extras=pool.extras,
        )

    def pool(self, device: str) -> ModelPool:
        # The fields after the catalogue are ModelPool's keyword arguments, by name.
        settings = {f.name: getattr(self, f.name) for f in fields(self)[1:]}
        return ModelPool(self.catalogue, device=device, **settings)


def split_devices(setting: str) -> tuple[str, ...]:
    """``EASEL_DEVICE`` as a list: ``"cuda:0,cuda:1"`` → ("cuda:0", "cuda:1"). Raises
    ValueError naming the problem (an empty entry, or a device given twice)."""
    devices = tuple(d.strip().lower() for d in setting.split(","))
    if any(not d for d in devices):
        raise ValueError("has an empty entry; separate devices with commas, e.g. cuda:0,cuda:1")
    if len(set(devices)) != len(devices):
        raise ValueError("names a device twice")
    if len(devices) > 1 and "auto" in devices:
        raise ValueError("auto picks one device; name each device instead, e.g. cuda:0,cuda:1")
    return devices


class Engine:
    def __init__(
        self,
        model: LoadedModel | ModelPool,
        *,
        queue_size: int = 100,
        max_per_owner: int = 3,
        batch_max_images: int = 8,
        preview_interval: float = 1.0,
        devices: Sequence[str] = (),
        executors: Sequence[Executor] = (),
        warm_up: int = 0,
    ) -> None:
        """``model``: a model pool (a catalogue), or one loaded model (a catalogue of one).

        Where batches run: ``executors`` when given (e.g. :class:`engine.serve.RayExecutor`),
        else one :class:`DeviceExecutor` per name in ``devices`` (``pool``'s catalogue and
        settings on each; ``pool`` itself on its own device), else ``pool``'s device alone;
        ``warm_up`` as for :class:`DeviceExecutor` (``batch_max_images`` with EASEL_COMPILE).
        """
        self.pool = model if isinstance(model, ModelPool) else ModelPool.of(model)
        self.batch_max_images = batch_max_images
        self.preview_interval = preview_interval
        if not executors:
            if len(set(devices)) != len(devices):  # two threads would share one pipeline
                raise ValueError(f"devices named twice: {', '.join(devices)}")
            spec = PoolSpec.of(self.pool)
            executors = [
                DeviceExecutor(
                    self.pool if d == self.pool.device else spec.pool(d), warm_up=warm_up
                )
                for d in devices or [self.pool.device]
            ]
        self.executors: tuple[Executor, ...] = tuple(executors)
        self._queue: FairQueue[Job] = FairQueue(max_items=queue_size, max_per_owner=max_per_owner)
        self._cond = threading.Condition()
        self._running: dict[Executor, list[list[Job]]] = {e: [] for e in self.executors}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._tickets = itertools.count(1)
        polls = [e.poll_s for e in self.executors if e.poll_s is not None]
        self._poll_s = min(polls) if polls else None

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
        run here (:meth:`ModelPool.check`)."""
        return self.pool.check(request)

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        for executor in self.executors:
            executor.start()
        self._thread = threading.Thread(target=self._loop, name="easel-engine", daemon=True)
        self._thread.start()

    def preload(self, name: str = "") -> list[concurrent.futures.Future[ModelInfo]]:
        """Load ``name`` (the default model) on every local device and warm it up, e.g. at
        start-up; Ray replicas load theirs when they start."""
        return [e.preload(name) for e in self.executors if isinstance(e, DeviceExecutor)]

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop, mid-generation if need be; unfinished jobs fail with EngineStopped (the service
        leaves them queued in the database, to resume at the next start)."""
        self._stop.set()
        with self._cond:
            waiting = [job for _, job in self._queue.items()]
            for job in waiting:
                self._queue.remove(lambda j, job=job: j is job)
            self._cond.notify_all()
        for job in waiting:
            job.fail(EngineStopped("Easel is shutting down; the job will resume at restart."))
        if self._thread is not None:
            self._thread.join(timeout)
        for executor in self.executors:
            executor.stop(timeout)

    # -- submitting ----------------------------------------------------------------------------

    def submit(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressCallback | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> JobHandle:
        """Queue ``request``. Raises QueueAtCapacity / OwnerAtCapacity at once instead of waiting.

        ``on_progress(Progress)`` is called on ``loop`` (thread-safely) when given, else on the
        executor's thread.
        """
        request = self.check(request)
        job = Job(next(self._tickets), request, concurrent.futures.Future(), on_progress, loop)
        with self._cond:
            if self._stop.is_set():  # checked under the lock that stop() takes, so no job
                raise EngineStopped("Easel is shutting down.")  # slips in after it
            position = self._queue.push(
                request.owner, job, size=request.count, key=request.batch_key()
            )
            position += self._waiting_for_a_slot()
            self._cond.notify_all()
        return JobHandle(self, job, position)

    def cancel_ticket(self, ticket: int) -> bool:
        return self._cancel(lambda job: job.ticket == ticket)

    def cancel(self, job_id: int) -> bool:
        """Remove a queued job, or stop a running one at the next step. False if unknown."""
        return self._cancel(lambda job: job.request.job_id == job_id)

    def _cancel(self, match: Callable[[Job], bool]) -> bool:
        with self._cond:
            queued = self._queue.remove(match)
            running = next(
                (
                    (executor, batch, job)
                    for executor, batches in self._running.items()
                    for batch in batches
                    for job in batch
                    if match(job)
                ),
                None,
            )
        if queued is not None:
            queued.fail(JobCancelled("Cancelled."))
            return True
        if running is None:
            return False
        executor, batch, job = running
        if job.cancelled.is_set():
            return False
        job.cancelled.set()
        job.fail(JobCancelled("Cancelled."))
        if all(j.cancelled.is_set() for j in batch):
            executor.abort(batch)
        return True

    # -- looking -------------------------------------------------------------------------------

    def _free(self) -> list[Executor]:
        return [e for e in self.executors if len(self._running[e]) < e.slots()]

    def _waiting_for_a_slot(self) -> int:
        """1 when every executor is busy (the next job waits for a batch to end), else 0."""
        busy = any(self._running.values())
        return 1 if busy and not self._free() else 0

    def snapshot(self) -> list[QueuedJob]:
        with self._cond:
            running = [
                QueuedJob(j.request.job_id, j.request.owner, 0, j.request.count)
                for batches in self._running.values()
                for batch in batches
                for j in batch
            ]
            # Position: jobs ahead (the running batches count as one), so 0 is "next".
            busy = self._waiting_for_a_slot()
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
            queued = len(self._queue)
            running_jobs = [j for bs in self._running.values() for b in bs for j in b]
        stats = [e.stats for e in self.executors]
        errors = [s.last_error for s in stats if s.last_error]
        alive = (
            self._thread is not None
            and self._thread.is_alive()
            and any(e.alive() for e in self.executors)
        )
        pools = [e.pool for e in self.executors if isinstance(e, DeviceExecutor)]
        return EngineHealth(
            alive=alive,
            model=self.pool.info(),
            queued=queued,
            running=len(running_jobs),
            jobs_done=sum(s.jobs_done for s in stats),
            jobs_failed=sum(s.jobs_failed for s in stats),
            out_of_memory=sum(s.out_of_memory for s in stats),
            last_error=errors[-1] if errors else None,
            extra={
                "models_loaded": sorted({m.name for p in pools for m in p.loaded()}),
                "model_memory_bytes": sum(p.used_bytes() for p in pools),
                "model_loads": sum(p.loads for p in pools),
                "model_evictions": sum(p.evictions for p in pools),
                "retries": sum(s.retries for s in stats),
                "executors": [e.describe() for e in self.executors],
                "running_on": {j.request.job_id: j.where for j in running_jobs},
            },
        )

    # -- the dispatcher thread -----------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            with self._cond:
                free: list[Executor] = []
                while not self._stop.is_set():
                    free = self._free() if len(self._queue) else []
                    if free:
                        break
                    self._cond.wait(self._poll_s)
                if self._stop.is_set():
                    break
                batch = self._queue.pop_batch(self.batch_max_images)
                model = batch[0].request.model
                # Where the model is loaded already, if such an executor is free.
                executor = next((e for e in free if e.holds(model)), free[0])
                self._running[executor].append(batch)
                for job in batch:
                    job.where = executor.name
            try:
                executor.start_batch(
                    batch, self.preview_interval, lambda e=executor, b=batch: self._finished(e, b)
                )
            except Exception as exc:  # the executor could not take it: it is gone
                log.exception("%s could not take a batch", executor.name)
                executor.stats.failed(
                    batch, GenerationError(f"Generation failed: {first_line(exc)}")
                )
                self._finished(executor, batch)

    def _finished(self, executor: Executor, batch: list[Job]) -> None:
        with self._cond:
            batches = self._running[executor]
            for i, running in enumerate(batches):
                if running is batch:
                    del batches[i]
                    break
            self._cond.notify_all()


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
