"""Upscale (Subtle): a super-resolution model that keeps the picture and adds pixels.

ESRGAN-family weights (``.pth`` or ``.safetensors``: 4x-UltraSharp, RealESRGAN x4plus / x2plus,
the RealESRGAN "compact" models, and whatever else spandrel recognises as super-resolution) are
loaded with spandrel, which reads the architecture and scale from the weights themselves and
unpickles ``.pth`` files with a restricted unpickler (tensors only, no code).

The image is cut into tiles of ``tile`` input pixels overlapping by at least ``overlap``; each tile
runs through the model alone, and the tiles are blended with linear feathering across the overlaps
(weights that sum to one at every pixel), so no seam shows and the model's memory is bounded by the
tile size, not the image size. Finished rows leave the float accumulator as soon as no later tile
touches them, so besides the model only one band of tiles is held in float32; the result itself is
held as 8-bit RGB.

×2 and ×4: a model of the requested scale runs once; a larger model (a 4× model asked for ×2) is
followed by an antialiased bicubic downscale of each tile before blending; a smaller one (a 2× model
asked for ×4) runs again on its own output.

Memory, measured by ``python -m benchmarks.upscale_bench`` (CPU, float32, one process per case):
upscaling a whole image needs extra memory growing with its area (RRDB, the 4x-UltraSharp
network: about 5 KB per input pixel at ×4; the compact network: about 1.7 KB), while tiled it
stays at what one tile needs plus the result: with small tiles about 20 MiB per output megapixel
at ×4 (the 8-bit result is 3 MB of it; the rest is one float32 band of tiles, 12 bytes × output
width × tile height × factor). A 512-pixel tile of the RRDB network is therefore about 1.3 GB in
float32 on a CPU, half that in float16 on a GPU; smaller tiles need less and cost a little more
time in overlaps.

Deterministic: the same file, image, factor, tile and overlap give the same bytes on the same
device (eval mode, no sampling; cuDNN autotuning is left off by the engine).
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from engine.loading import ModelLoadError, pick_device
from engine.requests import UPSCALE_FACTORS, GenerationError, InvalidRequest, first_line

log = logging.getLogger(__name__)

MODEL_SUFFIXES = (".pth", ".safetensors")
MIN_TILE = 32  # below this, most of every tile is overlap and the model sees little context


@dataclass(frozen=True)
class UpscalerInfo:
    """What a job records about the model that upscaled it."""

    name: str  # the file name
    architecture: str  # spandrel's name for it, e.g. "ESRGAN", "RealESRGAN Compact"
    scale: int  # the model's own factor
    identity: str  # sha256 of the file, so a remake can tell the same weights
    device: str
    dtype: str


def load_upscaler(path: str | Path, *, device: str | torch.device = "cpu") -> Upscaler:
    """Load a super-resolution model file; ``device`` is a torch device or ``"auto"``.

    Raises :class:`engine.loading.ModelLoadError` whose ``str()`` names the file and the problem.
    """
    import spandrel

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"Upscaler model {path}: no such file.")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelLoadError(
            f"Upscaler model {path.name}: expected a .pth or .safetensors file of ESRGAN-family "
            f"weights, not {path.suffix or 'a file without a suffix'}."
        )
    torch_device = pick_device(device) if isinstance(device, str) else device
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_file(path)
    except spandrel.UnsupportedModelError:
        raise ModelLoadError(
            f"Upscaler model {path.name}: its weights match no super-resolution architecture "
            "spandrel knows (ESRGAN, RealESRGAN, SwinIR, ...)."
        ) from None
    except Exception as exc:  # torch, safetensors and pickle raise many kinds for a bad file
        raise ModelLoadError(
            f"Upscaler model {path.name}: cannot read the weights ({first_line(exc)})."
        ) from exc
    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(
            f"Upscaler model {path.name}: a {descriptor.architecture.name} "
            f"{descriptor.purpose.lower()} model, not an upscaler."
        )
    if descriptor.scale < 2:
        raise ModelLoadError(
            f"Upscaler model {path.name}: a 1× {descriptor.architecture.name} "
            f"{descriptor.purpose.lower()} model; it restores but does not enlarge."
        )
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelLoadError(
            f"Upscaler model {path.name}: works on {descriptor.input_channels}-channel images; "
            "Easel upscales RGB."
        )
    # Half precision halves memory and is about twice as fast on GPUs; CPUs are slow in it.
    if torch_device.type == "cuda" and descriptor.supports_half:
        dtype = torch.float16
    else:
        dtype = torch.float32
    descriptor.to(torch_device).to(dtype).eval()
    info = UpscalerInfo(
        name=path.name,
        architecture=descriptor.architecture.name,
        scale=descriptor.scale,
        identity="sha256:" + _sha256(path)[:16],
        device=str(torch_device),
        dtype=str(dtype).removeprefix("torch."),
    )
    log.info(
        "Upscaler %s (%s, %d×) on %s in %s.",
        info.name,
        info.architecture,
        info.scale,
        info.device,
        info.dtype,
    )
    return Upscaler(descriptor, info)


class Upscaler:
    """A loaded super-resolution model. Not thread-safe: call it from the engine's thread."""

    def __init__(self, descriptor, info: UpscalerInfo) -> None:
        self._model = descriptor
        self.info = info

    @property
    def scale(self) -> int:
        return self.info.scale

    def upscale(
        self,
        image: Image.Image,
        factor: int,
        *,
        tile: int | None = 512,
        overlap: int = 32,
        on_tile: Callable[[int, int], None] | None = None,
    ) -> Image.Image:
        """``image`` enlarged exactly ``factor`` times (2 or 4) in both directions.

        ``tile`` is the tile side in input pixels (None: the whole image at once, memory growing
        with its size); ``overlap`` the least overlap between neighbouring tiles. Transparency is
        kept (the alpha channel is resized with Lanczos; the model sees RGB). ``on_tile(done,
        total)`` is called after each tile; what it raises (a cancellation) passes through.
        Raises :class:`engine.requests.GenerationError` with a user-readable reason.
        """
        if factor not in UPSCALE_FACTORS:
            raise InvalidRequest(f"The upscale factor must be 2 or 4, not {factor}.")
        if tile is not None and (tile < MIN_TILE or not 0 <= overlap <= tile // 2):
            raise InvalidRequest(
                f"Upscale tiles must be at least {MIN_TILE} pixels with an overlap of 0 up to "
                f"half a tile, not {tile} pixels overlapping by {overlap}."
            )
        has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
        alpha = image.convert("RGBA").getchannel("A") if has_alpha else None
        rgb = np.array(image.convert("RGB"))  # writable: torch shares its memory
        passes = _pass_factors(self.scale, factor)
        counter = _TileCounter(on_tile, _tile_count(image.size, passes, tile, overlap))
        try:
            for pass_factor in passes:
                rgb = self._one_pass(rgb, pass_factor, tile, overlap, counter)
        except _CallbackRaised as raised:
            raise raised.error from None
        except torch.OutOfMemoryError as exc:
            raise GenerationError(
                f"Out of memory upscaling {image.width}×{image.height} ×{factor}"
                + (f" in {tile}-pixel tiles" if tile else " in one piece")
                + "; use smaller tiles.",
                out_of_memory=True,
            ) from exc
        except GenerationError:
            raise
        except Exception as exc:
            raise GenerationError(f"Upscaling failed: {first_line(exc)}") from exc
        out = Image.fromarray(rgb, "RGB")
        if alpha is not None:
            out.putalpha(alpha.resize(out.size, Image.Resampling.LANCZOS))
        return out

    def _one_pass(
        self, rgb: np.ndarray, factor: int, tile: int | None, overlap: int, counter: _TileCounter
    ) -> np.ndarray:
        """One run of the model over ``rgb`` (H×W×3 uint8), tiled, giving ``factor``× the size."""
        height, width = rgb.shape[:2]
        xs, tile_w = _tiling(width, tile, overlap)
        ys, tile_h = _tiling(height, tile, overlap)
        weights_x = _axis_weights(width, xs, tile_w, overlap, factor)
        weights_y = _axis_weights(height, ys, tile_h, overlap, factor)
        source = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)  # 1×3×H×W uint8, shared
        out = np.empty((height * factor, width * factor, 3), np.uint8)
        band = np.zeros((tile_h * factor, width * factor, 3), np.float32)
        for row, y in enumerate(ys):
            for column, x in enumerate(xs):
                piece = self._run_tile(source[..., y : y + tile_h, x : x + tile_w], factor)
                weight = weights_y[row][:, None, None] * weights_x[column][None, :, None]
                band[:, x * factor : (x + tile_w) * factor] += piece * weight
                counter.step()
            # Rows above the next row of tiles are final: no later tile reaches them.
            next_top = ys[row + 1] * factor if row + 1 < len(ys) else height * factor
            done = next_top - y * factor
            out[y * factor : next_top] = _to_uint8(band[:done])
            band[: band.shape[0] - done] = band[done:]
            band[band.shape[0] - done :] = 0
        return out

    def _run_tile(self, tile: torch.Tensor, factor: int) -> np.ndarray:
        model = self._model
        x = tile.to(model.device, model.dtype).div_(255)
        y = model(x)  # 1×3×(h·scale)×(w·scale) in [0, 1]
        if model.scale != factor:
            # A larger model's output brought to the asked size: bicubic with antialiasing (the
            # filter Pillow's BICUBIC resize uses when reducing), so fine detail does not alias.
            size = (tile.shape[-2] * factor, tile.shape[-1] * factor)
            y = F.interpolate(y.float(), size=size, mode="bicubic", antialias=True)
        return y[0].permute(1, 2, 0).float().cpu().numpy()


