"""Pillow helpers the use cases share: the 2×2 grid and the checks on uploaded start images."""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from bot.core.errors import BadImage

# Formats a start image may have, by the content type Discord reports for the attachment.
UPLOAD_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP"}
MAX_UPLOAD_SIDE = 4096


def compose_grid(images: list[Image.Image]) -> Image.Image:
    """Images side by side, two per row (a 2×2 grid for four), as Midjourney shows them."""
    if len(images) == 1:
        return images[0]
    w, h = images[0].size
    cols = 2
    rows = (len(images) + 1) // 2
    grid = Image.new("RGB", (w * cols, h * rows))
    for i, image in enumerate(images):
        grid.paste(image, ((i % cols) * w, (i // cols) * h))
    return grid


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB"


def check_upload_meta(
    content_type: str | None, size: int, *, max_bytes: int, what: str = "The start image"
) -> None:
    """What we can check before downloading anything: the declared type and size. ``what``
    names the image in messages (a start image, a control image, image 2 of a blend)."""
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind not in UPLOAD_TYPES:
        raise BadImage(
            f"{what} must be PNG, JPEG or WebP; this file is {kind or 'of unknown type'}."
        )
    if size <= 0:
        raise BadImage(f"{what} is empty (0 bytes).")
    if size > max_bytes:
        raise BadImage(f"{what} is {_mib(size)}; the limit is {_mib(max_bytes)}.")


def decode_upload(
    data: bytes,
    content_type: str | None,
    *,
    max_bytes: int,
    max_side: int = MAX_UPLOAD_SIDE,
    what: str = "The start image",
    mode: str = "RGB",
) -> Image.Image:
    """Check and decode an uploaded start image (or ``what`` it is); return it in ``mode``
    (RGBA keeps transparency, as a mask painted on a transparent layer needs). Raises
    BadImage."""
    check_upload_meta(content_type, len(data), max_bytes=max_bytes, what=what)
    expected = UPLOAD_TYPES[(content_type or "").split(";")[0].strip().lower()]
    try:
        with warnings.catch_warnings():
            # Pillow only warns about decompression bombs below twice its limit; refuse them.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format != expected:
                raise BadImage(
                    f"The file says it is {expected} but is {image.format or 'not an image'}."
                )
            width, height = image.size  # from the header: nothing decoded yet
            if width > max_side or height > max_side:
                raise BadImage(f"{what} is {width}×{height}; the limit is {max_side}×{max_side}.")
            image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{what} is too large to decode safely.") from None
    except UnidentifiedImageError:
        raise BadImage(f"{what} is not a picture Easel can read.") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"{what} is damaged or truncated ({exc}).") from None
    return image.convert(mode)


def fit_for_upload(png: bytes, limit: int, stem: str) -> tuple[bytes, str]:
    """The PNG itself when it fits Discord's upload limit, else WebP, then JPEG, at falling
    quality (the limit is ``Interaction.filesize_limit``: 10 MiB without boosts)."""
    if len(png) <= limit:
        return png, f"{stem}.png"
    with Image.open(io.BytesIO(png)) as opened:
        image = opened.convert("RGB")
    for quality in (90, 80, 65, 50):
        for fmt, ext in (("WEBP", "webp"), ("JPEG", "jpg")):
            buffer = io.BytesIO()
            image.save(buffer, format=fmt, quality=quality)
            if buffer.tell() <= limit:
                return buffer.getvalue(), f"{stem}.{ext}"
    while True:  # still too big at the lowest quality: make it smaller until it fits
        image = image.resize((max(8, int(image.width * 0.7)), max(8, int(image.height * 0.7))))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=70)
        if buffer.tell() <= limit or image.width == 8 or image.height == 8:
            return buffer.getvalue(), f"{stem}.jpg"
