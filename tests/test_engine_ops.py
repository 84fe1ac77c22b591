"""Image prompts (IP-Adapter) and /blend, Upscale (Subtle), and the helpers (CLIPSeg masks,
captions, control maps) as the engine runs them, on tiny random components loaded through the
real loading code; and the catalogue's companion models."""

from __future__ import annotations

import re
import threading

import numpy as np
import pytest
from PIL import Image

from engine.catalogue import CatalogueError, ExtraModels, ModelEntry, load_catalogue
from engine.loading import load_model
from engine.ops.helpers import Helpers, load_segmenter
from engine.pool import ModelPool
from engine.requests import (
    GenerationError,
    GenerationRequest,
    InvalidRequest,
    NotAvailable,
    NothingFound,
    Operation,
    image_identity,
)
from engine.tiny_extras import build_tiny_segmenter
from tests.engine_ops_support import (
    TIMEOUT,
    assert_batched_equals_alone,
    images,
    png,
    request,
    started,
)


def swatch(seed: int, size: int = 64) -> Image.Image:
    """A distinct picture per seed: blocks of colour."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)


# -- image prompts -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompted(model_dir):
    """An engine over its own tiny model: the adapter switches the U-Net's attention."""
    pool = ModelPool.of(
        load_model("tiny", data_dir=model_dir), data_dir=model_dir, extras=ExtraModels.tiny()
    )
    engine = started(pool)
    yield pool, engine
    engine.stop()


def test_an_image_prompt_steers_and_weight_zero_equals_none(prompted):
    _, engine = prompted
    plain = images(engine, request())
    steered = images(engine, request(image_prompts=(swatch(1),)))
    assert steered != plain
    assert images(engine, request(image_prompts=(swatch(2),))) != steered
    assert images(engine, request(image_prompts=(swatch(1),), image_weight=0.0)) == plain
    # Switched off again for the next job without image prompts: nothing left behind.
    assert images(engine, request()) == plain


@pytest.mark.parametrize("count", [2, 5])
def test_blend_of_several_images_records_their_order_and_repeats_exactly(prompted, count):
    _, engine = prompted
    pictures = tuple(swatch(10 + i) for i in range(count))
    blend = request(prompt="", image_prompts=pictures, image_weight=1.5, guidance=1.0)
    result = engine.submit(blend).result(TIMEOUT)
    assert result.repro["image_prompts"] == [image_identity(p) for p in pictures]
    assert result.repro["image_weight"] == 1.5 and result.repro["ip_adapter_scale"] == 0.75
    assert result.repro["ip_adapter"] == "tiny"
    assert result.repro["ip_adapter_identity"].startswith("sha256:")
    assert [png(i) for i in result.images] == images(engine, blend)
    reordered = engine.submit(
        request(prompt="", image_prompts=pictures[::-1], image_weight=1.5, guidance=1.0)
    ).result(TIMEOUT)
    assert reordered.repro["image_prompts"] == result.repro["image_prompts"][::-1]
    without_last = images(
        engine, request(prompt="", image_prompts=pictures[:-1], image_weight=1.5, guidance=1.0)
    )
    assert without_last != [png(i) for i in result.images]  # every image counts


def test_batched_image_prompt_jobs_equal_the_same_jobs_alone(prompted):
    pool, engine = prompted
    pictures = (swatch(3), swatch(4))
    jobs = [
        request(seeds=(5,), image_prompts=pictures, owner="a"),
        request(seeds=(6, 7), image_prompts=pictures, owner="b", prompt="a red fox"),
    ]
    assert_batched_equals_alone(pool, engine, jobs)


def test_sref_uses_the_style_layer_of_sdxl_only(model_dir, prompted):
    pool, _ = prompted
    with pytest.raises(NotAvailable, match="--sref is not available for model 'tiny'"):
        pool.check(request(image_prompts=(swatch(1),), style_only=True))
    sdxl = ModelPool.of(
        load_model("tiny-sdxl", data_dir=model_dir), data_dir=model_dir, extras=ExtraModels.tiny()
    )
    engine = started(sdxl)
    try:
        full = images(engine, request("tiny-sdxl", image_prompts=(swatch(1),), image_weight=2))
        style = engine.submit(
            request("tiny-sdxl", image_prompts=(swatch(1),), image_weight=2, style_only=True)
        ).result(TIMEOUT)
        plain = images(engine, request("tiny-sdxl"))
    finally:
        engine.stop()
    assert style.repro["style_only"] is True
    styled = [png(i) for i in style.images]
    assert styled != full and styled != plain


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image_prompts": tuple(swatch(i) for i in range(6))}, "6 image prompts; at most 5"),
        ({"image_prompts": (swatch(1),), "image_weight": 2.5}, "(--iw) goes from 0 to 2"),
        ({"style_only": True}, "--sref needs an image"),
        (
            {
                "image_prompts": (swatch(1),),
                "operation": Operation.IMG2IMG,
                "init_images": (swatch(2),),
                "strength": 0.5,
            },
            "Image prompts go with a new picture",
        ),
    ],
)
def test_bad_image_prompt_requests_are_refused(prompted, change, message):
    pool, engine = prompted
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        pool.check(request(**change))
    with pytest.raises(GenerationError, match=re.escape(message)):
        engine.submit(request(**change))