class _CallbackRaised(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


class _TileCounter:
    """Counts finished tiles for ``on_tile``; what it raises is carried past upscale()'s own
    error handling."""

    def __init__(self, on_tile: Callable[[int, int], None] | None, total: int) -> None:
        self.on_tile = on_tile
        self.total = total
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.on_tile is not None:
            try:
                self.on_tile(self.done, self.total)
            except Exception as exc:
                raise _CallbackRaised(exc) from exc


def _tile_count(size: tuple[int, int], passes: list[int], tile: int | None, overlap: int) -> int:
    """Tiles the passes over an image of ``size`` run, in all."""
    width, height = size
    total = 0
    for factor in passes:
        total += len(_tiling(width, tile, overlap)[0]) * len(_tiling(height, tile, overlap)[0])
        width, height = width * factor, height * factor
    return total


def _pass_factors(scale: int, factor: int) -> list[int]:
    """The factor each run of a ``scale``× model contributes to reach ``factor``×: one run when
    the model is large enough (downscaling its output), else repeated runs."""
    passes, left = [], factor
    while left > 1:
        step = max(d for d in range(1, min(scale, left) + 1) if left % d == 0)
        if step == 1:
            raise GenerationError(f"A {scale}× upscaler cannot make exactly ×{factor}.")
        passes.append(step)
        left //= step
    return passes


def _tiling(length: int, tile: int | None, overlap: int) -> tuple[list[int], int]:
    """Starts and size of the fewest equal tiles of at most ``tile`` covering ``length``, spread
    evenly with neighbours overlapping by at least ``overlap``; the first starts at 0 and the
    last ends at ``length``. Tiles are shrunk to what that count needs: 256 pixels in tiles of
    128 overlapping by 16 are three tiles of 96, not three of 128 overlapping by 64."""
    if tile is None or length <= tile:
        return [0], length
    count = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (count - 1) * overlap) / count)
    return [round(i * (length - size) / (count - 1)) for i in range(count)], size


def _axis_weights(
    length: int, starts: list[int], tile: int, overlap: int, factor: int
) -> list[np.ndarray]:
    """Each tile's blending weight along one axis (output pixels), summing to 1 everywhere.

    A tile's weight ramps linearly from ~0 at an edge inside the image (where the model lacked
    context) to 1 over ``overlap`` output-scaled pixels; image borders are not ramped. Products of
    two axes' weights then also sum to 1 over the grid of tiles.
    """
    ramp_len = max(1, overlap * factor)
    ramp = np.minimum(1.0, (np.arange(tile * factor, dtype=np.float32) + 0.5) / ramp_len)
    raw = []
    for i, start in enumerate(starts):
        w = np.ones(tile * factor, np.float32)
        if i > 0:
            w = np.minimum(w, ramp)
        if start + tile < length:
            w = np.minimum(w, ramp[::-1])
        raw.append(w)
    total = np.zeros(length * factor, np.float32)
    for start, w in zip(starts, raw, strict=True):
        total[start * factor : start * factor + w.size] += w
    return [
        w / total[start * factor : start * factor + w.size]
        for start, w in zip(starts, raw, strict=True)
    ]


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
