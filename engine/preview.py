"""Step previews. Without configuration, a cheap linear map from the latent channels to RGB, no
VAE decode; with a tiny autoencoder (TAESD, diffusers' ``AutoencoderTiny``), a real picture at a
small fraction of the VAE's cost (:class:`Previews`).

Factors from ComfyUI's ``comfy/latent_formats.py`` (``latent_rgb_factors`` and
``latent_rgb_factors_bias``; SD 1.x's are also A1111's ``sd_vae_approx.py`` "cheap
approximation"): one channels×3 matrix per latent family, applied to the latents as the
sampler holds them (scaled, and for SD3 and FLUX shifted, exactly as diffusers' pipelines keep
them). SD3 and FLUX latents have 16 channels; FLUX's arrive here already unpacked from its 2×2
patches (engine.pipelines).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.requests import first_line

log = logging.getLogger(__name__)

SD1_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
SDXL_FACTORS = [
    [0.3651, 0.4232, 0.4341],
    [-0.2533, -0.0042, 0.1068],
    [0.1076, 0.1111, -0.0362],
    [-0.3165, -0.2492, -0.2188],
]
SDXL_BIAS = [0.1084, -0.0175, -0.0011]
SD3_FACTORS = [
    [-0.0922, -0.0175, 0.0749],
    [0.0311, 0.0633, 0.0954],
    [0.1994, 0.0927, 0.0458],
    [0.0856, 0.0339, 0.0902],
    [0.0587, 0.0272, -0.0496],
    [-0.0006, 0.1104, 0.0309],
    [0.0978, 0.0306, 0.0427],
    [-0.0042, 0.1038, 0.1358],
    [-0.0194, 0.0020, 0.0669],
    [-0.0488, 0.0130, -0.0268],
    [0.0922, 0.0988, 0.0951],
    [-0.0278, 0.0524, -0.0542],
    [0.0332, 0.0456, 0.0895],
    [-0.0069, -0.0030, -0.0810],
    [-0.0596, -0.0465, -0.0293],
    [-0.1448, -0.1463, -0.1189],
]
SD3_BIAS = [0.2394, 0.2135, 0.1925]
FLUX_FACTORS = [
    [-0.0346, 0.0244, 0.0681],
    [0.0034, 0.0210, 0.0687],
    [0.0275, -0.0668, -0.0433],
    [-0.0174, 0.0160, 0.0617],
    [0.0859, 0.0721, 0.0329],
    [0.0004, 0.0383, 0.0115],
    [0.0405, 0.0861, 0.0915],
    [-0.0236, -0.0185, -0.0259],
    [-0.0245, 0.0250, 0.1180],
    [0.1008, 0.0755, -0.0421],
    [-0.0515, 0.0201, 0.0011],
    [0.0428, -0.0012, -0.0036],
    [0.0817, 0.0765, 0.0749],
    [-0.1264, -0.0522, -0.1103],
    [-0.0280, -0.0881, -0.0499],
    [-0.1262, -0.0982, -0.0778],
]
FLUX_BIAS = [-0.0329, -0.0718, -0.0851]
FACTORS: dict[str, tuple[list[list[float]], list[float]]] = {
    "sd1": (SD1_FACTORS, [0.0, 0.0, 0.0]),
    "sd2": (SD1_FACTORS, [0.0, 0.0, 0.0]),
    "sdxl": (SDXL_FACTORS, SDXL_BIAS),
    "sd3": (SD3_FACTORS, SD3_BIAS),
    "flux": (FLUX_FACTORS, FLUX_BIAS),
}
PREVIEW_LONG_SIDE = 256


def latents_to_preview(latents: torch.Tensor, family: str) -> Image.Image:
    """One image's latents (channels, h, w) → a small RGB picture."""
    factors, bias = FACTORS.get(family, FACTORS["sd1"])
    matrix = torch.tensor(factors)
    if latents.shape[0] != matrix.shape[0]:
        raise ValueError(f"{family} previews need {matrix.shape[0]} latent channels")
    rgb = torch.einsum("chw,cr->hwr", latents.detach().float().cpu(), matrix) + torch.tensor(bias)
    return _small(rgb)


def _small(rgb: torch.Tensor) -> Image.Image:
    """(h, w, 3) values in -1..1 → an RGB picture PREVIEW_LONG_SIDE pixels on its long side."""
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    scale = PREVIEW_LONG_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


class Previews:
    """One loaded model's previews. ``decoder``: a TAESD for the model's latents (a Hub id such
    as ``madebyollin/taesd`` for SD 1.x/2.x, ``madebyollin/taesdxl`` for SDXL,
    ``madebyollin/taesd3``, ``madebyollin/taef1``; a folder; or ``tiny``, a random one built
    locally), loaded on the model's device at the first preview. Without one, or when it
    cannot load (logged once: a preview is not worth failing a job over), or does not fit the
    latents, the linear map."""

    def __init__(
        self,
        family: str,
        decoder: str | None = None,
        *,
        device: Any = "cpu",
        dtype: torch.dtype = torch.float32,
        data_dir: Path = Path("."),
    ) -> None:
        self.family = family
        self.source = decoder
        self.device = device
        self.dtype = dtype
        self.data_dir = Path(data_dir)
        self._decoder: Any = None
        self._tried = not decoder
        self._lock = threading.Lock()

    def image(self, latents: torch.Tensor) -> Image.Image:
        """One image's latents (channels, h, w), as the sampler holds them → a small picture."""
        decoder = self.load()
        if decoder is None or decoder.config.latent_channels != latents.shape[0]:
            return latents_to_preview(latents, self.family)
        config = decoder.config
        with torch.inference_mode():
            # As diffusers' pipelines decode with an AutoencoderTiny in the VAE's place.
            x = latents.unsqueeze(0).to(decoder.device, decoder.dtype)
            x = x / config.scaling_factor + config.shift_factor
            rgb = decoder.decode(x).sample[0].float().permute(1, 2, 0).cpu()
        return _small(rgb)

    def load(self) -> Any:
        """The decoder, loaded now if it was not (the engine loads it before a batch runs, under
        its load lock); None without one."""
        if self._tried:
            return self._decoder
        with self._lock:
            if self._tried:
                return self._decoder
            self._tried = True
            from diffusers import AutoencoderTiny

            source = str(self.source)
            if source == "tiny":
                from engine.tiny_extras import build_tiny_preview_decoder

                source = str(build_tiny_preview_decoder(self.data_dir / "models"))
            try:
                decoder = AutoencoderTiny.from_pretrained(source, torch_dtype=self.dtype)
            except Exception as exc:  # a missing folder, no network, not a TAESD
                log.warning(
                    "Preview decoder %s cannot load (%s: %s); previews use the linear map.",
                    self.source,
                    type(exc).__name__,
                    first_line(exc),
                )
                return None
            self._decoder = decoder.to(self.device).eval()
            log.info("Preview decoder %s on %s.", self.source, self.device)
            return self._decoder
