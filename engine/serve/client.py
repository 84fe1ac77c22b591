"""The bot's side of Ray Serve: an :class:`~engine.worker.Executor` whose slots are the running
replicas of the ``easel`` application. The bot keeps its fair queue and database; each batch
goes, in the queue's order, to a replica through a Serve deployment handle, and its progress,
previews and results stream back.

The executor deploys the application itself, from the bot's catalogue and settings, and keeps
one replica per GPU in the cluster (or a fixed number): a GPU machine that joins the cluster
(``easel worker``, :func:`run_worker`) gets replicas within seconds, one that leaves loses them.

A replica lost mid-batch (its process or machine died) fails the batch's call; the batch's
unfinished jobs are sent again, to another replica, up to ``attempts`` runs each. A job has one
result however many runs it took (:attr:`GenerationResult.attempts` counts them).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import ray
from ray import serve
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    TaskCancelledError,
    WorkerCrashedError,
)
from ray.serve.exceptions import ReplicaUnavailableError, RequestCancelledError

from engine import requests as engine_requests
from engine.requests import EngineError, EngineStopped, GenerationError, JobCancelled
from engine.serve.replica import (
    APP,
    DEPLOYMENT,
    FAILED,
    PROGRESS,
    RESULT,
    STARTED,
    EaselReplica,
)
from engine.worker import Executor, Job, PoolSpec, first_line

log = logging.getLogger(__name__)

# What a lost replica looks like to the caller: its actor, process or machine is gone.
_LOST = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, ReplicaUnavailableError)
# What a call cancelled by us raises: before it reached a replica, or after.
_CANCELLED = (RequestCancelledError, TaskCancelledError, concurrent.futures.CancelledError)


class RayExecutor(Executor):
    poll_s = 1.0

    def __init__(
        self,
        spec: PoolSpec,
        *,
        address: str | None = None,
        replicas: int | None = None,
        gpus_per_replica: float = 1.0,
        cpus_per_replica: float = 1.0,
        attempts: int = 2,
        preload: str | None = "",
        warm_up: int = 0,
        app: str = APP,
    ) -> None:
        """``address``: the Ray cluster (``EASEL_RAY_ADDRESS``: ``auto`` for the one this
        machine belongs to, ``HOST:6379`` for a head elsewhere); None starts a Ray of this
        machine alone. ``replicas``: how many to run; None keeps one per
        ``gpus_per_replica`` GPUs in the cluster. ``attempts``: runs a job may take when
        replicas are lost under it. ``preload`` and ``warm_up`` as for
        :class:`~engine.worker.DeviceExecutor`, on each replica as it starts."""
        super().__init__()
        self.spec = spec
        self.address = address
        self.replicas = replicas
        self.gpus_per_replica = gpus_per_replica
        self.cpus_per_replica = cpus_per_replica
        self.attempts = attempts
        self.preload = preload
        self.warm_up = warm_up
        self.app = app
        self.name = f"ray:{app}"
        self._handle: Any = None
        self._running = 0  # replicas running, as Serve last said
        self._deployed: int | None = None
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self._lock = threading.Lock()
        self._streams: dict[int, Any] = {}  # id(batch) → the call running it
        self._threads: set[threading.Thread] = set()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._watcher is not None:
            return
        if not ray.is_initialized():
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        # No HTTP proxy: the bot reaches replicas through deployment handles only.
        serve.start(proxy_location="Disabled")
        self._watch_once()
        self._handle = serve.get_deployment_handle(DEPLOYMENT, app_name=self.app)
        self._watcher = threading.Thread(target=self._watch, name="easel-ray-watch", daemon=True)
        self._watcher.start()

    def stop(self, timeout: float | None = 30.0) -> None:
        """Stop the batches in flight (their jobs fail with EngineStopped). The application
        stays deployed, so replicas keep their models for the next start."""
        self._stop.set()
        with self._lock:
            streams = list(self._streams.values())
            threads = list(self._threads)
        for stream in streams:
            _cancel(stream)
        for thread in threads:
            thread.join(timeout)
        if self._watcher is not None:
            self._watcher.join(timeout)

    def alive(self) -> bool:
        return self._watcher is not None and self._watcher.is_alive()

    def wait_ready(self, timeout: float = 300.0) -> int:
        """Block until the replicas wanted are running; return how many run."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            wanted = self._wanted()
            if wanted and self._running >= wanted:
                return self._running
            time.sleep(0.2)
        raise TimeoutError(f"{self._running} of {self._wanted()} Ray replicas running")

    # -- replicas -----------------------------------------------------------------------------

    def scale(self, replicas: int | None) -> None:
        """Run ``replicas`` replicas from now on (None: one per GPU in the cluster)."""
        self.replicas = replicas
        self._watch_once()

    def _wanted(self) -> int:
        if self.replicas is not None:
            return self.replicas
        if self.gpus_per_replica <= 0:
            return 1
        gpus = ray.cluster_resources().get("GPU", 0)
        return int(gpus // self.gpus_per_replica)

    def _watch(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self._watch_once()
            except Exception:  # the cluster may be restarting; look again next time
                log.warning("Could not read the Ray Serve status", exc_info=True)

    def _watch_once(self) -> None:
        wanted = self._wanted()
        if wanted != self._deployed:
            self._deploy(wanted)
        app = serve.status().applications.get(self.app)
        deployment = app.deployments.get(DEPLOYMENT) if app is not None else None
        self._running = deployment.replica_states.get("RUNNING", 0) if deployment else 0

    def _deploy(self, replicas: int) -> None:
        log.info("Ray Serve: %d replica(s) of %s wanted.", replicas, self.app)
        if replicas == 0:
            log.warning(
                "The Ray cluster has no GPU for a replica: jobs wait until a GPU machine joins "
                "(easel worker HEAD:6379 on it)."
            )
        options = {"num_gpus": self.gpus_per_replica, "num_cpus": self.cpus_per_replica}
        application = EaselReplica.options(num_replicas=replicas, ray_actor_options=options).bind(
            self.spec, self.preload, self.warm_up
        )
        # Without waiting: replicas take minutes to load a model, and more may never fit.
        serve.run_many(
            [serve.RunTarget(target=application, name=self.app, route_prefix=None)],
            wait_for_applications_running=False,
        )
        self._deployed = replicas

    # -- the dispatcher's side ----------------------------------------------------------------

    def slots(self) -> int:
        return self._running

    def start_batch(
        self, batch: list[Job], preview_interval: float, done: Callable[[], None]
    ) -> None:
        def run() -> None:
            try:
                self._run(batch, preview_interval)
            except Exception as exc:
                log.exception("Ray batch failed")
                pending = [j for j in batch if not j.settled]
                error = GenerationError(f"Generation failed: {first_line(exc)}")
                self.stats.failed(pending, error)
            finally:
                with self._lock:
                    self._threads.discard(threading.current_thread())
                done()

        thread = threading.Thread(target=run, name="easel-ray-batch", daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def abort(self, batch: list[Job]) -> None:
        with self._lock:
            stream = self._streams.get(id(batch))
        if stream is not None:
            _cancel(stream)

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "replicas_running": self._running,
            "replicas_wanted": self._deployed,
            "jobs_done": self.stats.jobs_done,
            "retries": self.stats.retries,
        }

    # -- one batch, on its own thread ---------------------------------------------------------

    def _run(self, batch: list[Job], preview_interval: float) -> None:
        while True:
            live = [j for j in batch if not j.settled and not j.cancelled.is_set()]
            if not live:
                return
            if self._stop.is_set():
                self.stats.failed(live, EngineStopped("Easel stopped mid-job."))
                return
            for job in live:
                job.attempts += 1
            try:
                lost = self._call(batch, live, preview_interval)
            except _LOST as exc:
                lost = exc
            except _CANCELLED:  # aborted: every job was cancelled, or the engine stops
                error = EngineStopped("Easel stopped mid-job.") if self._stop.is_set() else None
                for job in live:
                    job.fail(error)
                return
            if lost is None:
                return
            unfinished = [j for j in live if not j.settled and not j.cancelled.is_set()]
            spent = [j for j in unfinished if j.attempts >= self.attempts]
            log.warning(
                "A Ray replica was lost running %d job(s) (%s); %d will run again.",
                len(unfinished),
                first_line(lost),
                len(unfinished) - len(spent),
            )
            if spent:
                error = GenerationError(
                    f"The GPU worker running this job stopped, {self.attempts} times; "
                    "try again later."
                )
                self.stats.failed(spent, error)
            if len(spent) < len(unfinished):
                self.stats.retries += 1

    def _call(
        self, batch: list[Job], live: list[Job], preview_interval: float
    ) -> BaseException | None:
        """One call to a replica. Returns what was lost (an EngineStopped from a replica that
        was shut down mid-batch), or None."""
        # Previews are made on the replica only for jobs someone listens to.
        requests = [
            j.request if j.on_progress else replace(j.request, previews=False) for j in live
        ]
        handle = self._handle.options(stream=True, multiplexed_model_id=live[0].request.model)
        stream = handle.run.remote(requests, preview_interval, [bool(j.on_progress) for j in live])
        with self._lock:
            self._streams[id(batch)] = stream
        try:
            if self._stop.is_set() or all(j.cancelled.is_set() for j in live):
                _cancel(stream)
            lost: BaseException | None = None
            for event in stream:
                kind = event[0]
                if kind == STARTED:
                    for job in live:
                        job.where = event[1]
                elif kind == PROGRESS:
                    _, index, step, total, preview = event
                    if not live[index].cancelled.is_set():
                        live[index].notify(step, total, preview)
                elif kind == RESULT:
                    live[event[1]].settle(event[2])
                    self.stats.jobs_done += 1
                elif kind == FAILED:
                    _, index, name, message, out_of_memory = event
                    error = _error(name, message, out_of_memory)
                    if isinstance(error, EngineStopped):  # that replica is shutting down
                        lost = error
                    elif not isinstance(error, JobCancelled):
                        self.stats.failed([live[index]], error)
            return lost
        finally:
            with self._lock:
                self._streams.pop(id(batch), None)


def _cancel(stream: Any) -> None:
    # DeploymentResponseGenerator.cancel() may wait for the call to reach a replica: never on
    # the caller's thread, which may be the event loop.
    threading.Thread(target=stream.cancel, name="easel-ray-cancel", daemon=True).start()


def _error(name: str, message: str, out_of_memory: bool) -> EngineError:
    cls = getattr(engine_requests, name, None)
    if not (isinstance(cls, type) and issubclass(cls, EngineError)):
        return GenerationError(message)
    if issubclass(cls, GenerationError):
        return cls(message, out_of_memory=out_of_memory)
    return cls(message)


def run_worker(
    address: str | None,
    *,
    gpus: int | None = None,
    cpus: int | None = None,
    port: int = 6379,
) -> int:
    """``easel worker``: make this machine part of the bot's Ray cluster, until interrupted.

    With ``address`` (the head's ``HOST:PORT``), join it; the bot's executor then starts one
    replica per GPU here. Without, start the head here (the bot's machine, then
    ``EASEL_RAY_ADDRESS=auto``). ``gpus``/``cpus``: what to offer (Ray counts them when None).
    Runs Ray's own ``ray start --block`` and returns its exit status."""
    ray_cli = Path(sys.executable).with_name("ray")
    command = [str(ray_cli) if ray_cli.exists() else "ray", "start", "--block"]
    command += [f"--address={address}"] if address else ["--head", f"--port={port}"]
    if gpus is not None:
        command.append(f"--num-gpus={gpus}")
    if cpus is not None:
        command.append(f"--num-cpus={cpus}")
    log.info("Running %s", " ".join(command))
    with contextlib.suppress(KeyboardInterrupt):
        return subprocess.call(command, env=os.environ.copy())
    return 130  # interrupted (Ctrl-C): 128 + SIGINT
