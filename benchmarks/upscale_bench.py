"""Upscale (Subtle) benchmark: time and peak memory per output megapixel, tiled vs untiled.

    python -m benchmarks.upscale_bench [--quick] [--device cpu|cuda] [--out FILE]

Models, random weights in the shapes users run (spandrel builds them from the state dict):
- ``compact``: RealESRGAN's compact network at realesr-general-x4v3's size (64 features,
  32 convolutions), ×4;
- ``rrdb``: ESRGAN's RRDB network at 4x-UltraSharp's and RealESRGAN x4plus's size (64 features,
  23 blocks), ×4, the heavy one;
- ``tiny``: the tests' tiny compact model.
×2 is the same ×4 model with each tile reduced before blending, as Easel serves it.

Memory: each configuration runs in its own process. After loading the model and the image the
process resets its peak resident set (Linux: writing 5 to /proc/self/clear_refs), upscales twice
(the time is the faster run, as the machine may be shared) and reads the new peak (VmHWM
in /proc/self/status). "extra" is that peak minus the resident set before the upscales: what
upscaling itself needed (torch's CPU allocator hands large blocks back to the system, so
tracemalloc or torch's own counters would miss most of it). On CUDA the figure is
torch.cuda.max_memory_allocated during the upscales instead. The tiles here are small (40 to 128
input pixels, overlap 16) so that CPU-sized images are cut into several tiles; memory per tile
grows with the tile's area, and Easel's default is 512.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

OVERLAP = 16
REPEATS = 2


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _model_file(kind: str, folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    if kind == "tiny":
        from engine.tiny_extras import build_tiny_upscaler

        return build_tiny_upscaler(folder, scale=4)
    torch.manual_seed(0)
    if kind == "compact":
        from spandrel.architectures.Compact import Compact

        model = Compact(num_feat=64, num_conv=32, upscale=4)
    else:
        from spandrel.architectures.ESRGAN import ESRGAN

        model = ESRGAN(in_nc=3, out_nc=3, num_filters=64, num_blocks=23, scale=4)
    path = folder / f"{kind}-x4.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    return path


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, measured in this (fresh) process."""
    import numpy as np
    import torch
    from PIL import Image

    from engine.upscalers import load_upscaler

    torch.set_num_threads(spec["threads"])
    upscaler = load_upscaler(spec["file"], device=spec["device"])
    side = spec["side"]
    rgb = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    image = Image.fromarray(rgb)
    tile = spec["tile"] if spec["tiled"] else None
    cuda = spec["device"] == "cuda"
    upscaler.upscale(image.crop((0, 0, 32, 32)), spec["factor"], tile=None)  # warm-up
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
        before = _status_kib("VmRSS") * 1024
    times, cpu_times = [], []
    for _ in range(REPEATS):
        start, cpu_start = time.perf_counter(), time.process_time()
        out = upscaler.upscale(image, spec["factor"], tile=tile, overlap=OVERLAP)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kib("VmHWM") * 1024
    return {
        # Wall time also counts waiting for the neighbours' work on a shared machine; with one
        # thread CPU time is the work itself. Both are kept, each the least of the runs.
        "seconds": min(times),
        "cpu_seconds": min(cpu_times),
        "extra_bytes": peak - before,
        "peak_bytes": peak,
        "output_pixels": out.width * out.height,
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.upscale_bench", "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def plan(quick: bool) -> list[tuple[str, list[int], int]]:
    """(model, input sides, tile) to measure; every side is cut into several tiles."""
    if quick:
        return [("tiny", [256], 128), ("compact", [256], 128)]
    # Sized for a small CPU: the RRDB network costs about 36 MFLOP per input pixel at ×4, so it
    # gets smaller images and tiles.
    return [("tiny", [256, 512], 128), ("compact", [128, 256], 64), ("rrdb", [64, 96], 40)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="benchmarks/results/upscale.json")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="smaller images, no RRDB")
    # One thread by default: on a shared machine several threads spin against the neighbours'
    # work and both wall and CPU time swing several-fold; one core's figures are steady.
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    rows: list[dict[str, Any]] = []
    print(HEADER)
    with tempfile.TemporaryDirectory() as tmp:
        for kind, sides, tile in plan(args.quick):
            path = _model_file(kind, Path(tmp))
            for side in sides:
                for factor in (2, 4):
                    for tiled in (False, True):
                        spec = {
                            "file": str(path),
                            "device": args.device,
                            "side": side,
                            "factor": factor,
                            "tiled": tiled,
                            "tile": tile,
                            "threads": args.threads,
                        }
                        result = run_child(spec)
                        mp = result["output_pixels"] / 1e6
                        row = {
                            "model": kind,
                            "input": f"{side}x{side}",
                            **{k: spec[k] for k in ("factor", "tiled", "tile")},
                            **result,
                            "s_per_mp": result["seconds"] / mp,
                            "cpu_s_per_mp": result["cpu_seconds"] / mp,
                            "extra_mib_per_mp": result["extra_bytes"] / 2**20 / mp,
                        }
                        rows.append(row)
                        print(_format(row), flush=True)

    results = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "device": args.device,
            "threads": args.threads,
            # Other work on the machine slows the timings (not the memory): record how much.
            "load_average_at_end": os.getloadavg(),
        },
        "overlap": OVERLAP,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"\nwritten to {out}")
    return 0


HEADER = (
    f"{'model':<8} {'input':>8} {'factor':>6} {'tiles':>8} {'output MP':>9} {'time s':>8} "
    f"{'s/MP':>7} {'CPU s/MP':>8} {'extra MiB':>9} {'MiB/MP':>7} {'peak MiB':>8}"
)


def _format(row: dict[str, Any]) -> str:
    return (
        f"{row['model']:<8} {row['input']:>8} {'×' + str(row['factor']):>6} "
        f"{row['tile'] if row['tiled'] else 'whole':>8} {row['output_pixels'] / 1e6:>9.2f} "
        f"{row['seconds']:>8.2f} {row['s_per_mp']:>7.2f} {row['cpu_s_per_mp']:>8.2f} "
        f"{row['extra_bytes'] / 2**20:>9.0f} "
        f"{row['extra_mib_per_mp']:>7.0f} {row['peak_bytes'] / 2**20:>8.0f}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
