"""Control maps: an uploaded picture turned into what a ControlNet was trained to follow.

- ``canny``: OpenCV's Canny edge detector (white edges on black), the preprocessor the canny
  ControlNets were trained with; thresholds 100/200 as in diffusers' ControlNet guide.
- ``depth``: a transformers depth-estimation model (Depth Anything, DPT/MiDaS ...) loaded with
  :func:`load_depth_model`; relative depth scaled to 0-255 per image, near = white, as the depth
  ControlNets expect.
- ``lineart`` and ``scribble``: not the learned line-art networks of ControlNet 1.1 (those need
  weights no installed package ships), but the difference-of-Gaussians line extraction of its
  ``scribble_xdog`` preprocessor, in OpenCV: a pixel darker than its blurred surroundings is a
  line. ``lineart`` keeps the strength of each line (soft white lines on black); ``scribble``
  keeps only lines above the xDoG threshold, as solid strokes.
- ``pose``: not available. The maintained detector that installs with Easel's dependencies is
  transformers' ViTPose, but its image processor needs SciPy (its affine warp and heatmap
  smoothing), which Easel does not install; controlnet_aux's OpenPose/DWPose detectors are a
  further dependency and fetch their weights from the Hub at first use. A pose request gets
  :data:`POSE_UNAVAILABLE`; a ready-made pose map can still be uploaded as a raw control image.

All maps come back as RGB images of the upload's size; :func:`prepare_control_image` fits a map
(made here or uploaded ready-made) to the size being generated, refusing a different shape.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from engine.requests import (
    ControlKind,
    GenerationError,
    InvalidImage,
    InvalidRequest,
    NotAvailable,
    aspect_problem,
    first_line,
)

log = logging.getLogger(__name__)

__all__ = ["ControlKind", "make_control_map", "parse_control_kind", "prepare_control_image"]

CANNY_LOW, CANNY_HIGH = 100, 200  # diffusers' ControlNet guide (and the original ControlNet demo)
# ControlNet 1.1's scribble_xdog: Gaussian blurs of sigma 0.5 and 5, lines where the difference
# exceeds half the threshold 32 (its default).
XDOG_FINE_SIGMA, XDOG_COARSE_SIGMA, XDOG_THRESHOLD = 0.5, 5.0, 32
LINEART_GAIN = 4.0  # a line 64 levels darker than its surroundings becomes full white


def parse_control_kind(name: str) -> ControlKind:
    """``name`` as a control kind, or an :class:`InvalidRequest` listing the kinds there are."""
    try:
        return ControlKind(name.strip().lower())
    except ValueError:
        kinds = ", ".join(k.value for k in ControlKind)
        raise InvalidRequest(f"Unknown control type {name!r}; choose one of {kinds}.") from None


def make_control_map(
    kind: str | ControlKind, image: Image.Image, *, depth_model: DepthEstimator | None = None
) -> Image.Image:
    """The ``kind`` control map of ``image``, an RGB image of the same size."""
    kind = parse_control_kind(kind)
    if kind is ControlKind.CANNY:
        return canny_map(image)
    if kind is ControlKind.LINEART:
        return lineart_map(image)
    if kind is ControlKind.SCRIBBLE:
        return scribble_map(image)
    if kind is ControlKind.DEPTH:
        if depth_model is None:
            raise NotAvailable(
                "Depth control needs a depth-estimation model, and none is configured "
                "(EASEL_DEPTH_MODEL)."
            )
        return depth_model(image)
    raise NotAvailable(POSE_UNAVAILABLE)


def canny_map(image: Image.Image, *, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """White Canny edges on black. OpenCV takes the strongest gradient over the three colour
    channels, so an edge between two colours of equal brightness is still an edge."""
    edges = cv2.Canny(np.asarray(image.convert("RGB")), low, high)
    return _gray_to_rgb(edges)


def _darkening(image: Image.Image) -> np.ndarray:
    """How much darker each pixel is than its blurred surroundings (xDoG), least over channels."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    fine = cv2.GaussianBlur(rgb, (0, 0), XDOG_FINE_SIGMA)
    coarse = cv2.GaussianBlur(rgb, (0, 0), XDOG_COARSE_SIGMA)
    return np.min(coarse - fine, axis=2)


def lineart_map(image: Image.Image) -> Image.Image:
    """Soft white lines on black where the picture has dark lines or edges' dark sides."""
    lines = np.clip(_darkening(image) * LINEART_GAIN, 0, 255).astype(np.uint8)
    return _gray_to_rgb(lines)


def scribble_map(image: Image.Image, *, threshold: int = XDOG_THRESHOLD) -> Image.Image:
    """Solid white strokes on black: the lines whose darkening exceeds the xDoG threshold."""
    strokes = np.where(2 * _darkening(image) > threshold, 255, 0).astype(np.uint8)
    return _gray_to_rgb(strokes)


