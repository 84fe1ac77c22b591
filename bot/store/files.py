"""Image bytes on disk under the data directory, named by content hash, never by user input.

Layout: ``images/ab/<sha256>.png`` for results and ``uploads/ab/<sha256>.png`` for start images
(re-encoded to PNG after validation). The database stores the relative path.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from pathlib import Path

from PIL import Image, PngImagePlugin


class ImageFiles:
    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir).resolve()

    def save_png(
        self, image: Image.Image, parameters: str | None = None, *, folder: str = "images"
    ):
        """Encode ``image`` as PNG (with the ``parameters`` text chunk) and store it.

        Returns ``(relative path, sha256, bytes)``. Encoding is deterministic, so the same pixels
        and parameters give the same file.
        """
        info = PngImagePlugin.PngInfo()
        if parameters is not None:
            info.add_text("parameters", parameters)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", pnginfo=info)
        data = buffer.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        relative = f"{folder}/{digest[:2]}/{digest}.png"
        path = self.root / relative
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")  # unique: writers may race
            tmp.write_bytes(data)
            tmp.replace(path)  # atomic: a crash never leaves half a file under the final name
        return relative, digest, data

    def path(self, relative: str) -> Path:
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root):  # paths come from our own rows, but be sure
            raise ValueError(f"{relative!r} is outside the data directory")
        return path

    def read(self, relative: str) -> bytes:
        return self.path(relative).read_bytes()

    def open(self, relative: str) -> Image.Image:
        with Image.open(self.path(relative)) as image:
            image.load()
            return image

    def delete(self, relative: str) -> bool:
        try:
            self.path(relative).unlink()
        except FileNotFoundError:
            return False
        return True