def test_image_prompts_that_are_not_configured_or_not_available_say_so(model_dir, tiny_model):
    with pytest.raises(NotAvailable, match="no IP-Adapter is configured"):
        ModelPool.of(tiny_model, data_dir=model_dir).check(request(image_prompts=(swatch(1),)))
    sd3 = ModelPool(load_catalogue(None, "tiny-sd3"), data_dir=model_dir)
    with pytest.raises(NotAvailable, match="Image prompts are not available for model 'tiny-sd3'"):
        sd3.check(request("tiny-sd3", image_prompts=(swatch(1),)))


# -- Upscale (Subtle) ----------------------------------------------------------------------------


def subtle(image: Image.Image, factor: int, seeds=(1,)) -> GenerationRequest:
    return request(
        operation=Operation.UPSCALE_SUBTLE,
        seeds=seeds,
        init_images=(image,),
        width=image.width * factor,
        height=image.height * factor,
        previews=False,
    )


@pytest.fixture(scope="module")
def upscaling(model_dir, tiny_model):
    extras = ExtraModels.tiny(max_upscale_pixels=300 * 300, upscale_tile=32)
    pool = ModelPool.of(tiny_model, data_dir=model_dir, extras=extras)
    engine = started(pool)
    yield pool, engine
    engine.stop()


@pytest.mark.parametrize("factor", [2, 4])
def test_subtle_upscale_makes_exactly_the_factor_and_reports_tiles(upscaling, factor):
    _, engine = upscaling
    image = swatch(5, 56).crop((0, 0, 56, 40))
    steps = []
    result = engine.submit(subtle(image, factor), on_progress=steps.append).result(TIMEOUT)
    assert result.images[0].size == (56 * factor, 40 * factor)
    # The tiny upscaler keeps the picture: brought back down, it is the input again, nearly.
    back = result.images[0].resize(image.size, Image.Resampling.BOX)
    assert np.abs(np.asarray(back, int) - np.asarray(image, int)).mean() < 12
    repro = result.repro
    assert repro["operation"] == "upscale_subtle" and repro["upscale_factor"] == factor
    assert repro["upscaler"] == "tiny-compact-x4.safetensors"
    assert repro["upscaler_identity"].startswith("sha256:") and repro["upscale_tile"] == 32
    assert [png(i) for i in result.images] == images(engine, subtle(image, factor))
    tiles = [p for p in steps if p.step > 0]
    assert tiles and tiles[-1].step == tiles[-1].total > 1  # 56×40 in 32-pixel tiles


@pytest.mark.parametrize(
    ("make", "message", "error"),
    [
        (
            lambda i: subtle(i, 8),
            "exactly ×2 or ×4 of the 64×64 image, not 512×512",
            InvalidRequest,
        ),
        (
            lambda i: subtle(i, 4, seeds=(1, 2)),
            "Upscale (Subtle) makes one image",
            InvalidRequest,
        ),
        (
            lambda i: subtle(i.resize((100, 100)), 4),
            "would make 400×400 (160,000 pixels), above this server's limit of 90,000",
            NotAvailable,
        ),
    ],
)
def test_bad_subtle_upscales_are_refused(upscaling, make, message, error):
    pool, _ = upscaling
    with pytest.raises(error, match=re.escape(message)):
        pool.check(make(swatch(1)))


def test_subtle_upscale_needs_an_upscaler(model_dir, tiny_model):
    with pytest.raises(NotAvailable, match="no upscaler model is configured"):
        ModelPool.of(tiny_model, data_dir=model_dir).check(subtle(swatch(1), 2))


# -- the helpers -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def helpers(model_dir):
    helpers = Helpers(ExtraModels.tiny(), data_dir=model_dir, device="cpu")
    yield helpers
    helpers.close()


