"""Canvases for outpainting: Zoom Out, Pan and Make Square. Pillow and NumPy only (no torch),
so the bot builds the canvas, records where the picture sits, and queues an INPAINT request with
the canvas as its start image and :attr:`Canvas.mask` as its mask.

Sizing: the canvas has about the model's native pixel count (as ``/imagine`` sizes a picture),
never more than the pixel limit, with sides in multiples of the family's size multiple; the kept
picture is scaled down to fit when needed, never below a quarter of its width, and never up
(but for a Pan or Make Square of a picture whose side is not a multiple of the size multiple:
the kept picture fills the canvas across, a few pixels larger).

Filling the new area before denoising: an inpainting pass at strength below 1 keeps the start
image's broad colours, so the new area must already look like a continuation, not a flat fill.
The picture's border pixels are stretched outward (edge replication, so a sky continues as
sky), blurred so the stretched streaks become soft gradients, and given seeded Gaussian noise so
the sampler finds texture to build on instead of a smear. At strength 1 the fill does not
matter (diffusers then starts the masked area from pure noise).

The result is deterministic: the same picture and parameters give the same canvas, bit for
bit, so a remake rebuilds it from the parent image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from engine.requests import InvalidRequest

ZOOM_MIN, ZOOM_MAX = 1.1, 2.0  # Midjourney's Custom Zoom range
PAN_GROWTH = 1.5  # Pan grows the canvas by half the picture in the panned direction
ASPECT_MAX = 4.0  # the prompt grammar's widest --ar
# Shrinking the kept picture below a quarter of its width would throw most of its detail away
# (zooming out 2× an image upscaled 2× just fits at a model's native size).
MIN_KEPT_SCALE = 0.25
FILL_NOISE = 16.0  # standard deviation of the fill's noise, in 8-bit levels
FILL_SEED = 0
FILL_VERSION = 1  # bump when the fill changes, so old records say which canvas they used
# Suggested strengths: a region is repainted from noise (Midjourney's Vary Region replaces
# it); an outpainted area starts from the fill, which strength 1 would ignore.
REGION_STRENGTH = 1.0
OUTPAINT_STRENGTH = 0.9


class Direction(StrEnum):
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True)
class Placement:
    """Where the kept picture sits on the canvas, and at which size (pixels)."""

    x: int
    y: int
    width: int
    height: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(left, top, right, bottom), as Pillow's ``crop`` takes it."""
        return (self.x, self.y, self.x + self.width, self.y + self.height)


@dataclass(frozen=True)
class Canvas:
    """A picture on a larger canvas: the start image, its mask and the record a remake needs."""

    image: Image.Image  # RGB: the kept picture, scaled, and the filled new area
    mask: Image.Image  # L: white over the new area
    placement: Placement
    scale: float  # kept picture's width on the canvas / its width before
    record: dict[str, Any]  # what was asked, and where the picture went

    def kept_exactly(self, feather: int) -> Placement:
        """The part of the kept picture an inpainting pass with ``feather`` pixels of blended
        border leaves exactly as it is (the placement, less the border on its sides that touch
        new area)."""
        p = self.placement
        canvas_w, canvas_h = self.image.size
        left = feather if p.x > 0 else 0
        top = feather if p.y > 0 else 0
        right = feather if p.x + p.width < canvas_w else 0
        bottom = feather if p.y + p.height < canvas_h else 0
        return Placement(
            p.x + left,
            p.y + top,
            max(0, p.width - left - right),
            max(0, p.height - top - bottom),
        )


