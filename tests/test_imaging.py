"""The grid and the re-encoding that keeps results under Discord's upload limit."""

from __future__ import annotations

import io

from PIL import Image

from bot.core.imaging import compose_grid, fit_for_upload


def test_grid_is_two_by_two_in_order():
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    grid = compose_grid([Image.new("RGB", (8, 6), c) for c in colours])
    assert grid.size == (16, 12)
    assert [grid.getpixel(p) for p in [(0, 0), (8, 0), (0, 6), (8, 6)]] == colours
    assert compose_grid([Image.new("RGB", (8, 6))] * 2).size == (16, 6)


def test_a_result_over_the_upload_limit_is_re_encoded_to_fit():
    noise = Image.effect_noise((512, 512), 90).convert("RGB")
    buffer = io.BytesIO()
    noise.save(buffer, format="PNG")
    png = buffer.getvalue()
    same, name = fit_for_upload(png, len(png), "easel_1")
    assert same == png and name == "easel_1.png"
    limit = len(png) // 3
    smaller, name = fit_for_upload(png, limit, "easel_1")
    assert len(smaller) <= limit and name.endswith((".webp", ".jpg"))
    with Image.open(io.BytesIO(smaller)) as decoded:
        assert decoded.size == (512, 512)
    tiny, _ = fit_for_upload(png, 4000, "easel_1")  # beyond what quality alone can do
    assert len(tiny) <= 4000
