"""Editing benchmark on the tiny model (CPU): prints a table and writes JSON.

    python -m benchmarks.edit_bench [--out benchmarks/results/edit.json] [--rounds 5]

1. time: 4-image jobs through the engine at the model's native size and the default 25 steps,
   rounds interleaved so that drift in the machine's speed hits every kind alike; the engine's
   own seconds per job (GenerationResult.seconds), the median of the rounds:
   - a plain variation: image-to-image at Vary (Strong)'s strength (the service's 0.65);
   - Vary (Region): inpainting the middle cell of the 3×3 grid at strength 1.0;
   - Zoom Out 2×: inpainting the new border of a canvas at strength 0.9;
   - inpainting at the variation's strength: the cost of inpainting itself per denoising step
     (mask preparation, the masked latents, the paste-back), the steps being equal.
   Ratios are to the variation, from this one run.
2. memory: peak RSS and parameter bytes of a process that uses text-to-image and inpainting
   (its pipeline made with ``from_pipe``) vs one that uses Easel's text-to-image alone, and vs
   an unmodified diffusers pipeline (benchmarks.engine_bench's memory children). The tiny
   model's weights are a few MB, so its resident set is mostly the Python and torch runtime;
   the parameter bytes show whether any weights were copied.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZE = 64  # the tiny model's native size
STEPS = 25  # the default
IMAGES = 4  # a grid


def _jobs(source: Any) -> dict[str, Any]:
    from bot.core.service import STRONG_STRENGTH
    from engine.ops.masks import cells_mask
    from engine.ops.outpaint import OUTPAINT_STRENGTH, REGION_STRENGTH, zoom_out
    from engine.requests import GenerationRequest, Operation

    seeds = tuple(range(1, IMAGES + 1))

    def job(operation: Operation, image: Any, strength: float, **kw: Any) -> GenerationRequest:
        return GenerationRequest(
            operation,
            "a lighthouse at dusk",
            "",
            image.width,
            image.height,
            STEPS,
            7.0,
            "euler_a",
            seeds,
            strength=strength,
            init_images=(image,),
            previews=False,
            **kw,
        )

    middle = (cells_mask(SIZE, SIZE, [5]),)
    canvas = zoom_out(source, 2.0, native_side=SIZE, max_pixels=SIZE * SIZE)
    return {
        "variation": job(Operation.IMG2IMG, source, STRONG_STRENGTH),
        "region": job(Operation.INPAINT, source, REGION_STRENGTH, masks=middle),
        "zoom": job(Operation.INPAINT, canvas.image, OUTPAINT_STRENGTH, masks=(canvas.mask,)),
        "inpaint_same_steps": job(Operation.INPAINT, source, STRONG_STRENGTH, masks=middle),
    }


def bench_time(data_dir: Path, rounds: int) -> dict[str, Any]:
    from engine.loading import load_model
    from engine.requests import GenerationRequest, Operation
    from engine.worker import Engine

    engine = Engine(load_model("tiny", data_dir=data_dir), preview_interval=0)
    engine.start()
    try:
        source = engine.submit(
            GenerationRequest(
                Operation.TXT2IMG, "a lighthouse", "", SIZE, SIZE, STEPS, 7.0, "euler_a", (7,)
            )
        ).result(600)
        jobs = _jobs(source.images[0])
        for request in jobs.values():  # warm every pipeline once
            engine.submit(request).result(600)
        seconds: dict[str, list[float]] = {name: [] for name in jobs}
        for _ in range(rounds):
            for name, request in jobs.items():
                seconds[name].append(engine.submit(request).result(600).seconds)
    finally:
        engine.stop()
    median = {name: statistics.median(times) for name, times in seconds.items()}
    steps = {name: request.denoising_steps() for name, request in jobs.items()}
    return {
        "rounds": rounds,
        "images_per_job": IMAGES,
        "seconds": median,
        "denoising_steps": steps,
        "ratio_to_variation": {name: median[name] / median["variation"] for name in jobs},
        "per_step_ratio": {
            name: (median[name] / steps[name]) / (median["variation"] / steps["variation"])
            for name in jobs
        },
    }


def bench_memory(data_dir: Path) -> dict[str, Any]:
    from benchmarks.engine_bench import MEMORY_MODES, measure_memory

    runs = {mode: measure_memory(data_dir, mode) for mode in ("plain", "txt2img", "inpaint")}
    return {
        "modes": {mode: MEMORY_MODES[mode] for mode in runs},
        "peak_rss_mib": {mode: r["peak_rss_mib"] for mode, r in runs.items()},
        "param_bytes": {mode: r["param_bytes"] for mode, r in runs.items()},
        "pipelines": {mode: r["pipelines"] for mode, r in runs.items()},
        "rss_ratio_to_txt2img": runs["inpaint"]["peak_rss_mib"] / runs["txt2img"]["peak_rss_mib"],
        "rss_ratio_to_plain": runs["inpaint"]["peak_rss_mib"] / runs["plain"]["peak_rss_mib"],
        "param_ratio_to_plain": runs["inpaint"]["param_bytes"] / runs["plain"]["param_bytes"],
        "target_ratio": 1.10,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/edit.json")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    from benchmarks.engine_bench import report

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        results: dict[str, Any] = {
            "machine": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "platform": platform.platform(),
            },
            "workload": {"model": "tiny", "size": SIZE, "steps": STEPS, "images": IMAGES},
            "time": bench_time(data_dir, args.rounds),
            "memory": bench_memory(data_dir),
        }
    results["machine"]["load_average_at_end"] = os.getloadavg()

    t, m = results["time"], results["memory"]
    rows = [
        (
            "variation (img2img, strength 0.65)",
            f"{t['seconds']['variation']:.3f} s, {t['denoising_steps']['variation']} steps",
            "1.00",
        ),
    ]
    labels = {
        "region": "Vary (Region), strength 1.0",
        "zoom": "Zoom Out 2×, strength 0.9",
        "inpaint_same_steps": "inpainting at 0.65 (same steps)",
    }
    for name, label in labels.items():
        rows.append(
            (
                f"{label} / variation",
                f"{t['seconds'][name]:.3f} s, {t['denoising_steps'][name]} steps",
                f"{t['ratio_to_variation'][name]:.2f}x ({t['per_step_ratio'][name]:.2f}x/step)",
            )
        )
    rss, params = m["peak_rss_mib"], m["param_bytes"]
    rows += [
        (
            "peak RSS: txt2img + inpaint / txt2img",
            f"{rss['inpaint']:.0f} / {rss['txt2img']:.0f} MiB",
            f"{m['rss_ratio_to_txt2img']:.3f} (target <= 1.10)",
        ),
        (
            "peak RSS: same / plain diffusers txt2img",
            f"{rss['inpaint']:.0f} / {rss['plain']:.0f} MiB",
            f"{m['rss_ratio_to_plain']:.3f}",
        ),
        (
            "parameter bytes: same / plain diffusers",
            f"{params['inpaint']} / {params['plain']}",
            f"{m['param_ratio_to_plain']:.3f} (1.000: no copy)",
        ),
    ]
    report(("benchmark", "measured", "result"), rows, results, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
