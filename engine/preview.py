"""Cheap previews: a linear map from the 4 latent channels to RGB, no VAE decode.

Factors from ComfyUI's ``comfy/latent_formats.py`` (also A1111's ``sd_vae_approx.py`` "cheap
approximation"): one 4×3 matrix per latent family, applied to the (scaled) latents.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

SD1_FACTORS = [
    [0.3512, 0.2297, 0.3227],
    [0.3250, 0.4974, 0.2350],
    [-0.2829, 0.1762, 0.2721],
    [-0.2120, -0.2616, -0.7177],
]
SDXL_FACTORS = [
    [0.3920, 0.4054, 0.4549],
    [-0.2634, -0.0196, 0.0653],
    [0.0568, 0.1687, -0.0755],
    [-0.3112, -0.2359, -0.2076],
]
PREVIEW_LONG_SIDE = 256


def latents_to_preview(latents: torch.Tensor, family: str) -> Image.Image:
    """One image's latents (4, h, w) → a small RGB picture."""
    factors = torch.tensor(SDXL_FACTORS if family == "sdxl" else SD1_FACTORS)
    rgb = torch.einsum("chw,cr->hwr", latents.detach().float().cpu(), factors)
    pixels = ((rgb + 1) * 127.5).clamp(0, 255).to(torch.uint8).numpy()
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    scale = PREVIEW_LONG_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)