def test_a_tiny_clipseg_loads_through_the_real_loader_and_masks_by_words(model_dir):
    segmenter = load_segmenter(build_tiny_segmenter(model_dir / "models"))
    picture = swatch(7, 80).crop((0, 0, 80, 60))
    mask = segmenter(picture, "the sky")
    assert mask.size == (80, 60) and mask.mode == "L"
    assert set(np.unique(np.asarray(mask))) <= {0, 255} and np.asarray(mask).any()
    # The words matter: another phrase lights other pixels.
    assert not np.array_equal(segmenter.heat(picture, "the sky"), segmenter.heat(picture, "a dog"))
    # Nothing above the threshold: said so, with the words.
    highest = float(segmenter.heat(picture, "the sky").max())
    with pytest.raises(NothingFound, match="Nothing in the picture matches “the sky”"):
        segmenter(picture, "the sky", threshold=highest + 1e-3)
    with pytest.raises(InvalidRequest, match="Say what to change"):
        segmenter(picture, "   ")


async def test_helpers_run_on_their_own_thread_off_the_event_loop(helpers):
    picture = swatch(8)
    loop_thread = threading.current_thread()
    threads = []
    original = helpers._segmenter

    def spy():
        threads.append(threading.current_thread())
        return original()

    helpers._segmenter = spy
    try:
        mask = await helpers.segment(picture, "the sky")
    finally:
        del helpers._segmenter
    assert mask.size == picture.size
    assert threads and threads[0] is not loop_thread
    assert threads[0].name.startswith("easel-helpers")


async def test_describe_gives_four_distinct_prompts(helpers):
    prompts = await helpers.describe(swatch(9))
    assert len(prompts) == 4 and len(set(prompts)) == 4
    assert prompts == await helpers.describe(swatch(9))
    assert "captioner" in helpers.loaded()


async def test_control_maps_from_an_upload(helpers):
    picture = swatch(11, 48)
    canny = await helpers.control_map("canny", picture)
    depth = await helpers.control_map("Depth", picture)
    assert canny.size == depth.size == picture.size
    assert np.asarray(canny).any() and np.asarray(depth).std() > 0
    with pytest.raises(InvalidRequest, match="Unknown control type 'edges'"):
        await helpers.control_map("edges", picture)
    with pytest.raises(NotAvailable, match="Pose control is not available"):
        await helpers.control_map("pose", picture)


# -- the catalogue's companions ------------------------------------------------------------------


def test_a_catalogue_model_names_its_own_companions(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(
        """
        [models.sd15]
        source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
        family = "sd1"
        inpaint = "stable-diffusion-v1-5/stable-diffusion-inpainting"
        controlnets = { canny = "lllyasviel/control_v11p_sd15_canny", depth = "./depth-cn" }
        ip_adapter = "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
        preview_decoder = "madebyollin/taesd"

        [models.other]
        source = "tiny"
        inpaint = ""
        preview_decoder = ""
        """
    )
    catalogue = load_catalogue(path, "sd15")
    sd15, other = catalogue.find("sd15"), catalogue.find("other")
    extras = ExtraModels(
        inpaint="settings-inpaint",
        controlnets=(("canny", "settings-canny"),),
        ip_adapter="x/y/z",
        preview_decoders=(("sd1", "settings-taesd"), ("sdxl", "settings-taesdxl")),
    )
    assert extras.inpaint_model(sd15) == "stable-diffusion-v1-5/stable-diffusion-inpainting"
    assert extras.inpaint_model(other) is None  # "" opts out of the setting
    assert extras.controlnet(sd15, "canny") == "lllyasviel/control_v11p_sd15_canny"
    assert extras.controlnet(sd15, "depth") == str((tmp_path / "depth-cn").resolve())
    assert extras.controlnet(other, "canny") == "settings-canny"
    assert extras.controlnet(other, "depth") is None
    assert extras.ip_adapter_of(sd15) == "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"
    assert extras.ip_adapter_of(other) == "x/y/z"
    assert extras.preview_decoder_of(sd15, "sd1") == "madebyollin/taesd"
    assert extras.preview_decoder_of(other, "sd1") is None  # "" opts out of the setting
    plain = ModelEntry("plain", "tiny")
    assert extras.preview_decoder_of(plain, "sdxl") == "settings-taesdxl"  # by the family
    assert extras.preview_decoder_of(plain, "flux") is None
    path.write_text('[models.a]\nsource = "tiny"\ncontrolnets = { edges = "x" }\n')
    with pytest.raises(CatalogueError, match="'edges' is not a control type"):
        load_catalogue(path, "a")