POSE_UNAVAILABLE = (
    "Pose control is not available: Easel has no body-pose detector. Upload a ready-made "
    "OpenPose map with --raw-control instead."
)


class DepthEstimator:
    """A transformers depth-estimation model and its image processor. Not thread-safe."""

    def __init__(self, model: Any, processor: Any, *, source: str) -> None:
        self.model = model
        self.processor = processor
        self.source = source
        config = model.config
        # Relative models (Depth Anything, DPT/MiDaS) give inverse depth, near = large, which
        # is what depth ControlNets were trained on; metric ones give distance and are flipped.
        self.metric = getattr(config, "depth_estimation_type", "relative") == "metric" or (
            config.model_type in ("zoedepth", "depth_pro")
        )

    def __call__(self, image: Image.Image) -> Image.Image:
        import torch
        import torch.nn.functional as F

        rgb = image.convert("RGB")
        try:
            with torch.inference_mode():
                inputs = self.processor(images=rgb, return_tensors="pt")
                pixels = inputs["pixel_values"].to(self.model.device, self.model.dtype)
                depth = self.model(pixel_values=pixels).predicted_depth
                depth = F.interpolate(
                    depth[:1, None].float(), size=(rgb.height, rgb.width), mode="bicubic"
                )[0, 0]
        except torch.OutOfMemoryError as exc:
            raise GenerationError("Out of memory estimating depth.", out_of_memory=True) from exc
        except Exception as exc:
            raise GenerationError(f"Depth estimation failed: {first_line(exc)}") from exc
        depth = depth.cpu().numpy()
        if self.metric:
            depth = -depth
        low, high = float(depth.min()), float(depth.max())
        scaled = (depth - low) / (high - low) if high > low else np.zeros_like(depth)
        return _gray_to_rgb(np.rint(scaled * 255).astype(np.uint8))


def load_depth_model(source: str | Path, *, device: Any = "cpu") -> DepthEstimator:
    """Load a depth-estimation model from a local folder or a Hub id (downloaded once), e.g.
    ``depth-anything/Depth-Anything-V2-Small-hf``.

    Raises :class:`engine.loading.ModelLoadError` naming the source and the problem.
    """
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    model, processor = load_pretrained(
        "Depth model",
        "a depth-estimation model",
        source,
        AutoModelForDepthEstimation,
        AutoImageProcessor,
        device=device,
    )
    return DepthEstimator(model, processor, source=str(source))


def load_pretrained(
    what: str, kind: str, source: str | Path, model_class: Any, processor_class: Any, *, device: Any
) -> tuple[Any, Any]:
    """A transformers model and its processor from a local folder or a Hub id, in eval mode on
    ``device`` (a torch device or ``"auto"``), half precision on CUDA.

    Raises :class:`engine.loading.ModelLoadError`: "{what} {source}: ..." naming the problem.
    """
    import os

    import torch

    from engine.loading import ModelLoadError, pick_device

    path = Path(source).expanduser()
    looks_local = path.is_absolute() or str(source).startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise ModelLoadError(f"{what} {source}: no such folder.")
    torch_device = pick_device(device) if isinstance(device, str) else device
    dtype = torch.float16 if torch_device.type == "cuda" else torch.float32
    where = str(path if looks_local else source)
    try:
        model, report = model_class.from_pretrained(where, dtype=dtype, output_loading_info=True)
        # transformers fills weights a checkpoint lacks with random ones and only warns: a
        # folder holding another kind of model would "load" as noise.
        if report["missing_keys"]:
            raise ModelLoadError(
                f"{what} {source}: not {kind}; {len(report['missing_keys'])} of its weights "
                f"are missing (its configuration names {model.config.model_type!r})."
            )
        processor = processor_class.from_pretrained(where)
    except ModelLoadError:
        raise
    except Exception as exc:  # transformers raises many kinds for a missing or wrong model
        offline = "" if looks_local or not os.environ.get("HF_HUB_OFFLINE") else " (offline)"
        raise ModelLoadError(
            f"{what} {source}{offline}: cannot load {kind} ({first_line(exc)})."
        ) from exc
    model.to(torch_device).eval()
    log.info("%s %s on %s.", what, source, torch_device)
    return model, processor


def prepare_control_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """A control map (made here or uploaded ready-made) at the generated size.

    A map of a different shape would stretch the picture it steers, so beyond the rounding of
    sizes to multiples of 8 it is refused with an :class:`InvalidImage`.
    """
    problem = aspect_problem("control image", image.size, width, height)
    if problem is not None:
        raise InvalidImage(problem)
    rgb = image.convert("RGB")
    if rgb.size == (width, height):
        return rgb
    return rgb.resize((width, height), Image.Resampling.LANCZOS)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
