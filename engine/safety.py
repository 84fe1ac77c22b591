"""The image-side check: diffusers' ``StableDiffusionSafetyChecker`` (a CLIP model with concept
embeddings), loaded from a folder or from the model's own ``safety_checker`` folder.

Returns a plain ``image -> bool`` (True: withhold), the hook the service runs on every output.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.loading import ModelLoadError, pick_device


def _folders(setting: str, model: str) -> tuple[Path, Path]:
    """(checker folder, image processor folder)."""
    if setting != "model":
        folder = Path(setting).expanduser()
        return folder, folder
    root = Path(model).expanduser()
    if not root.is_dir():
        import diffusers

        try:
            root = Path(diffusers.DiffusionPipeline.download(model))
        except Exception as exc:
            raise ModelLoadError(f"cannot find the model folder of {model!r}: {exc}") from exc
    return root / "safety_checker", root / "feature_extractor"


def load_safety_checker(
    setting: str, *, model: str, device: str = "auto"
) -> Callable[[Image.Image], bool]:
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPImageProcessor

    checker_dir, processor_dir = _folders(setting, model)
    torch_device = pick_device(device)
    try:
        checker = StableDiffusionSafetyChecker.from_pretrained(checker_dir).to(torch_device)
        processor = CLIPImageProcessor.from_pretrained(processor_dir)
    except Exception as exc:
        raise ModelLoadError(f"cannot load a safety checker from {checker_dir}: {exc}") from exc
    checker.eval()
    lock = threading.Lock()  # one image at a time; the checker is small next to the model

    def classify(image: Image.Image) -> bool:
        rgb = image.convert("RGB")
        with lock, torch.inference_mode():
            clip_input = processor(images=[rgb], return_tensors="pt").pixel_values
            pixels = np.asarray(rgb, dtype=np.float32)[None] / 255.0
            _, flagged = checker(
                clip_input=clip_input.to(torch_device, checker.dtype), images=pixels
            )
        return bool(flagged[0])

    return classify
