"""GPU benchmark: the Stable Diffusion 1.5 architecture with random weights, 512×512, 20 steps,
half precision. In one run, side by side:

- images/s at batch 1, 4 and 8, and for 8 one-image jobs of 8 owners with 8 different prompts
  (which the fair queue batches into one call), for
  * ``bare``: an unmodified diffusers ``StableDiffusionPipeline`` loaded from the same folder,
  * ``easel``: Easel's engine, eager,
  * ``easel-compiled``: Easel's engine with ``EASEL_COMPILE`` (torch.compile, channels-last,
    cudnn.benchmark), warmed up at load as the engine does;
- peak GPU memory of each row; seconds to the first preview; the compile warm-up's seconds;
- whether an image made in a batch equals the same image made alone, eager and compiled;
- that the U-Net's weights really are in the dtype asked for after loading.

    python -m benchmarks.gpu_bench [--out benchmarks/results/gpu.json] [--repeats 3]

Needs a CUDA GPU (about 8 GB); a few minutes on one H100, most of it compiling. The target
(issue 13): at least 14 images/s on one H100/H200, half the FLOP limit of about 28.
``--device cpu --arch tiny`` runs the same code on the tiny model, to check the script itself.
Random weights make noise, but the arithmetic is exactly a real SD 1.5's, with no download.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

BATCHES = (1, 4, 8)
MIXED = 8  # one-image jobs of as many owners, each with its own prompt
PROMPTS = [
    "a lighthouse at dusk",
    "a red fox in snow, watercolour",
    "isometric city block at night",
    "portrait of an old sailor, oil painting",
    "a bowl of ramen, studio photo",
    "mountain lake at sunrise, misty",
    "a robot reading in a library",
    "macro shot of a dew-covered leaf",
]


def build_sd15_random(folder: Path, dtype: Any) -> Path:
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
    pipe.to(dtype)
    pipe.save_pretrained(folder)
    return folder


class Gpu:
    """What differs between a CUDA device and the CPU check: syncing and peak memory."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()

    def peak_gb(self) -> float | None:
        return self.torch.cuda.max_memory_allocated() / 1e9 if self.cuda else None

    def name(self) -> str:
        return self.torch.cuda.get_device_name(0) if self.cuda else platform.processor() or "cpu"


def digests(images: Any) -> list[str]:
    return [hashlib.sha256(i.tobytes()).hexdigest() for i in images]


class Easel:
    """Easel's engine on one loaded model, driven as the bot drives it."""

    def __init__(self, model: Any, size: int, steps: int, warm_up: bool) -> None:
        from engine.pool import ModelPool
        from engine.worker import DeviceExecutor, Engine

        pool = ModelPool.of(model)
        device = DeviceExecutor(pool, warm_up=max(BATCHES) if warm_up else 0)
        self.engine = Engine(
            pool, executors=[device], preview_interval=1.0, batch_max_images=8, max_per_owner=100
        )
        self.size, self.steps = size, steps
        self.engine.start()
        t0 = time.perf_counter()
        for future in self.engine.preload():
            future.result()
        self.warm_up_s = time.perf_counter() - t0 if warm_up else None

    def request(self, seeds: tuple[int, ...], owner: str = "a", prompt: str = PROMPTS[0]):
        from engine.requests import GenerationRequest, Operation

        return GenerationRequest(
            Operation.TXT2IMG,
            prompt,
            "",
            self.size,
            self.size,
            self.steps,
            7.0,
            "euler_a",
            seeds,
            owner=owner,
        )

    def grid(self, batch: int) -> list[Any]:
        return list(self.engine.submit(self.request(tuple(range(batch)))).result(600).images)

    def mixed(self) -> list[Any]:
        # Queued together, as when eight members press at once; one pipeline call runs them.
        handles = [
            self.engine.submit(self.request((i,), owner=f"owner{i}", prompt=PROMPTS[i]))
            for i in range(MIXED)
        ]
        return [image for h in handles for image in h.result(600).images]

    def first_preview_s(self) -> float | None:
        got: list[float] = []
        t0 = time.perf_counter()

        def on_progress(p: Any) -> None:
            if p.preview is not None and not got:
                got.append(time.perf_counter() - t0)

        self.engine.submit(self.request((1, 2, 3, 4)), on_progress=on_progress).result(600)
        return got[0] if got else None

    def batched_equals_alone(self) -> bool:
        alone = digests(self.engine.submit(self.request((5,))).result(600).images)
        engine = self.engine
        # Hold the engine with a job so both below queue up behind it and share one call.
        running = threading.Event()
        hold = engine.submit(self.request((9,), owner="hold"), on_progress=lambda _: running.set())
        running.wait(600)
        first = engine.submit(self.request((5,), owner="x"))
        other = engine.submit(self.request((6, 7, 8), owner="y"))
        hold.result(600)
        batched = digests(first.result(600).images)
        assert other.result(600).batch_images == 4, "the two jobs did not share a call"
        return alone == batched

    def stop(self) -> None:
        self.engine.stop()


