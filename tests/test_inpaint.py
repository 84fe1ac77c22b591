"""Inpainting through the engine on the tiny models (real diffusers inpainting pipelines, the
real worker thread): Vary Region's masks, Zoom Out, Pan and Make Square canvases, the exact
paste-back, determinism and batching, a dedicated inpainting checkpoint, and bad input."""

from __future__ import annotations

import asyncio
import re

import numpy as np
import pytest
from PIL import Image

from engine.catalogue import ExtraModels
from engine.loading import load_model
from engine.ops.inpaint import feather_weights
from engine.ops.masks import cells_mask, check_mask, feather_radius
from engine.ops.outpaint import OUTPAINT_STRENGTH, Canvas, make_square, pan, zoom_out
from engine.pool import ModelPool
from engine.requests import (
    GenerationError,
    GenerationRequest,
    InvalidImage,
    InvalidRequest,
    Operation,
    image_identity,
)
from engine.worker import Engine
from tests.engine_ops_support import TIMEOUT, assert_batched_equals_alone, png, started
from tests.engine_ops_support import request as base_request

SIZE = 64


def picture(width: int = SIZE, height: int = SIZE) -> Image.Image:
    """Gradients and a block: any pixel moved or changed shows."""
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([(x * 4) % 256, (y * 4) % 256, ((x + y) * 2) % 256], axis=-1)
    rgb[height // 4 : height // 2, width // 3 : width // 2] = (250, 30, 30)
    return Image.fromarray(rgb.astype(np.uint8))


def edit(image: Image.Image, mask: Image.Image, seeds=(3, 4), **kw) -> GenerationRequest:
    values = dict(
        operation=Operation.INPAINT,
        prompt="a red kite",
        width=image.width,
        height=image.height,
        steps=4,
        sampler="euler_a",
        strength=1.0,
        init_images=(image,),
        masks=(mask,),
    )
    return base_request("", seeds, **{**values, **kw})


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def pool(model_dir, tiny_model):
    return ModelPool.of(tiny_model, data_dir=model_dir, extras=ExtraModels.tiny())


@pytest.fixture(scope="module")
def engine(pool):
    engine = started(pool)
    yield engine
    engine.stop()


def run(engine: Engine, request: GenerationRequest):
    return engine.submit(request).result(TIMEOUT)


def test_outside_the_mask_is_kept_exactly_and_inside_it_changes(engine, tiny_model):
    image = picture()
    mask = cells_mask(SIZE, SIZE, [5])  # the middle cell
    result = run(engine, edit(image, mask))
    weights = feather_weights(mask, feather_radius(SIZE, SIZE))
    outside, inside = weights == 0, weights == 1
    assert outside.sum() > SIZE * SIZE // 4 and inside.sum() > 0
    for edited in result.images:
        assert edited.size == image.size
        assert np.array_equal(pixels(edited)[outside], pixels(image)[outside])
        assert np.abs(pixels(edited)[inside] - pixels(image)[inside]).mean() > 10
    assert png(result.images[0]) != png(result.images[1])  # two seeds, two edits
    # The inpainting pipeline runs over the model's own modules.
    runner = engine.pool.acquire("")[2]
    assert runner.companions.inpainting.pipeline().unet is tiny_model.txt2img.unet
    repro = result.repro
    assert repro["operation"] == "inpaint"
    assert repro["inpaint_pipeline"] == "StableDiffusionInpaintPipeline"
    assert repro["masks"] == [image_identity(mask)]
    assert repro["feather"] == feather_radius(SIZE, SIZE) and repro["strength"] == 1.0


def test_same_edit_twice_is_byte_identical_and_batched_equals_alone(pool, engine):
    image, mask = picture(), cells_mask(SIZE, SIZE, [1, 2, 4])
    requests = [
        edit(image, mask, seeds=(5,), owner="a"),
        edit(image, mask, seeds=(6, 7), owner="b", prompt="a green door"),
    ]
    assert_batched_equals_alone(pool, engine, requests)


def test_edits_of_other_masks_run_apart_and_record_their_own_mask(pool):
    image, left, right = picture(), cells_mask(SIZE, SIZE, [1]), cells_mask(SIZE, SIZE, [3])
    engine = Engine(pool, preview_interval=0, batch_max_images=8)
    jobs = [edit(image, left, seeds=(1,), owner="a"), edit(image, right, seeds=(1,), owner="b")]
    handles = [engine.submit(job) for job in jobs]
    engine.start()
    try:
        results = [h.result(TIMEOUT) for h in handles]
    finally:
        engine.stop()
    assert [r.batch_images for r in results] == [1, 1]
    assert [r.repro["masks"] for r in results] == [[image_identity(left)], [image_identity(right)]]


async def test_an_edit_sends_progress_and_previews(pool):
    engine = Engine(pool, preview_interval=1e-6)
    engine.start()
    seen = []
    try:
        handle = engine.submit(
            edit(picture(), cells_mask(SIZE, SIZE, [9]), steps=5),
            on_progress=seen.append,
            loop=asyncio.get_running_loop(),
        )
        await handle.wait()
        await asyncio.sleep(0)
    finally:
        engine.stop()
    assert [p.step for p in seen][-1] == 5
    assert any(p.preview is not None for p in seen)


def kept_part(canvas: Canvas, image: Image.Image) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """The box of the canvas an edit must leave exactly, and what the scaled picture has there."""
    placement = canvas.placement
    scaled = image.resize((placement.width, placement.height), Image.Resampling.LANCZOS)
    if scaled.size == image.size:
        scaled = image
    exact = canvas.kept_exactly(feather_radius(*canvas.image.size))
    inner = (exact.x - placement.x, exact.y - placement.y)
    crop = scaled.crop((*inner, inner[0] + exact.width, inner[1] + exact.height))
    return exact.box, pixels(crop)


@pytest.mark.parametrize("factor", [2.0, 1.5])
def test_zoom_out_keeps_the_picture_unchanged_at_the_centre(engine, factor):
    image = picture(SIZE, 48)
    canvas = zoom_out(image, factor, native_side=SIZE, max_pixels=SIZE * SIZE)
    p = canvas.placement
    width, height = canvas.image.size
    assert width % 8 == 0 and height % 8 == 0 and width * height <= SIZE * SIZE
    # Centred, and smaller by the factor (to within the canvas's rounding to 8 pixels).
    assert abs(p.x - (width - p.x - p.width)) <= 1 and abs(p.y - (height - p.y - p.height)) <= 1
    assert p.width == pytest.approx(width / factor, abs=2)
    result = run(engine, edit(canvas.image, canvas.mask, strength=OUTPAINT_STRENGTH))
    box, expected = kept_part(canvas, image)
    for zoomed in result.images:
        assert zoomed.size == canvas.image.size
        assert np.array_equal(pixels(zoomed.crop(box)), expected)
        border = np.asarray(canvas.mask) > 0
        assert np.abs(pixels(zoomed)[border] - pixels(canvas.image)[border]).mean() > 5


@pytest.mark.parametrize("direction", ["left", "right", "up", "down"])
def test_pan_keeps_the_picture_on_the_side_opposite_the_direction(direction):
    image = picture(128, 96)
    canvas = pan(image, direction, native_side=128, max_pixels=128 * 128)
    p, (width, height) = canvas.placement, canvas.image.size
    assert width % 8 == 0 and height % 8 == 0 and width * height <= 128 * 128
    if direction in ("left", "right"):
        assert width / height == pytest.approx(1.5 * 128 / 96, rel=0.05)
        assert (p.y, p.height) == (0, height)
        assert (p.x + p.width == width) if direction == "left" else (p.x == 0)
    else:
        assert height / width == pytest.approx(1.5 * 96 / 128, rel=0.05)
        assert (p.x, p.width) == (0, width)
        assert (p.y + p.height == height) if direction == "up" else (p.y == 0)
    mask = np.asarray(canvas.mask)
    assert not mask[p.y : p.y + p.height, p.x : p.x + p.width].any()  # the picture is kept
    assert (mask > 0).sum() == width * height - p.width * p.height  # the rest is new
    assert canvas.record["direction"] == direction


def test_a_pan_through_the_engine_keeps_the_picture_exactly(engine):
    image = picture(SIZE, 48)
    canvas = pan(image, "left", native_side=SIZE, max_pixels=SIZE * SIZE)
    result = run(engine, edit(canvas.image, canvas.mask, seeds=(9,), strength=0.9))
    box, expected = kept_part(canvas, image)
    assert box[2] == canvas.image.width  # the picture keeps to the right edge
    assert np.array_equal(pixels(result.images[0].crop(box)), expected)


def test_make_square_is_square_and_contains_the_picture(engine):
    image = picture(SIZE, 40)
    canvas = make_square(image, native_side=SIZE, max_pixels=SIZE * SIZE)
    assert canvas.image.width == canvas.image.height
    assert canvas.placement.width == canvas.image.width  # the long side fills the square
    result = run(engine, edit(canvas.image, canvas.mask, seeds=(2,), strength=0.9))
    box, expected = kept_part(canvas, image)
    assert result.images[0].width == result.images[0].height
    assert np.array_equal(pixels(result.images[0].crop(box)), expected)


def test_the_canvas_is_the_same_every_time_and_keeps_the_picture_at_full_size():
    image = picture(SIZE, 48)
    first = zoom_out(image, 1.5, native_side=128, max_pixels=128 * 128)
    again = zoom_out(image, 1.5, native_side=128, max_pixels=128 * 128)
    assert png(first.image) == png(again.image) and png(first.mask) == png(again.mask)
    # A small picture on a large model is never enlarged: it stays pixel for pixel.
    assert first.scale == 1.0
    assert np.array_equal(pixels(first.image.crop(first.placement.box)), pixels(image))
    # The new area is filled from the picture's edges, not left flat.
    new = np.asarray(first.mask) > 0
    assert pixels(first.image)[new].std() > 5


def test_canvases_for_sd3_and_flux_are_in_multiples_of_16_within_the_limit():
    big = picture(1024, 768)
    for canvas, shrunk in (
        (zoom_out(big, 1.5, native_side=1024, max_pixels=1024 * 1024, multiple=16), True),
        (pan(big, "up", native_side=1024, max_pixels=1024 * 1024, multiple=16), True),
        (make_square(big, native_side=1024, max_pixels=1024 * 1024, multiple=16), False),
    ):
        width, height = canvas.image.size
        assert width % 16 == 0 and height % 16 == 0 and width * height <= 1024 * 1024
        assert width * height > 0.9 * 1024 * 1024  # near the native pixel count
        assert (canvas.scale < 1) is shrunk  # shrunk to fit only where the canvas outgrew it


def test_a_dedicated_inpainting_checkpoint_is_used_when_configured(model_dir):
    model = load_model("tiny", data_dir=model_dir)
    pool = ModelPool.of(model, data_dir=model_dir, extras=ExtraModels.tiny(inpaint="tiny"))
    engine = started(pool)
    image, mask = picture(), cells_mask(SIZE, SIZE, [3, 6])
    try:
        result = run(engine, edit(image, mask, seeds=(1,)))
        runner = pool.acquire("")[2]
        dedicated = runner.companions.inpainting.dedicated()
    finally:
        engine.stop()
    assert dedicated is not None and dedicated.model.txt2img.unet.config.in_channels == 9
    assert result.repro["inpaint_model"].endswith("tiny-inpaint")
    assert result.repro["inpaint_model_identity"].startswith("sha256:")
    assert result.repro["model"] == "tiny"
    outside = feather_weights(mask, feather_radius(SIZE, SIZE)) == 0
    assert np.array_equal(pixels(result.images[0])[outside], pixels(image)[outside])


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_every_family_inpaints_and_keeps_the_rest(model_dir, name):
    pool = ModelPool.of(load_model(name, data_dir=model_dir), data_dir=model_dir)
    engine = started(pool)
    image, mask = picture(), cells_mask(SIZE, SIZE, [2, 5])
    try:
        result = run(engine, edit(image, mask, seeds=(1,), sampler="euler", steps=3))
    finally:
        engine.stop()
    outside = feather_weights(mask, feather_radius(SIZE, SIZE)) == 0
    assert np.array_equal(pixels(result.images[0])[outside], pixels(image)[outside])
    assert "Inpaint" in result.repro["inpaint_pipeline"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"masks": (Image.new("L", (32, 32), 255),)}, "The mask is 32×32; the picture is 64×64"),
        ({"masks": (Image.new("RGB", (64, 64)),)}, "grayscale image (mode L), not mode RGB"),
        ({"masks": ()}, "Inpainting needs a mask"),
        ({"init_images": (picture(48, 48),)}, "The image to edit is 48×48"),
        ({"feather": 999}, "feathering goes from 0 to 256 pixels"),
        ({"strength": None}, "strength above 0"),
    ],
)
def test_bad_edit_requests_are_refused_before_queueing(pool, engine, change, message):
    request = edit(picture(), cells_mask(SIZE, SIZE, [1]), **change)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        pool.check(request)
    with pytest.raises(GenerationError, match=re.escape(message)):
        engine.submit(request)
    assert engine.snapshot() == []


