"""Engine benchmarks on the tiny model (CPU): prints a table and writes JSON.

    python -m benchmarks.engine_bench [--out benchmarks/results/engine.json]   (or: easel bench)

1. overhead: N jobs through the service and engine vs the same N calls of an unmodified
   diffusers pipeline (loaded from the same files, without Easel's batch-invariance changes).
2. loop lag: an asyncio ticker's lateness while the engine generates (the Discord bot's loop).
3. batching: 8 compatible queued jobs with batching on vs off.
4. memory: peak RSS of a process that uses Easel's text-to-image, image-to-image, Creative
   upscale and inpainting vs one that builds an unmodified diffusers text-to-image pipeline
   alone and uses it; and the parameter bytes each holds (counted once however many pipelines
   share a tensor), so any second copy of the weights shows as a ratio above 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZE = 64  # the tiny model's native size, which /imagine --ar 1:1 makes
STEPS = 25  # the default
JOBS = 12


def _service(data_dir: Path, model: Any, **engine_kw: Any):
    from bot.core.grammar import Defaults, Limits
    from bot.core.service import Service, ServiceConfig
    from bot.store.db import make_db_engine, make_sessionmaker, upgrade
    from bot.store.files import ImageFiles
    from bot.store.repos import Store
    from engine.worker import Engine

    async def build():
        db = make_db_engine(f"sqlite+aiosqlite:///{data_dir / 'bench.db'}")
        await upgrade(db)
        engine = Engine(
            model, preview_interval=1.0, queue_size=1000, max_per_owner=1000, **engine_kw
        )
        engine.start()
        config = ServiceConfig(
            limits=Limits(),
            defaults=Defaults(steps=STEPS),
            daily_images_per_user=10**9,
            max_queued_per_user=10**6,
        )
        return (
            db,
            engine,
            Service(Store(make_sessionmaker(db)), ImageFiles(data_dir), engine, config),
        )

    return build()


def _prompt(i: int) -> str:
    return f"a lighthouse at dusk number {i} --seed {1000 + i} --ar 1:1 --count 4"


async def bench_overhead(model: Any, data_dir: Path) -> dict[str, Any]:
    """Same N grids: through Easel (parse, policy, quota, rows, engine, PNG files) vs bare
    diffusers calls with the same arguments."""
    import torch

    from bot.core.service import Actor

    db, engine, service = await _service(data_dir, model, batch_max_images=0)
    actor = Actor(key="local:bench", name="bench")
    pipe = plain_pipeline(data_dir)
    from engine.samplers import make_scheduler

    def direct(i: int) -> None:
        pipe.scheduler = make_scheduler("euler_a", model.scheduler_config)
        gens = [torch.Generator("cpu").manual_seed(1000 + i + k) for k in range(4)]
        pipe(
            prompt=[f"a lighthouse at dusk number {i}"] * 4,
            width=SIZE,
            height=SIZE,
            num_inference_steps=STEPS,
            guidance_scale=7.0,
            generator=gens,
            output_type="pil",
        )

    # Warm both paths once.
    await service.finish(await service.imagine(actor, _prompt(99)))
    await asyncio.to_thread(direct, 99)
    easel_times, direct_times, pipeline_times = [], [], []
    for i in range(JOBS):  # interleaved, so drift in machine speed hits both alike
        t0 = time.perf_counter()
        submission = await service.imagine(actor, _prompt(i))
        assert submission.handle is not None
        result = await submission.handle.wait()
        await service.finish(submission)
        easel_times.append(time.perf_counter() - t0)
        pipeline_times.append(result.seconds)
        t0 = time.perf_counter()
        await asyncio.to_thread(direct, i)
        direct_times.append(time.perf_counter() - t0)
    engine.stop()
    await db.dispose()
    easel, bare = sum(easel_times), sum(direct_times)
    # Around each pipeline call Easel adds parsing, policy, quota, rows and PNG files; that
    # part is measured directly too, since a CPU this noisy moves whole calls by ±10%.
    bookkeeping = statistics.median(e - p for e, p in zip(easel_times, pipeline_times, strict=True))
    return {
        "jobs": JOBS,
        "easel_s": easel,
        "direct_s": bare,
        "ratio": easel / bare,
        "median_pair_ratio": statistics.median(
            e / d for e, d in zip(easel_times, direct_times, strict=True)
        ),
        "bookkeeping_ms_per_job": bookkeeping * 1000,
        "bookkeeping_share": bookkeeping / statistics.median(direct_times),
        "target_ratio": 1.05,
    }


async def bench_loop_lag(model: Any, data_dir: Path) -> dict[str, Any]:
    from bot.core.service import Actor

    db, engine, service = await _service(data_dir, model, batch_max_images=8)
    actor = Actor(key="local:lag", name="lag")
    lags: list[float] = []
    stop = asyncio.Event()
    interval = 0.005

    async def ticker() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(interval)
            lags.append(time.perf_counter() - t0 - interval)

    tick = asyncio.create_task(ticker())
    submissions = [await service.imagine(actor, _prompt(i)) for i in range(JOBS)]
    for s in submissions:
        await service.finish(s)
    stop.set()
    await tick
    engine.stop()
    await db.dispose()
    lags.sort()
    ms = [x * 1000 for x in lags]
    return {
        "samples": len(ms),
        "p50_ms": statistics.median(ms),
        "p99_ms": ms[int(len(ms) * 0.99) - 1],
        "max_ms": ms[-1],
        "target_p99_ms": 20,
    }


def bench_batching(model: Any) -> dict[str, Any]:
    from engine.requests import GenerationRequest, Operation
    from engine.worker import Engine

    def run(batch_max: int) -> float:
        engine = Engine(model, preview_interval=0, batch_max_images=batch_max, max_per_owner=100)
        handles = [
            engine.submit(
                GenerationRequest(
                    Operation.TXT2IMG,
                    f"prompt {i}",
                    "",
                    SIZE,
                    SIZE,
                    STEPS,
                    7.0,
                    "euler_a",
                    (i,),
                    owner=f"u{i}",
                )
            )
            for i in range(8)
        ]
        t0 = time.perf_counter()
        engine.start()
        for h in handles:
            h.result(600)
        elapsed = time.perf_counter() - t0
        engine.stop()
        return elapsed

    run(8)  # warm-up
    off = min(run(0) for _ in range(2))
    on = min(run(8) for _ in range(2))
    return {
        "jobs": 8,
        "off_s": off,
        "on_s": on,
        "off_images_per_s": 8 / off,
        "on_images_per_s": 8 / on,
        "speedup": off / on,
    }


def plain_pipeline(data_dir: Path) -> Any:
    """The tiny model as diffusers loads it, none of Easel's changes: the baseline."""
    from diffusers import AutoPipelineForText2Image

    from engine.tiny import tiny_model_folder

    pipe = AutoPipelineForText2Image.from_pretrained(tiny_model_folder(data_dir, "tiny"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


MEMORY_MODES = {
    "plain": "an unmodified diffusers pipeline, text-to-image alone",
    "txt2img": "Easel, text-to-image alone",
    "inpaint": "Easel, text-to-image then inpainting (from_pipe)",
    "all": "Easel: text-to-image, image-to-image, Creative upscale, inpainting",
}


def _unique_bytes(pipes: list[Any]) -> int:
    """Parameter and buffer bytes of ``pipes``' modules, each tensor counted once."""
    from types import SimpleNamespace

    from engine.loading import _module_bytes

    every = {f"{i}.{k}": v for i, pipe in enumerate(pipes) for k, v in pipe.components.items()}
    return _module_bytes(SimpleNamespace(components=every))


def memory_child(mode: str, data_dir: Path, size: int, steps: int) -> dict[str, float]:
    """Run ``mode``'s workload in this process; its peak RSS and parameter bytes."""
    from engine.ops.masks import cells_mask
    from engine.requests import GenerationRequest, Operation

    def req(op: Operation, side: int, seeds: tuple[int, ...], **kw: Any) -> GenerationRequest:
        return GenerationRequest(op, "a fox", "", side, side, steps, 7.0, "euler_a", seeds, **kw)

    if mode == "plain":
        import torch

        pipe = plain_pipeline(data_dir)
        generators = [torch.Generator().manual_seed(i) for i in range(4)]
        pipe(
            ["a fox"] * 4, width=size, height=size, num_inference_steps=steps, generator=generators
        )
        pipes = [pipe]
    else:
        from engine.loading import load_model
        from engine.pool import ModelPool
        from engine.worker import Engine

        model = load_model("tiny", data_dir=data_dir)
        pool = ModelPool.of(model, data_dir=data_dir)
        engine = Engine(pool, preview_interval=0)
        engine.start()
        img = engine.submit(req(Operation.TXT2IMG, size, (1, 2, 3, 4))).result(600).images[0]
        if mode == "all":
            vary = req(Operation.IMG2IMG, size, (1, 2, 3, 4), strength=0.6, init_images=(img,))
            upscale = req(Operation.UPSCALE, size * 2, (1,), strength=0.3, init_images=(img,))
            for job in (vary, upscale):
                engine.submit(job).result(600)
        if mode in ("inpaint", "all"):
            mask = cells_mask(size, size, [5])
            edit = req(Operation.INPAINT, size, (1, 2, 3, 4), strength=1.0, init_images=(img,))
            engine.submit(replace(edit, masks=(mask,))).result(600)
        engine.stop()
        runner = pool.acquire("")[2]
        inpainting = runner.companions.inpainting._pipe
        pipes = [model.txt2img, model.img2img] + ([inpainting] if inpainting is not None else [])
    return {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "param_bytes": _unique_bytes(pipes),
        "pipelines": [type(p).__name__ for p in pipes],
    }


def measure_memory(data_dir: Path, mode: str, size: int = SIZE, steps: int = STEPS) -> dict:
    """:func:`memory_child` in a fresh process, so each peak is its own."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.engine_bench",
            "--memory-child",
            mode,
            str(data_dir),
            str(size),
            str(steps),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_memory(data_dir: Path) -> dict[str, Any]:
    plain, everything = measure_memory(data_dir, "plain"), measure_memory(data_dir, "all")
    return {
        "baseline": MEMORY_MODES["plain"],
        "measured": MEMORY_MODES["all"],
        "plain_peak_rss_mib": plain["peak_rss_mib"],
        "all_peak_rss_mib": everything["peak_rss_mib"],
        "ratio": everything["peak_rss_mib"] / plain["peak_rss_mib"],
        "param_bytes_plain": plain["param_bytes"],
        "param_bytes_all": everything["param_bytes"],
        "param_ratio": everything["param_bytes"] / plain["param_bytes"],
        "pipelines_all": everything["pipelines"],
        "target_ratio": 1.10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/engine.json")
    parser.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        mode, data_dir, size, steps = args.memory_child
        print(json.dumps(memory_child(mode, Path(data_dir), int(size), int(steps))))
        return 0

    from engine.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        model = load_model("tiny", data_dir=data_dir)
        results: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "workload": {"model": "tiny", "size": SIZE, "steps": STEPS, "images_per_job": 4},
        }
        results["overhead"] = asyncio.run(bench_overhead(model, data_dir / "a"))
        results["loop_lag"] = asyncio.run(bench_loop_lag(model, data_dir / "b"))
        results["batching"] = bench_batching(model)
        results["memory"] = bench_memory(data_dir)
    results["self_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    o, lag, b, m = (results[k] for k in ("overhead", "loop_lag", "batching", "memory"))
    rows = [
        (
            "engine overhead (Easel / direct)",
            f"{o['easel_s']:.2f} s / {o['direct_s']:.2f} s",
            f"{o['ratio']:.3f}",
            "<= 1.05",
        ),
        (
            "  median of per-job ratios",
            f"{o['jobs']} interleaved pairs",
            f"{o['median_pair_ratio']:.3f}",
            "<= 1.05",
        ),
        (
            "  Easel's own work per job",
            f"{o['bookkeeping_ms_per_job']:.1f} ms",
            f"{100 * o['bookkeeping_share']:.1f} %",
            "<= 5 %",
        ),
        (
            "event-loop lag p50 / p99 / max",
            f"{lag['p50_ms']:.1f} / {lag['p99_ms']:.1f} / {lag['max_ms']:.1f} ms",
            f"{lag['p99_ms']:.1f} ms",
            "p99 <= 20 ms",
        ),
        (
            "batching 8 jobs (off / on)",
            f"{b['off_s']:.2f} s / {b['on_s']:.2f} s",
            f"{b['speedup']:.2f}x",
            "> 1",
        ),
        (
            "peak RSS (Easel, 4 operations / plain txt2img)",
            f"{m['all_peak_rss_mib']:.0f} / {m['plain_peak_rss_mib']:.0f} MiB",
            f"{m['ratio']:.3f}",
            "<= 1.10",
        ),
        (
            "parameter bytes (same)",
            f"{m['param_bytes_all']} / {m['param_bytes_plain']}",
            f"{m['param_ratio']:.3f}",
            "1.000",
        ),
    ]
    report(("benchmark", "measured", "result", "target"), rows, results, args.out)
    return 0


def report(
    header: tuple[str, ...], rows: list[tuple[str, ...]], results: dict[str, Any], out: str
) -> None:
    """Print ``rows`` as a table under ``header``, and write ``results`` as JSON to ``out``."""
    table = [header, *rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
