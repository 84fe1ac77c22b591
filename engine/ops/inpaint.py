"""Inpainting: repaint the white part of a mask, keep the rest exactly. Engine thread only.

The pipeline is diffusers' inpainting pipeline of the model's family, made with
``AutoPipelineForInpainting.from_pipe`` over the loaded modules (no second copy of the weights;
a U-Net of 4 input channels is guided by blending the known latents back at every step), or a
dedicated inpainting checkpoint's own pipeline (a U-Net of 9 channels that sees the mask) when
one is configured for the model's family (``EASEL_INPAINT_MODEL`` or the catalogue's
``inpaint``): SD 1.x, 2.x, XL, 3 and FLUX.1 all have one.

Seams: the pipeline repaints the mask grown by ``feather`` pixels, and the original is pasted
back over the result with a weight that is 1 on the mask, falls linearly to 0 across those
``feather`` pixels around it, and is 0 beyond: there the result *is* the original, bit for bit,
so an edit never degrades (through the VAE's round trip) what the user did not select.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from diffusers import AutoPipelineForInpainting
from PIL import Image

from engine.loading import LoadedModel
from engine.ops.masks import binarize, feather_radius
from engine.requests import GenerationRequest, image_identity

if TYPE_CHECKING:
    from engine.pipelines import Runner


def feather_weights(mask: Image.Image, radius: int) -> np.ndarray:
    """Per pixel, how much of the repainted picture to take (float32, 0 to 1): 1 on the mask,
    falling linearly to 0 at ``radius`` pixels from it (Euclidean), 0 beyond."""
    inside = np.asarray(binarize(mask)) > 0
    if radius <= 0:
        return inside.astype(np.float32)
    # Distance of each pixel to the nearest mask pixel (0 on the mask).
    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1.0 - distance / radius, 0.0, 1.0).astype(np.float32)


def repaint_mask(weights: np.ndarray) -> Image.Image:
    """The mask the pipeline repaints: every pixel the paste-back takes any of the result."""
    return Image.fromarray(np.where(weights > 0, 255, 0).astype(np.uint8), "L")


def paste_back(result: Image.Image, original: Image.Image, weights: np.ndarray) -> Image.Image:
    """``result`` where the weight is 1, ``original`` where it is 0 (exactly), and a blend of
    the two, rounded, across the border."""
    new = np.asarray(result.convert("RGB"), dtype=np.float32)
    old = np.asarray(original.convert("RGB"), dtype=np.float32)
    w = weights[..., None]
    blended = np.rint(old + w * (new - old))  # w = 0 gives old exactly, w = 1 new exactly
    return Image.fromarray(np.clip(blended, 0, 255).astype(np.uint8), "RGB")


@dataclass(frozen=True)
class MaskPlan:
    """One picture's mask as the pipeline and the paste-back use it."""

    original: Image.Image
    weights: np.ndarray
    repaint: Image.Image


def plan(request: GenerationRequest, index: int) -> MaskPlan:
    radius = request.feather
    if radius is None:
        radius = feather_radius(request.width, request.height)
    weights = feather_weights(request.mask(index), radius)
    return MaskPlan(request.init_image(index).convert("RGB"), weights, repaint_mask(weights))


class Inpainting:
    """Inpainting on one loaded model: its pipeline, made on first use, or a dedicated
    checkpoint's runner (loaded on first use by ``load_dedicated``, which returns None when
    none is configured for this model)."""

    def __init__(
        self, model: LoadedModel, load_dedicated: Callable[[], Runner | None] | None = None
    ) -> None:
        self.model = model
        self._load_dedicated = load_dedicated
        self._dedicated: Runner | None = None
        self._pipe: Any = None

    def dedicated(self) -> Runner | None:
        """The runner of the dedicated inpainting checkpoint for this model, or None."""
        if self._load_dedicated is not None:
            load, self._load_dedicated = self._load_dedicated, None
            try:
                self._dedicated = load()
            except Exception:
                self._load_dedicated = load  # try again next time; this job fails
                raise
        return self._dedicated

    def pipeline(self) -> Any:
        if self.model.inpainting:  # this model is itself an inpainting checkpoint
            return self.model.txt2img
        if self._pipe is None:
            self._pipe = AutoPipelineForInpainting.from_pipe(self.model.txt2img)
            self._pipe.set_progress_bar_config(disable=True)
        return self._pipe

    def kwargs(self, items: list[tuple[GenerationRequest, int, Any]]) -> tuple[dict, list]:
        """The pipeline's inpainting arguments for ``items`` (request, image index, ...), and
        each item's :class:`MaskPlan` for :func:`finish`."""
        first = items[0][0]
        plans = [plan(r, i) for r, i, _ in items]
        return {
            "image": [p.original for p in plans],
            "mask_image": [p.repaint for p in plans],
            "strength": first.strength,
            "width": first.width,
            "height": first.height,
        }, plans

    def pipeline_name(self) -> str:
        return type(self.pipeline()).__name__


def finish(images: list[Image.Image], plans: list[MaskPlan]) -> list[Image.Image]:
    pairs = zip(images, plans, strict=True)
    return [paste_back(image, p.original, p.weights) for image, p in pairs]


def record(request: GenerationRequest, pipeline: str) -> dict[str, Any]:
    """What remaking an inpainting job needs beyond the start image and the prompt."""
    feather = request.feather
    if feather is None:
        feather = feather_radius(request.width, request.height)
    return {
        "inpaint_pipeline": pipeline,
        "masks": [image_identity(m) for m in request.masks],
        "feather": feather,
        "strength": request.strength,
        "paste_back": "linear feather, original kept exactly beyond it",
    }