def test_uploaded_masks_are_checked_like_any_upload():
    # White strokes on a transparent layer, half the picture's size: transparent is black.
    upload = Image.new("RGBA", (32, 24), (255, 255, 255, 0))
    upload.paste((255, 255, 255, 255), (8, 8, 16, 16))
    mask = check_mask(upload, 64, 48)
    assert mask.size == (64, 48) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) == {0, 255}
    assert np.asarray(mask)[16:32, 16:32].all() and not np.asarray(mask)[:8].any()
    with pytest.raises(InvalidImage, match="all black"):
        check_mask(Image.new("L", (64, 48)), 64, 48)
    with pytest.raises(InvalidImage, match="has colours"):
        check_mask(Image.new("RGB", (64, 48), (255, 0, 0)), 64, 48)
    with pytest.raises(InvalidImage, match=r"mask is 64×64 \(aspect 1.00\)"):
        check_mask(Image.new("L", (64, 64), 255), 64, 48)
    with pytest.raises(InvalidImage, match="a CMYK image"):
        check_mask(Image.new("CMYK", (64, 48)), 64, 48)


def test_cells_are_numbered_left_to_right_top_to_bottom():
    mask = np.asarray(cells_mask(90, 60, [1, 6]))
    assert mask[:20, :30].all() and mask[20:40, 60:].all()
    assert mask.sum() == 2 * 30 * 20 * 255
    with pytest.raises(InvalidRequest, match="Cells are numbered 1 to 9"):
        cells_mask(90, 60, [0, 10])
    with pytest.raises(InvalidRequest, match="at least one cell"):
        cells_mask(90, 60, [])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda i: zoom_out(i, 2.5, native_side=64, max_pixels=4096), "from 1.1 to 2.0, not 2.5"),
        (lambda i: zoom_out(i, 1.0, native_side=64, max_pixels=4096), "from 1.1 to 2.0, not 1"),
        # A 256-pixel picture zoomed out 2× into 64×64 pixels would shrink to an eighth.
        (
            lambda i: zoom_out(i.resize((256, 256)), 2.0, native_side=64, max_pixels=4096),
            "within the limit of 4,096 pixels the 256×256 picture would shrink to 12%",
        ),
        (lambda i: pan(i, "sideways", native_side=64, max_pixels=4096), "Pan goes left, right"),
        (
            lambda i: pan(i.resize((192, 64)), "right", native_side=64, max_pixels=4096),
            "wider than 4:1",
        ),
        (lambda i: make_square(i, native_side=64, max_pixels=4096), "square already"),
    ],
)
def test_bad_canvases_get_a_specific_message(make, message):
    with pytest.raises(InvalidRequest, match=message):
        make(picture())