def zoom_out(
    image: Image.Image, factor: float, *, native_side: int, max_pixels: int, multiple: int = 8
) -> Canvas:
    """The picture at the centre of a canvas ``factor`` times its size (1.1 to 2.0)."""
    if not (math.isfinite(factor) and ZOOM_MIN <= factor <= ZOOM_MAX):
        raise InvalidRequest(
            f"Zoom Out takes a factor from {ZOOM_MIN} to {ZOOM_MAX}, not {factor:g}."
        )
    w, h = image.size
    size, scale = _canvas_size(
        image, w * factor, h * factor, f"Zooming out {factor:g}×", native_side, max_pixels, multiple
    )
    # The kept picture shrinks with the canvas's rounding too, so the border stays even.
    scale = min(1.0, size[0] / (w * factor), size[1] / (h * factor))
    kept = (min(round(w * scale), size[0] - 2), min(round(h * scale), size[1] - 2))
    at = ((size[0] - kept[0]) // 2, (size[1] - kept[1]) // 2)
    return _canvas(image, size, kept, at, {"kind": "zoom", "factor": factor})


def pan(
    image: Image.Image,
    direction: str | Direction,
    *,
    native_side: int,
    max_pixels: int,
    multiple: int = 8,
) -> Canvas:
    """The picture on a canvas grown by half its size towards ``direction``; it keeps to the
    opposite side."""
    try:
        direction = Direction(str(direction).strip().lower())
    except ValueError:
        names = ", ".join(d.value for d in Direction)
        raise InvalidRequest(f"Pan goes {names}; not {direction!r}.") from None
    w, h = image.size
    sideways = direction in (Direction.LEFT, Direction.RIGHT)
    grown = (w * PAN_GROWTH, h) if sideways else (w, h * PAN_GROWTH)
    size, _ = _canvas_size(
        image, *grown, f"Panning {direction.value}", native_side, max_pixels, multiple
    )
    if sideways:  # the picture fills the canvas's height
        kept = (min(round(w * size[1] / h), size[0] - 2), size[1])
    else:
        kept = (size[0], min(round(h * size[0] / w), size[1] - 2))
    at = {
        Direction.LEFT: (size[0] - kept[0], 0),
        Direction.RIGHT: (0, 0),
        Direction.UP: (0, size[1] - kept[1]),
        Direction.DOWN: (0, 0),
    }[direction]
    return _canvas(image, size, kept, at, {"kind": "pan", "direction": direction.value})


def make_square(
    image: Image.Image, *, native_side: int, max_pixels: int, multiple: int = 8
) -> Canvas:
    """The picture at the centre of a square canvas as wide as its long side."""
    w, h = image.size
    if w == h:
        raise InvalidRequest("The picture is square already.")
    side = max(w, h)
    size, _ = _canvas_size(image, side, side, "Making it square", native_side, max_pixels, multiple)
    long = min(size)  # the rounded canvas is square unless the pixel limit cut a side
    if w > h:
        kept = (long, min(round(h * long / w), size[1] - 2))
    else:
        kept = (min(round(w * long / h), size[0] - 2), long)
    at = ((size[0] - kept[0]) // 2, (size[1] - kept[1]) // 2)
    return _canvas(image, size, kept, at, {"kind": "square"})


def _canvas_size(
    image: Image.Image,
    width: float,
    height: float,
    doing: str,
    native_side: int,
    max_pixels: int,
    multiple: int,
) -> tuple[tuple[int, int], float]:
    """The canvas's pixel size for a canvas of ``width``×``height`` picture pixels, and the
    scale the picture takes on it. Raises InvalidRequest past the aspect or pixel limits."""
    if max(width / height, height / width) > ASPECT_MAX:
        raise InvalidRequest(
            f"{doing} would make the picture wider than {ASPECT_MAX:g}:1 "
            f"({round(width)}×{round(height)})."
        )
    target = min(native_side * native_side, max_pixels)
    scale = min(1.0, math.sqrt(target / (width * height)))
    if scale < MIN_KEPT_SCALE:
        raise InvalidRequest(
            f"{doing} would need a {round(width)}×{round(height)} canvas; within the limit of "
            f"{max_pixels:,} pixels the {image.width}×{image.height} picture would shrink to "
            f"{scale:.0%} of its width and lose its detail. Edit a smaller version (the image "
            "before it was upscaled)."
        )
    cw, ch = _round_to(width * scale, multiple), _round_to(height * scale, multiple)
    aspect = width / height
    while cw * ch > max_pixels and max(cw, ch) > multiple:  # rounding up crossed the limit
        # Take a step off the side that leaves the shape closer to the asked one.
        options = [(w, h) for w, h in ((cw - multiple, ch), (cw, ch - multiple)) if w and h]
        cw, ch = min(options, key=lambda o: abs(math.log(o[0] / o[1] / aspect)))
    return (cw, ch), scale


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, round(x / multiple) * multiple)


def _canvas(
    image: Image.Image,
    size: tuple[int, int],
    kept: tuple[int, int],
    at: tuple[int, int],
    asked: dict[str, Any],
) -> Canvas:
    rgb = image.convert("RGB")
    if rgb.size != kept:
        rgb = rgb.resize(kept, Image.Resampling.LANCZOS)
    picture = np.asarray(rgb)
    x, y = at
    pads = ((y, size[1] - y - kept[1]), (x, size[0] - x - kept[0]), (0, 0))
    stretched = np.pad(picture, pads, mode="edge")
    # Blur over about a quarter of the new area's depth: long streaks become gradients.
    depth = max(pads[0][0], pads[0][1], pads[1][0], pads[1][1])
    radius = max(2.0, depth / 4)
    blurred = np.asarray(Image.fromarray(stretched).filter(ImageFilter.GaussianBlur(radius)))
    noise = np.random.default_rng(FILL_SEED).normal(0.0, FILL_NOISE, blurred.shape)
    filled = np.clip(np.rint(blurred + noise), 0, 255).astype(np.uint8)
    filled[y : y + kept[1], x : x + kept[0]] = picture
    mask = np.full((size[1], size[0]), 255, np.uint8)
    mask[y : y + kept[1], x : x + kept[0]] = 0
    placement = Placement(x, y, kept[0], kept[1])
    record = {
        **asked,
        "canvas": list(size),
        "placement": [placement.x, placement.y, placement.width, placement.height],
        "source_size": list(image.size),
        "fill": FILL_VERSION,
    }
    return Canvas(
        Image.fromarray(filled, "RGB"),
        Image.fromarray(mask, "L"),
        placement,
        kept[0] / image.width,
        record,
    )
