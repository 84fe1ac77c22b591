"""GPU benchmark: the Stable Diffusion 1.5 architecture with random weights, 512×512, 20 steps,
fp16 — images/s through Easel's engine versus a bare diffusers loop at batch 1/4/8, seconds to the
first preview, and whether batched images equal unbatched ones on this GPU.

    python -m benchmarks.gpu_bench [--out benchmarks/results/gpu.json] [--repeats 3]

Needs a CUDA GPU (about 4 GB); runs in a few minutes on one H100. Random weights make noise, but
the arithmetic is exactly a real SD 1.5's, with no download.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SIZE, STEPS = 512, 20


def build_sd15_random(folder: Path) -> Path:
    """SD 1.5's published component configurations, random weights, the generated tokenizer."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from engine.tiny import _vocab

    vocab = _vocab()
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=64,
        block_out_channels=(320, 640, 1280, 1280),
        layers_per_block=2,
        cross_attention_dim=768,
        attention_head_dim=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=512,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=49408,
            hidden_size=768,
            intermediate_size=3072,
            num_attention_heads=12,
            num_hidden_layers=12,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77),
        unet=unet,
        scheduler=EulerAncestralDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
        ),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.to(torch.float16)
    pipe.save_pretrained(folder)
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("No CUDA GPU: this benchmark needs one.")
        return 2
    from engine.loading import load_model
    from engine.requests import GenerationRequest, Operation
    from engine.samplers import make_scheduler
    from engine.worker import Engine

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        folder = build_sd15_random(Path(tmp) / "sd15")
        model = load_model(str(folder), data_dir=Path(tmp), device="cuda", dtype="float16")
        setup_s = time.perf_counter() - t0
        pipe = model.txt2img

        def bare(batch: int) -> None:
            pipe.scheduler = make_scheduler("euler_a", model.scheduler_config)
            gens = [torch.Generator("cpu").manual_seed(i) for i in range(batch)]
            pipe(
                prompt=["a lighthouse at dusk"] * batch,
                width=SIZE,
                height=SIZE,
                num_inference_steps=STEPS,
                guidance_scale=7.0,
                generator=gens,
                output_type="pil",
            )
            torch.cuda.synchronize()

        engine = Engine(model, preview_interval=1.0, batch_max_images=8, max_per_owner=100)
        engine.start()

        def request(seeds: tuple[int, ...], owner: str = "a") -> GenerationRequest:
            return GenerationRequest(
                Operation.TXT2IMG,
                "a lighthouse at dusk",
                "",
                SIZE,
                SIZE,
                STEPS,
                7.0,
                "euler_a",
                seeds,
                owner=owner,
            )

        def easel(batch: int) -> None:
            engine.submit(request(tuple(range(batch)))).result(600)

        bare(1)
        easel(1)  # warm-up: kernels, allocator
        rows = []
        for batch in (1, 4, 8):
            results = {}
            for name, fn in (("bare", bare), ("easel", easel)):
                times = []
                for _ in range(args.repeats):  # alternate, so drift hits both
                    t = time.perf_counter()
                    fn(batch)
                    times.append(time.perf_counter() - t)
                results[name] = batch / min(times)
            rows.append(
                {
                    "batch": batch,
                    "bare_images_per_s": results["bare"],
                    "easel_images_per_s": results["easel"],
                    "ratio": results["easel"] / results["bare"],
                }
            )

        first_preview: list[float] = []
        got = threading.Event()
        t = time.perf_counter()

        def on_progress(p: Any) -> None:
            if p.preview is not None and not got.is_set():
                first_preview.append(time.perf_counter() - t)
                got.set()

        engine.submit(request((1, 2, 3, 4)), on_progress=on_progress).result(600)

        def digests(images: Any) -> list[str]:
            return [hashlib.sha256(i.tobytes()).hexdigest() for i in images]

        alone = digests(engine.submit(request((5,))).result(600).images)
        engine.stop()
        batched_engine = Engine(model, preview_interval=0, batch_max_images=8, max_per_owner=10)
        handles = [
            batched_engine.submit(request((5,), owner="x")),
            batch_handle := batched_engine.submit(request((6, 7, 8), owner="y")),
        ]
        batched_engine.start()
        batched = digests(handles[0].result(600).images)
        batch_handle.result(600)
        batched_engine.stop()

    results = {
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "workload": {"arch": "sd15-random", "size": SIZE, "steps": STEPS, "dtype": "float16"},
        "setup_s": setup_s,
        "throughput": rows,
        "first_preview_s": first_preview[0] if first_preview else None,
        "batched_equals_alone": alone == batched,
    }
    print(f"{'batch':>5}  {'bare img/s':>10}  {'easel img/s':>11}  {'ratio':>6}")
    for r in rows:
        print(
            f"{r['batch']:>5}  {r['bare_images_per_s']:>10.2f}  "
            f"{r['easel_images_per_s']:>11.2f}  {r['ratio']:>6.3f}"
        )
    print(
        f"first preview after {results['first_preview_s']} s; "
        f"batched == alone: {results['batched_equals_alone']}"
    )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