def bare_pipeline(folder: Path, device: str, dtype: Any, size: int, steps: int) -> Callable:
    """An unmodified diffusers pipeline: no batch-invariance wrappers, no VAE slicing."""
    import torch
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    scheduler_config = pipe.scheduler.config

    def run(prompts: list[str]) -> list[Any]:
        pipe.scheduler = EulerAncestralDiscreteScheduler.from_config(scheduler_config)
        return pipe(
            prompt=prompts,
            width=size,
            height=size,
            num_inference_steps=steps,
            guidance_scale=7.0,
            generator=[torch.Generator("cpu").manual_seed(i) for i in range(len(prompts))],
            output_type="pil",
        ).images

    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/gpu.json")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float16", choices=("float16", "bfloat16", "float32"))
    parser.add_argument("--arch", default="sd15", choices=("sd15", "tiny"))
    parser.add_argument("--no-compile", action="store_true", help="skip easel-compiled")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("No CUDA GPU: this benchmark needs one (or --device cpu --arch tiny to check it).")
        return 2
    from engine.loading import load_model
    from engine.tiny import tiny_model_folder

    gpu = Gpu(args.device)
    dtype = getattr(torch, args.dtype)
    size, steps = (512, 20) if args.arch == "sd15" else (64, 4)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        if args.arch == "sd15":
            folder = build_sd15_random(Path(tmp) / "sd15", dtype)
        else:
            folder = tiny_model_folder(Path(tmp), "tiny")
        setup_s = time.perf_counter() - t0

        def load(compile_unet: bool) -> Any:
            model = load_model(
                str(folder),
                data_dir=Path(tmp),
                device=args.device,
                dtype=args.dtype,
                compile_unet=compile_unet,
            )
            unet = model.txt2img.unet
            # The weights really are in the precision asked for (not upcast on the way).
            assert unet.dtype == dtype, f"U-Net loaded as {unet.dtype}, not {dtype}"
            return model

        modes: dict[str, Callable[[int | None], list[Any]]] = {}
        bare = bare_pipeline(folder, args.device, dtype, size, steps)
        modes["bare"] = lambda n: bare(PROMPTS[:MIXED] if n is None else [PROMPTS[0]] * n)
        engines = {"easel": Easel(load(False), size, steps, warm_up=False)}
        if not args.no_compile:
            engines["easel-compiled"] = Easel(load(True), size, steps, warm_up=True)
        for name, easel in engines.items():
            modes[name] = lambda n, e=easel: e.mixed() if n is None else e.grid(n)
        for run in modes.values():  # warm-up: kernels, allocator, caches
            run(1)
        gpu.sync()

        rows = []
        for batch in (*BATCHES, None):
            images = MIXED if batch is None else batch
            row: dict[str, Any] = {"batch": batch or f"{MIXED} owners"}
            times: dict[str, list[float]] = {name: [] for name in modes}
            peaks: dict[str, float | None] = {}
            for _ in range(args.repeats):  # alternate, so drift hits every mode alike
                for name, run in modes.items():
                    gpu.reset_peak()
                    t = time.perf_counter()
                    run(batch)
                    gpu.sync()
                    times[name].append(time.perf_counter() - t)
                    peaks[name] = gpu.peak_gb()
            for name in modes:
                row[f"{name}_images_per_s"] = images / min(times[name])
                row[f"{name}_peak_gb"] = peaks[name]
            rows.append(row)

        results: dict[str, Any] = {
            "benchmark": "gpu",
            "device": gpu.name(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "workload": {"arch": args.arch, "size": size, "steps": steps, "dtype": args.dtype},
            "setup_s": setup_s,
            "throughput": rows,
        }
        for name, easel in engines.items():
            results[name] = {
                "first_preview_s": easel.first_preview_s(),
                "batched_equals_alone": easel.batched_equals_alone(),
                "compile_warm_up_s": easel.warm_up_s,
            }
            easel.stop()

    print_table(results, list(modes))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"written to {out}")
    return 0


def print_table(results: dict[str, Any], modes: list[str]) -> None:
    print(f"{results['device']}, {results['workload']}")
    header = f"{'batch':>9}" + "".join(f"  {m + ' img/s':>20}  {'peak GB':>7}" for m in modes)
    print(header)
    for row in results["throughput"]:
        line = f"{row['batch']!s:>9}"
        for m in modes:
            peak = row[f"{m}_peak_gb"]
            peak_text = "-" if peak is None else f"{peak:.2f}"
            line += f"  {row[f'{m}_images_per_s']:>20.2f}  {peak_text:>7}"
        print(line)
    for m in modes[1:]:
        r = results[m]
        print(
            f"{m}: first preview after {r['first_preview_s']} s; batched == alone: "
            f"{r['batched_equals_alone']}; compile warm-up {r['compile_warm_up_s']} s"
        )


if __name__ == "__main__":
    raise SystemExit(main())
