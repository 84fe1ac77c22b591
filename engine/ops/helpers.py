"""The models that look at pictures rather than make them: the captioner (/describe), the
text-prompted segmenter (Vary Region by words) and the depth estimator (depth control maps).

Each is loaded on first use (``EASEL_CAPTION_MODEL``, ``EASEL_SEGMENT_MODEL``,
``EASEL_DEPTH_MODEL``; ``tiny`` builds a random one locally) and runs on one thread of its own,
so neither the event loop nor the engine thread waits for them; the ``async`` methods are what
the bot awaits. They are small next to a diffusion model (CLIPSeg rd64 150 M parameters, BLIP
base 247 M, Depth Anything V2 Small 25 M) and run on the engine's device beside it.

Segmentation (CLIPSeg, ``CLIPSegForImageSegmentation``): the words and the picture give a heat
map at the processor's size (352² for CIDAS/clipseg-rd64-refined); its sigmoid, resized to the
picture, is the mask where it reaches :data:`SEGMENT_THRESHOLD`. A mask smaller than one 8×8
block of the VAE's is reported as nothing found.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from engine.catalogue import ExtraModels
from engine.control_maps import (
    DepthEstimator,
    load_depth_model,
    load_pretrained,
    make_control_map,
    parse_control_kind,
)
from engine.describe import Captioner, load_captioner
from engine.requests import (
    ControlKind,
    GenerationError,
    InvalidRequest,
    NothingFound,
    first_line,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SEGMENT_THRESHOLD = 0.5  # InvokeAI's text-to-mask (CLIPSeg) default
MIN_REGION_PIXELS = 64  # one 8×8 block of the VAE: anything smaller cannot be repainted alone
MAX_WORDS = 200  # characters of "what to change"; CLIP reads 77 tokens at most
DESCRIPTIONS = 4  # /describe's four candidate prompts


class Segmenter:
    """A CLIPSeg model and its processor. Not thread-safe."""

    def __init__(self, model: Any, processor: Any, *, source: str) -> None:
        self.model = model
        self.processor = processor
        self.source = source

    def __call__(
        self, image: Image.Image, words: str, *, threshold: float = SEGMENT_THRESHOLD
    ) -> Image.Image:
        """White where ``image`` shows ``words`` (a binary mask of its size). Raises
        NothingFound when nothing does, InvalidRequest for empty or overlong words."""
        words = " ".join(words.split())
        mask = self.heat(image, words) >= threshold
        if int(mask.sum()) < MIN_REGION_PIXELS:
            raise NothingFound(
                f"Nothing in the picture matches “{words}”; describe it another way, or pick "
                "cells of the grid instead."
            )
        return Image.fromarray(np.where(mask, 255, 0).astype(np.uint8), "L")

    def heat(self, image: Image.Image, words: str) -> np.ndarray:
        """How surely each pixel shows ``words``: CLIPSeg's sigmoid heat map at the picture's
        size (float32, 0 to 1)."""
        import torch
        import torch.nn.functional as F

        if not words.strip():
            raise InvalidRequest("Say what to change, e.g. “the sky” or “the dog's hat”.")
        if len(words) > MAX_WORDS:
            raise InvalidRequest(f"Describe what to change in at most {MAX_WORDS} characters.")
        rgb = image.convert("RGB")
        try:
            with torch.inference_mode():
                inputs = self.processor(
                    text=[words], images=[rgb], padding="max_length", return_tensors="pt"
                )
                inputs = {k: v.to(self.model.device) for k, v in inputs.items()}
                inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                logits = self.model(**inputs).logits.float()
                heat = torch.sigmoid(logits.reshape(1, 1, *logits.shape[-2:]))
                heat = F.interpolate(heat, size=(rgb.height, rgb.width), mode="bilinear")[0, 0]
        except torch.OutOfMemoryError as exc:
            raise GenerationError("Out of memory finding the region.", out_of_memory=True) from exc
        except Exception as exc:
            raise GenerationError(f"Finding the region failed: {first_line(exc)}") from exc
        return heat.cpu().numpy()


def load_segmenter(source: str | Path, *, device: Any = "cpu") -> Segmenter:
    """Load CLIPSeg from a local folder or a Hub id (downloaded once), e.g.
    ``CIDAS/clipseg-rd64-refined``. Raises :class:`engine.loading.ModelLoadError`."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    model, processor = load_pretrained(
        "Segmentation model",
        "a CLIPSeg segmentation model",
        source,
        CLIPSegForImageSegmentation,
        CLIPSegProcessor,
        device=device,
    )
    return Segmenter(model, processor, source=str(source))


