"""Inpainting masks, white = change: from 3×3 grid cells, or an upload checked as any upload.
Pillow and NumPy only (no torch), so the bot builds masks before it queues a job.

Every function here returns a binary mask (mode ``L``, 0 or 255) of the picture's size, or
raises :class:`engine.requests.InvalidImage` / :class:`~engine.requests.InvalidRequest` whose
``str()`` tells the user what to change.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from engine.requests import InvalidImage, InvalidRequest, aspect_problem

GRID = 3  # Vary (Region) by cells: a 3×3 grid, cells numbered 1-9 left to right, top to bottom
# The VAE encodes 8×8-pixel blocks, so a blended border narrower than one block would fall
# inside a block the model could not repaint smoothly; wider pictures get 1/32 of their short
# side (16 px at 512, 32 px at 1024).
FEATHER_MIN = 8
FEATHER_SHARE = 32
# Channels of a gray mask differ by at most this much (JPEG noise); more is a colour picture.
GRAY_TOLERANCE = 24
_MASK_MODES = ("1", "L", "LA", "P", "RGB", "RGBA")


def feather_radius(width: int, height: int) -> int:
    """Pixels of blended border the engine gives a mask on a ``width``×``height`` picture."""
    return max(FEATHER_MIN, min(width, height) // FEATHER_SHARE)


def cells_mask(width: int, height: int, cells: Iterable[int]) -> Image.Image:
    """White over the chosen cells of a 3×3 grid (1 top left, 3 top right, 9 bottom right)."""
    chosen = sorted(set(cells))
    if not chosen:
        raise InvalidRequest("Pick at least one cell to change.")
    wrong = [c for c in chosen if not 1 <= c <= GRID * GRID]
    if wrong:
        raise InvalidRequest(
            f"Cells are numbered 1 to {GRID * GRID} (left to right, top to bottom), not {wrong[0]}."
        )
    xs = [round(i * width / GRID) for i in range(GRID + 1)]
    ys = [round(i * height / GRID) for i in range(GRID + 1)]
    mask = np.zeros((height, width), np.uint8)
    for cell in chosen:
        row, column = divmod(cell - 1, GRID)
        mask[ys[row] : ys[row + 1], xs[column] : xs[column + 1]] = 255
    return Image.fromarray(mask, "L")


def check_mask(upload: Image.Image, width: int, height: int) -> Image.Image:
    """An uploaded mask as a binary mask of the picture's size.

    Black and white (or gray: anything at least half white changes), of the picture's size or
    of its shape (scaled to it); transparent parts count as black, as editors that paint on a
    transparent layer save them. Refused: colour pictures, other shapes, an all-black mask.
    """
    if upload.mode not in _MASK_MODES:
        raise InvalidImage(
            f"The mask is a {upload.mode} image; give a black-and-white PNG or JPEG "
            "(white where the picture should change)."
        )
    problem = aspect_problem("mask", upload.size, width, height)
    if problem is not None:
        raise InvalidImage(problem)
    rgba = upload.convert("RGBA")
    rgb = np.asarray(rgba, dtype=np.int16)
    colour = rgb[..., :3]
    spread = colour.max(axis=2) - colour.min(axis=2)
    if spread.max() > GRAY_TOLERANCE:
        raise InvalidImage(
            "The mask has colours; it must be black and white (white where the picture "
            "should change)."
        )
    gray = colour.mean(axis=2) * (rgb[..., 3] / 255.0)
    mask = Image.fromarray(np.clip(np.rint(gray), 0, 255).astype(np.uint8), "L")
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.BILINEAR)
    binary = binarize(mask)
    if not np.asarray(binary).any():
        raise InvalidImage(
            "The mask is all black: nothing would change. Paint white where the picture "
            "should change."
        )
    return binary


def binarize(mask: Image.Image) -> Image.Image:
    """0 or 255 per pixel: at least half white is white."""
    gray = np.asarray(mask.convert("L"))
    return Image.fromarray(np.where(gray >= 128, 255, 0).astype(np.uint8), "L")


def coverage(mask: Image.Image) -> float:
    """The share of the picture a mask changes, 0 to 1."""
    return float((np.asarray(mask.convert("L")) >= 128).mean())
