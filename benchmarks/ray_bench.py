"""Ray Serve benchmark on the tiny model, CPU replicas of one torch thread each, in one run:

1. throughput: the same burst of grids from many owners with 1 replica, then 2 (the same
   deployment scaled up), in images/s;
2. overhead: one job through the Ray path (bot → Serve handle → replica → streamed back) vs the
   in-process engine, each on one torch thread, median of alternating runs;
3. recovery: a replica killed mid-job (SIGKILL, by pid) → seconds until the job is done on the
   other replica, beside the job's own time on a healthy one.

    python -m benchmarks.ray_bench [--out benchmarks/results/ray.json] [--jobs 16]

About two minutes on two cores, most of it Ray starting and replicas loading the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZE = 64  # the tiny model's native size
STEPS = 25  # the default
LONG_STEPS = 400  # the recovery job: long enough to kill mid-way


def request(seeds: tuple[int, ...], owner: str, steps: int = STEPS, job_id: int | None = None):
    from engine.requests import GenerationRequest, Operation

    return GenerationRequest(
        Operation.TXT2IMG,
        f"a lighthouse at dusk, by {owner}",
        "",
        SIZE,
        SIZE,
        steps,
        7.0,
        "euler_a",
        seeds,
        owner=owner,
        job_id=job_id,
    )


def burst(engine: Any, jobs: int) -> float:
    """Images/s for ``jobs`` grids of 4 from as many owners, queued at once."""
    t0 = time.perf_counter()
    handles = [engine.submit(request((i, i + 1, i + 2, i + 3), f"owner{i}")) for i in range(jobs)]
    images = sum(len(h.result(600).images) for h in handles)
    return images / (time.perf_counter() - t0)


def one_job_s(engine: Any) -> float:
    t0 = time.perf_counter()
    engine.submit(request((7,), "solo")).result(600)
    return time.perf_counter() - t0


def recovery(engine: Any) -> dict[str, float]:
    """Kill the replica running a long job at its 10th step; time until the job is done."""
    t0 = time.perf_counter()
    engine.submit(request((3,), "healthy", LONG_STEPS)).result(600)
    healthy_s = time.perf_counter() - t0
    reached = threading.Event()
    restarted: list[float] = []

    def on_progress(p: Any) -> None:
        if p.step >= 10:
            reached.set()
        if p.step == 0 and reached.is_set() and not restarted:
            restarted.append(time.perf_counter())

    handle = engine.submit(request((3,), "doomed", LONG_STEPS, job_id=1), on_progress=on_progress)
    reached.wait(600)
    where = engine.health().extra["running_on"][1]
    killed = time.perf_counter()
    os.kill(int(where.rsplit(":", 1)[1]), signal.SIGKILL)
    result = handle.result(600)
    done = time.perf_counter()
    return {
        "healthy_job_s": healthy_s,
        "death_to_done_s": done - killed,
        "death_to_restart_s": restarted[0] - killed if restarted else float("nan"),
        "attempts": result.attempts,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/ray.json")
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    import ray
    import torch
    from ray import serve

    from engine.catalogue import load_catalogue
    from engine.loading import load_model
    from engine.pool import ModelPool
    from engine.serve import RayExecutor
    from engine.worker import Engine, PoolSpec

    results: dict[str, Any] = {
        "benchmark": "ray",
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": ray.__version__,
        "cpus": os.cpu_count(),
        "workload": {"model": "tiny", "size": SIZE, "steps": STEPS, "jobs": args.jobs},
    }
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        local_model = load_model("tiny", data_dir=data, cpu_threads=1)  # builds it once
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        pool = ModelPool(load_catalogue(None, "tiny"), data_dir=data, device="cpu")
        spec = PoolSpec.of(pool)
        spec = PoolSpec(**{**vars(spec), "cpu_threads": 1})
        executor = RayExecutor(spec, replicas=1, gpus_per_replica=0, cpus_per_replica=1)
        remote = Engine(pool, executors=[executor], preview_interval=1.0, queue_size=1000)
        local = Engine(local_model, preview_interval=1.0, queue_size=1000)
        try:
            remote.start()
            local.start()
            executor.wait_ready(600)
            results["start_s"] = time.perf_counter() - t0

            one_job_s(remote)  # warm-up on both paths
            one_job_s(local)
            ray_s, local_s = [], []
            for _ in range(args.repeats):
                ray_s.append(one_job_s(remote))
                local_s.append(one_job_s(local))
            ray_job, local_job = statistics.median(ray_s), statistics.median(local_s)
            results["overhead"] = {
                "ray_job_s": ray_job,
                "local_job_s": local_job,
                "ray_minus_local_ms": 1000 * (ray_job - local_job),
                "ratio": ray_job / local_job,
            }

            one = burst(remote, args.jobs)
            t1 = time.perf_counter()
            executor.scale(2)
            executor.wait_ready(600)
            results["scale_up_s"] = time.perf_counter() - t1
            two = burst(remote, args.jobs)
            results["throughput"] = {
                "one_replica_images_per_s": one,
                "two_replicas_images_per_s": two,
                "ratio": two / one,
            }
            results["recovery"] = recovery(remote)
        finally:
            remote.stop()
            local.stop()
            serve.shutdown()
            ray.shutdown()

    o, t, r = results["overhead"], results["throughput"], results["recovery"]
    print(
        f"Ray started with 1 replica in {results['start_s']:.1f} s; +1 replica in "
        f"{results['scale_up_s']:.1f} s"
    )
    print(f"{'one job (1 image, 25 steps)':<34} {'seconds':>8}")
    print(f"{'  in-process engine':<34} {o['local_job_s']:>8.3f}")
    print(
        f"{'  Ray Serve replica':<34} {o['ray_job_s']:>8.3f}   "
        f"(+{o['ray_minus_local_ms']:.0f} ms, ×{o['ratio']:.2f})"
    )
    print(f"{f'{args.jobs} grids of 4, many owners':<34} {'img/s':>8}")
    print(f"{'  1 replica':<34} {t['one_replica_images_per_s']:>8.2f}")
    print(f"{'  2 replicas':<34} {t['two_replicas_images_per_s']:>8.2f}   (×{t['ratio']:.2f})")
    print(f"{'replica killed mid-job':<34} {'seconds':>8}")
    print(f"{'  the job alone, healthy':<34} {r['healthy_job_s']:>8.2f}")
    print(f"{'  death → started elsewhere':<34} {r['death_to_restart_s']:>8.2f}")
    print(
        f"{'  death → done elsewhere':<34} {r['death_to_done_s']:>8.2f}   "
        f"({r['attempts']} attempts)"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