class Helpers:
    """The captioner, segmenter and depth estimator, loaded on first use, on their own thread.

    The ``async`` methods run there and raise what they raise: InvalidRequest / NothingFound
    (the user's input: tell them), NotAvailable (not configured), ModelLoadError (the
    configured model cannot load), GenerationError (it failed)."""

    def __init__(self, extras: ExtraModels, *, data_dir: Path, device: str = "auto") -> None:
        self.extras = extras
        self.data_dir = Path(data_dir)
        self.device = device
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="easel-helpers"
        )
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()  # the models, for loaded() on other threads

    async def describe(self, image: Image.Image, n: int = DESCRIPTIONS) -> list[str]:
        """Up to ``n`` distinct candidate prompts for ``image``, most likely first."""
        return await self._run(lambda: self._captioner().describe(image, n))

    async def segment(
        self, image: Image.Image, words: str, *, threshold: float = SEGMENT_THRESHOLD
    ) -> Image.Image:
        """A binary mask of ``image``'s size, white where it shows ``words``."""
        return await self._run(lambda: self._segmenter()(image, words, threshold=threshold))

    async def control_map(self, kind: str, image: Image.Image) -> Image.Image:
        """The ``kind`` control map of an upload (canny, depth, lineart, scribble), its size."""
        parsed = parse_control_kind(kind)
        return await self._run(lambda: self._control_map(parsed, image))

    def loaded(self) -> list[str]:
        """Which helpers are in memory ("captioner", "segmenter", "depth"), for health."""
        with self._lock:
            return sorted(self._models)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- the helpers' thread -------------------------------------------------------------------

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.wrap_future(self._executor.submit(fn))

    def _control_map(self, kind: ControlKind, image: Image.Image) -> Image.Image:
        depth = self._depth() if kind is ControlKind.DEPTH else None
        return make_control_map(kind, image, depth_model=depth)

    def _captioner(self) -> Captioner:
        return self._get("captioner", self.extras.captioner, load_captioner, _tiny_captioner)

    def _segmenter(self) -> Segmenter:
        return self._get("segmenter", self.extras.segmenter, load_segmenter, _tiny_segmenter)

    def _depth(self) -> DepthEstimator:
        return self._get("depth", self.extras.depth, load_depth_model, _tiny_depth)

    def _get(
        self,
        name: str,
        source: str,
        load: Callable[..., Any],
        tiny: Callable[[Path], Path],
    ) -> Any:
        with self._lock:
            found = self._models.get(name)
        if found is not None:
            return found
        where = str(tiny(self.data_dir / "models")) if source == "tiny" else source
        model = load(where, device=self.device)
        with self._lock:
            self._models[name] = model
        return model


def _tiny_captioner(directory: Path) -> Path:
    from engine.tiny_extras import build_tiny_captioner

    return build_tiny_captioner(directory)


def _tiny_segmenter(directory: Path) -> Path:
    from engine.tiny_extras import build_tiny_segmenter

    return build_tiny_segmenter(directory)


def _tiny_depth(directory: Path) -> Path:
    from engine.tiny_extras import build_tiny_depth_model

    return build_tiny_depth_model(directory)
