"""Upscale (Subtle): tiny ESRGAN-family files loaded by spandrel through engine.upscalers."""

from __future__ import annotations

import itertools
import pickle

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from engine.loading import ModelLoadError
from engine.requests import GenerationError
from engine.tiny_extras import build_tiny_upscaler
from engine.upscalers import MIN_TILE, _tiling, load_upscaler


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("upscalers")
    return {
        "compact4": build_tiny_upscaler(folder, scale=4),
        "compact2": build_tiny_upscaler(folder, scale=2),
        "esrgan4": build_tiny_upscaler(folder, scale=4, architecture="esrgan"),
        "esrgan4_pth": build_tiny_upscaler(folder, scale=4, architecture="esrgan", suffix=".pth"),
        "folder": folder,
    }


def picture(width: int = 80, height: int = 72) -> Image.Image:
    """Gradients and a red block: structure a misplaced or flipped tile would show."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 3) % 256, (y * 3) % 256, ((x + y) * 2) % 256], axis=-1)
    rgb[20:40, 30:60] = (250, 20, 20)
    return Image.fromarray(rgb.astype(np.uint8))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


@pytest.mark.parametrize("model", ["compact4", "compact2"])
@pytest.mark.parametrize("factor", [2, 4])
def test_upscale_gives_exactly_factor_times_the_size(files, model, factor):
    upscaler = load_upscaler(files[model])
    image = picture(37, 23)  # odd sides, smaller than a tile in one direction only with tile=32
    for tile in (None, 32):
        out = upscaler.upscale(image, factor, tile=tile, overlap=8)
        assert out.size == (37 * factor, 23 * factor)
        assert out.mode == "RGB"


def test_upscale_keeps_the_picture_tile_by_tile(files):
    # The tiny compact model adds a little to a nearest-neighbour enlargement; brought back down,
    # the result must be the input again wherever each tile landed.
    upscaler = load_upscaler(files["compact4"])
    image = picture()
    for factor in (2, 4):
        out = upscaler.upscale(image, factor, tile=32, overlap=8)
        back = pixels(out.resize(image.size, Image.Resampling.BOX))
        assert np.abs(back - pixels(image)).mean() < 3
        flipped = pixels(out.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize(image.size))
        assert np.abs(flipped - pixels(image)).mean() > 30  # the check can tell a wrong placement


def test_tiled_and_untiled_agree_at_the_seams(files):
    # The random RRDB network sees ~20 pixels around each pixel, so a tile cut without context
    # shows; feathered overlaps must hide it.
    upscaler = load_upscaler(files["esrgan4"])
    image = picture()
    whole = pixels(upscaler.upscale(image, 4, tile=None))
    tiled = pixels(upscaler.upscale(image, 4, tile=32, overlap=8))
    assert np.abs(whole - tiled).max() <= 4
    assert np.abs(whole - tiled).mean() < 0.2
    butted = pixels(upscaler.upscale(image, 4, tile=32, overlap=0))
    assert np.abs(whole - butted).max() > 12  # without overlap the seams are visible


def test_upscale_is_deterministic_and_pth_equals_safetensors(files):
    image = picture()
    first = load_upscaler(files["esrgan4"]).upscale(image, 2, tile=32, overlap=8)
    again = load_upscaler(files["esrgan4"]).upscale(image, 2, tile=32, overlap=8)
    from_pth = load_upscaler(files["esrgan4_pth"]).upscale(image, 2, tile=32, overlap=8)
    assert first.tobytes() == again.tobytes() == from_pth.tobytes()


def test_progress_counts_every_tile_and_a_cancel_stops_between_tiles(files):
    upscaler = load_upscaler(files["compact2"])
    image = picture(80, 72)  # a 2× model asked for ×4 runs twice: on 80×72, then 160×144
    seen: list[tuple[int, int]] = []
    upscaler.upscale(image, 4, tile=32, overlap=8, on_tile=lambda d, t: seen.append((d, t)))
    total = seen[-1][1]
    assert [d for d, _ in seen] == list(range(1, total + 1)) and total == 3 * 3 + 7 * 6

    class Cancelled(Exception):
        pass

    def cancel(done: int, total: int) -> None:
        if done == 2:
            raise Cancelled

    with pytest.raises(Cancelled):  # not wrapped as an upscaling failure
        upscaler.upscale(image, 2, tile=32, overlap=8, on_tile=cancel)


def test_upscale_keeps_transparency(files):
    image = picture(40, 24).convert("RGBA")
    alpha = np.zeros((24, 40), np.uint8)
    alpha[:, 20:] = 255
    image.putalpha(Image.fromarray(alpha))
    out = load_upscaler(files["compact2"]).upscale(image, 2, tile=32, overlap=8)
    assert out.mode == "RGBA" and out.size == (80, 48)
    out_alpha = np.asarray(out.getchannel("A"))
    assert out_alpha[:, :36].max() < 16 and out_alpha[:, 44:].min() > 240


def test_upscaler_reports_what_it_loaded(files):
    upscaler = load_upscaler(files["esrgan4"])
    assert (upscaler.info.architecture, upscaler.scale) == ("ESRGAN", 4)
    assert upscaler.info.name == files["esrgan4"].name
    assert upscaler.info.identity.startswith("sha256:")
    assert (upscaler.info.device, upscaler.info.dtype) == ("cpu", "float32")


class Evil:
    def __reduce__(self):
        # exec, not print: Ray (started by other tests in the session) replaces builtins.print.
        return (exec, ("print('this must never run')",))


def bad_files(folder):
    folder.mkdir(exist_ok=True)
    text = folder / "notes.pth"
    text.write_text("not weights")
    wrong_suffix = folder / "model.bin"
    wrong_suffix.write_bytes(b"\0" * 16)
    unrelated = folder / "unrelated.safetensors"
    save_file({"layer.weight": torch.zeros(2, 2)}, unrelated)
    evil = folder / "evil.pth"
    evil.write_bytes(pickle.dumps({"model.0.weight": Evil()}))
    restorer = folder / "restorer.safetensors"
    from spandrel.architectures.Compact import Compact

    save_file(Compact(num_feat=4, num_conv=1, upscale=1).state_dict(), restorer)
    return [
        (folder / "missing.safetensors", "missing.safetensors: no such file"),
        (wrong_suffix, "model.bin: expected a .pth or .safetensors file"),
        (text, "notes.pth: cannot read the weights"),
        (unrelated, "unrelated.safetensors: its weights match no super-resolution architecture"),
        (evil, "evil.pth: cannot read the weights (Global 'builtins.exec' is forbidden)"),
        (restorer, "restorer.safetensors: a 1× RealESRGAN Compact restoration model"),
    ]


def test_bad_model_files_get_a_specific_one_line_message(files, capsys):
    for path, message in bad_files(files["folder"] / "bad"):
        with pytest.raises(ModelLoadError) as caught:
            load_upscaler(path)
        assert message in str(caught.value)
        assert "\n" not in str(caught.value)
    assert "must never run" not in capsys.readouterr().out


def test_bad_upscale_requests_are_refused(files):
    upscaler = load_upscaler(files["compact2"])
    image = picture(40, 40)
    with pytest.raises(GenerationError, match="factor must be 2 or 4, not 3"):
        upscaler.upscale(image, 3)
    with pytest.raises(GenerationError, match="at least 32 pixels"):
        upscaler.upscale(image, 2, tile=16)
    with pytest.raises(GenerationError, match="overlap of 0 up to half a tile"):
        upscaler.upscale(image, 2, tile=64, overlap=40)


@settings(max_examples=300, deadline=None)
@given(
    length=st.integers(1, 5000),
    tile=st.integers(MIN_TILE, 1024),
    overlap_share=st.floats(0, 0.5),
)
def test_tiles_are_bounded_and_cover_the_image_with_overlap(length, tile, overlap_share):
    # The memory bound: however large the image, no tile is larger than asked for.
    overlap = int(tile * overlap_share)
    starts, size = _tiling(length, tile, overlap)
    assert size <= tile and starts[0] == 0 and starts[-1] + size == length
    for left, right in itertools.pairwise(starts):
        assert left + size - right >= overlap
