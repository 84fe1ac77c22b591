"""Upscale (Subtle) as a queued operation: the super-resolution model of :mod:`engine.upscalers`
(``EASEL_UPSCALER_MODEL``, loaded on first use), tiled, on the engine thread (it shares the
device with the diffusion models, so it waits its turn in the fair queue like any job).

No diffusion runs: the result depends on the file, the image, the factor and the tiling alone,
so seeds, prompts and the diffusion model play no part (the request still names its model, as
a job records it). Memory stays bounded at any size: the model sees one tile at a time, and
the output is limited to ``EASEL_MAX_UPSCALE_PIXELS``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from PIL import Image

from engine.catalogue import ExtraModels
from engine.ops.base import RunOutput, StepCallback
from engine.ops.hub import hub_file, is_hub_file
from engine.requests import GenerationRequest, InvalidRequest, NotAvailable
from engine.upscalers import Upscaler, load_upscaler
from engine.weighting import Encoded

log = logging.getLogger(__name__)

OVERLAP = 32  # input pixels shared by neighbouring tiles (engine.upscalers' default) ...
OVERLAP_SHARE = 4  # ... or a quarter of a smaller tile (the overlap may be at most a half)
TINY_SCALE = 4  # the tiny upscaler is a 4× compact network


def pixel_problem(request: GenerationRequest, max_pixels: int) -> str | None:
    pixels = request.width * request.height
    if pixels <= max_pixels:
        return None
    return (
        f"Upscale (Subtle) ×{request.upscale_factor} would make {request.width}×{request.height}"
        f" ({pixels:,} pixels), above this server's limit of {max_pixels:,}; use ×2."
    )


class SubtleUpscale:
    """Runs UPSCALE_SUBTLE batches (one image per request). Engine thread only."""

    def __init__(self, extras: ExtraModels, *, data_dir: Path, device: str = "auto") -> None:
        self.extras = extras
        self.data_dir = Path(data_dir)
        self.device = device
        self._upscaler: Upscaler | None = None

    def upscaler(self) -> Upscaler:
        """The configured model, loaded on first use. Raises NotAvailable / ModelLoadError."""
        if self._upscaler is None:
            source = self.extras.upscaler
            if not source:
                raise NotAvailable(
                    "Upscale (Subtle) needs an upscaler model, and none is configured "
                    "(EASEL_UPSCALER_MODEL: an ESRGAN-family .pth or .safetensors file)."
                )
            if source == "tiny":
                from engine.tiny_extras import build_tiny_upscaler

                source = str(build_tiny_upscaler(self.data_dir / "models", scale=TINY_SCALE))
            elif is_hub_file(source):  # e.g. lllyasviel/Annotators/RealESRGAN_x4plus.pth
                source = str(hub_file(source, "the upscaler")[0])
            self._upscaler = load_upscaler(source, device=self.device)
        return self._upscaler

    def run(self, requests: list[GenerationRequest], on_step: StepCallback) -> RunOutput:
        upscaler = self.upscaler()
        tile = self.extras.upscale_tile
        overlap = min(OVERLAP, tile // OVERLAP_SHARE)
        images: list[list[Image.Image]] = []
        # A batch is one call; tiles of all its requests count as one job's progress. Progress
        # carries no latents, so it is reported only where no job asked for previews (the
        # engine thread would make previews from latents).
        previews_wanted = any(r.previews for r in requests)
        offset = 0
        for request in requests:
            problem = pixel_problem(request, self.extras.max_upscale_pixels)
            if problem is not None:
                raise InvalidRequest(problem)
            tiles = [0]

            def tile_done(done: int, total: int, before: int = offset, tiles: list = tiles) -> None:
                tiles[0] = total
                if not previews_wanted:
                    on_step(before + done, before + total, None)  # type: ignore[arg-type]

            image = upscaler.upscale(
                request.init_images[0],
                request.upscale_factor,
                tile=tile,
                overlap=overlap,
                on_tile=tile_done,
            )
            images.append([image])
            offset += tiles[0]
        info = upscaler.info
        repro = {
            "upscaler": info.name,
            "upscaler_identity": info.identity,
            "upscaler_architecture": info.architecture,
            "upscaler_scale": info.scale,
            "upscale_factor": requests[0].upscale_factor,
            "upscale_tile": tile,
            "upscale_overlap": overlap,
            "device": info.device,
            "dtype": info.dtype,
        }
        return RunOutput(images, repro, [Encoded({}) for _ in requests])
