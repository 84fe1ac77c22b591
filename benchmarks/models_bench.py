"""Model switching and LoRA overhead on the tiny models: prints a table and writes JSON.

    python -m benchmarks.models_bench [--out benchmarks/results/models.json] [--rounds 6]

1. switch: a job on model B right after one on model A, when B must be loaded from disk (a
   memory budget that holds one model) vs when B is still in memory (a budget that holds
   both); and the load itself (``ModelPool.acquire``) cold vs warm.
2. LoRA: the same job with a LoRA (already loaded, as after the first use) vs without, and the
   first LoRA job of a model (which loads the file).
3. weights: what real models hold in memory (what EASEL_MODEL_MEMORY counts), from their
   published architectures built with diffusers' and transformers' own classes on torch's
   "meta" device: parameters counted exactly, no weights downloaded or allocated.

Ratios come from one run, rounds interleaved so that drift in machine speed hits both sides.
The tiny models load in a fraction of a second; real models take seconds to minutes from disk,
so the switch ratio there is far larger (see README, "Models").
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

STEPS = 10
MODELS = {"tiny": "sd1", "tiny-sdxl": "sdxl"}


def _request(model: str, seed: int, loras: tuple[tuple[str, float], ...] = ()) -> Any:
    from engine.requests import GenerationRequest, Operation

    return GenerationRequest(
        Operation.TXT2IMG,
        "a lighthouse at dusk",
        "",
        64,
        64,
        STEPS,
        7.0,
        "euler_a",
        (seed, seed + 1, seed + 2, seed + 3),
        model=model,
        loras=loras,
    )


def _pool(data_dir: Path, budget: int | None, lora_dir: Path | None = None) -> Any:
    from engine.catalogue import Catalogue, ModelEntry
    from engine.pool import ModelPool

    entries = [ModelEntry(name=n, source=n, family=f) for n, f in MODELS.items()]
    return ModelPool(
        Catalogue(entries, "tiny"), data_dir=data_dir, memory_budget=budget, lora_dir=lora_dir
    )


def _timed(engine: Any, request: Any) -> float:
    t0 = time.perf_counter()
    engine.submit(request).result(600)
    return time.perf_counter() - t0


def bench_switch(data_dir: Path, rounds: int) -> dict[str, Any]:
    from engine.worker import Engine

    probe = _pool(data_dir, None)
    largest = max(probe.preload(name).size_bytes for name in MODELS)
    cold = Engine(_pool(data_dir, largest + 1), preview_interval=0)  # one model at a time
    warm = Engine(_pool(data_dir, None), preview_interval=0)  # both stay
    for engine in (cold, warm):
        engine.start()
        for name in MODELS:  # warm up: first loads, encoders, caches
            engine.submit(_request(name, 0)).result(600)
    disk, cache = [], []
    for i in range(rounds):
        for name in MODELS:  # each job switches model
            disk.append(_timed(cold, _request(name, i)))
            cache.append(_timed(warm, _request(name, i)))
    loads = cold.pool.loads
    cold.stop()
    warm.stop()
    # The load alone, without the job: a fresh pool each time, then the warm path.
    load_cold, load_warm = [], []
    for _ in range(rounds):
        pool = _pool(data_dir, None)
        t0 = time.perf_counter()
        pool.acquire("tiny-sdxl")
        load_cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pool.acquire("tiny-sdxl")
        load_warm.append(time.perf_counter() - t0)
    return {
        "jobs_per_side": len(disk),
        "switch_job_from_disk_s": statistics.median(disk),
        "switch_job_from_cache_s": statistics.median(cache),
        "switch_job_ratio": statistics.median(disk) / statistics.median(cache),
        "loads_with_small_budget": loads,
        "acquire_cold_s": statistics.median(load_cold),
        "acquire_warm_s": statistics.median(load_warm),
    }


def bench_lora(data_dir: Path, rounds: int) -> dict[str, Any]:
    from engine.tiny import build_tiny_lora
    from engine.worker import Engine

    lora_dir = data_dir / "loras"
    build_tiny_lora(data_dir, lora_dir, "grain")  # made for tiny's U-Net
    engine = Engine(_pool(data_dir, None, lora_dir), preview_interval=0)
    engine.start()
    engine.submit(_request("tiny", 0)).result(600)
    first = _timed(engine, _request("tiny", 0, (("grain", 1.0),)))
    plain, lora = [], []
    for i in range(rounds * 2):
        plain.append(_timed(engine, _request("tiny", i)))
        lora.append(_timed(engine, _request("tiny", i, (("grain", 0.8),))))
    engine.stop()
    return {
        "model": "tiny",
        "jobs_per_side": len(plain),
        "plain_job_s": statistics.median(plain),
        "lora_job_s": statistics.median(lora),
        "lora_ratio": statistics.median(lora) / statistics.median(plain),
        "first_lora_job_s": first,
    }


def real_model_weights() -> dict[str, Any]:
    """Parameters of SD 1.5, SDXL (and SDXL-Turbo, the same architecture) and FLUX.1-schnell,
    with the component configurations of their Hub repositories."""
    import torch
    from diffusers import AutoencoderKL, FluxTransformer2DModel, UNet2DConditionModel
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        T5Config,
        T5EncoderModel,
    )

    def count(module: Any) -> int:
        return sum(p.numel() for p in module.parameters())

    def vae(channels: int) -> Any:
        return AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            latent_channels=channels,
            layers_per_block=2,
            use_quant_conv=channels == 4,
            use_post_quant_conv=channels == 4,
        )

    with torch.device("meta"):
        clip_l = count(
            CLIPTextModel(
                CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12)
            )
        )
        clip_g = count(
            CLIPTextModelWithProjection(
                CLIPTextConfig(
                    hidden_size=1280,
                    intermediate_size=5120,
                    num_attention_heads=20,
                    num_hidden_layers=32,
                    projection_dim=1280,
                )
            )
        )
        sd15_unet = count(
            UNet2DConditionModel(
                block_out_channels=(320, 640, 1280, 1280),
                cross_attention_dim=768,
                attention_head_dim=8,
            )
        )
        sdxl_unet = count(
            UNet2DConditionModel(
                block_out_channels=(320, 640, 1280),
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                transformer_layers_per_block=(1, 2, 10),
                attention_head_dim=(5, 10, 20),
                cross_attention_dim=2048,
                addition_embed_type="text_time",
                addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
                use_linear_projection=True,
            )
        )
        flux = count(FluxTransformer2DModel())  # its defaults are FLUX.1's configuration
        t5 = count(
            T5EncoderModel(
                T5Config(
                    d_model=4096,
                    d_ff=10240,
                    d_kv=64,
                    num_heads=64,
                    num_layers=24,
                    feed_forward_proj="gated-gelu",
                )
            )
        )
        vae4, vae16 = count(vae(4)), count(vae(16))
    models = {
        "sd15": (sd15_unet + clip_l + vae4, 2),
        "sdxl": (sdxl_unet + clip_l + clip_g + vae4, 2),
        "sdxl-turbo": (sdxl_unet + clip_l + clip_g + vae4, 2),
        "flux-schnell": (flux + t5 + clip_l + vae16, 2),  # bfloat16: also 2 bytes
    }
    return {
        name: {"parameters": params, "gb_half_precision": params * size / 1e9}
        for name, (params, size) in models.items()
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/models.json"))
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        results = {
            "machine": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cpu_threads": torch.get_num_threads(),
                "platform": platform.platform(),
            },
            "steps": STEPS,
            "switch": bench_switch(data_dir, args.rounds),
            "lora": bench_lora(data_dir, args.rounds),
            "real_weights": real_model_weights(),
        }
    s, lo = results["switch"], results["lora"]
    rows = [
        ("job after a model switch, model loaded from disk", s["switch_job_from_disk_s"], ""),
        ("job after a model switch, model in memory", s["switch_job_from_cache_s"], ""),
        ("  ratio disk / memory", s["switch_job_ratio"], "×"),
        ("load (acquire) from disk", s["acquire_cold_s"], ""),
        ("acquire when loaded", s["acquire_warm_s"], ""),
        ("plain job (tiny, 4 images)", lo["plain_job_s"], ""),
        ("same job with a loaded LoRA", lo["lora_job_s"], ""),
        ("  ratio LoRA / plain", lo["lora_ratio"], "×"),
        ("first job with the LoRA (loads it)", lo["first_lora_job_s"], ""),
    ]
    print(f"{'models benchmark (tiny models, CPU)':<52} {'value':>12}")
    for label, value, unit in rows:
        if unit:
            text = f"{value:.2f}×"
        else:
            text = f"{value * 1000:.1f} ms" if value >= 1e-3 else f"{value * 1e6:.0f} µs"
        print(f"{label:<52} {text:>12}")
    print(f"{'weights of real models (half precision)':<52} {'GB':>12}")
    for name, size in results["real_weights"].items():
        label = f"{name} ({size['parameters'] / 1e9:.2f} B parameters)"
        print(f"{label:<52} {size['gb_half_precision']:>12.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
