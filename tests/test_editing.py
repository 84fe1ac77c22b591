"""Editing one image (Vary Region, Zoom Out, Pan, Make Square) through the service and the
``easel`` command: real SQLite, real files, the real engine on the tiny model (64×64, 4 steps),
the real CLIPSeg helper (tiny, random weights)."""

from __future__ import annotations

import functools
import io
import os
import shlex

import numpy as np
import pytest
from PIL import Image

from bot.cli import main
from bot.core.errors import BadImage, InvalidInput, PolicyRefusal
from bot.core.grammar import Limits
from bot.core.models import JobKind, JobState
from bot.core.service import Actor, Service, Upload
from engine.catalogue import ExtraModels
from engine.ops.helpers import Helpers
from engine.ops.inpaint import feather_weights
from engine.ops.masks import cells_mask, feather_radius
from engine.ops.outpaint import make_square, pan, zoom_out
from tests import test_cli

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
NATIVE = 64  # the tiny model's native side


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB")).astype(int)


@pytest.fixture(scope="module")
def helpers(tmp_path_factory):
    helpers = Helpers(ExtraModels.tiny(), data_dir=tmp_path_factory.mktemp("helpers"), device="cpu")
    yield helpers
    helpers.close()


@pytest.fixture
def make_service(make_service, helpers):
    """conftest's, with the helpers (the tiny segmenter) for Vary (Region) by words."""
    return functools.partial(make_service, helpers=helpers)


class Stricter:
    """The real helpers, whose segmenter asks for more certainty than its default."""

    def __init__(self, helpers: Helpers, *, threshold: float) -> None:
        self.helpers = helpers
        self.threshold = threshold

    async def segment(self, image: Image.Image, words: str) -> Image.Image:
        return await self.helpers.segment(image, words, threshold=self.threshold)

    def __getattr__(self, name: str) -> object:
        return getattr(self.helpers, name)


async def made(
    service: Service, text: str = "a lighthouse at dusk --seed 7", actor: Actor = ANN, **kw
):
    return await service.finish(await service.imagine(actor, text, **kw))


async def edited(submission_coroutine, service: Service):
    return await service.finish(await submission_coroutine)


def opened(service: Service, outcome) -> list[Image.Image]:
    return [service.open_image(i) for i in outcome.images]


async def usage(service: Service, store) -> tuple[int, int]:
    """Jobs recorded and images charged so far: what a refused request must leave alone."""
    user = await service.user(ANN)
    return await store.count_jobs(user_id=user.id), await service.images_used_today(user)


# -- Vary (Region) -----------------------------------------------------------------------------


@pytest.mark.parametrize("way", ["cells", "mask", "transparent mask", "area"])
async def test_vary_region_keeps_every_pixel_outside_the_region(make_service, store, helpers, way):
    service = make_service()
    parent = await made(service)
    original = service.open_image(parent.images[1])
    if way == "cells":
        where = {"cells": [5, 6]}
        mask = cells_mask(64, 64, [5, 6])
    elif way == "mask":
        mask = cells_mask(64, 64, [1, 2])
        where = {"mask": Upload(png(mask), "image/png")}
    elif way == "transparent mask":  # painted white on a transparent layer, white beneath too
        mask = cells_mask(64, 64, [7, 8])
        layer = Image.new("RGBA", (64, 64), (255, 255, 255, 0))
        layer.putalpha(mask)
        where = {"mask": Upload(png(layer), "image/png")}
    else:
        # Random weights see "the sky" all over; at 0.9 the region is small enough to leave
        # pixels beyond its feathered border.
        service.helpers = Stricter(helpers, threshold=0.9)
        where = {"area": "the sky"}
        mask = await service.helpers.segment(original, "the sky")
    before = await usage(service, store)
    outcome = await edited(
        service.region(ANN, parent.job.id, 1, prompt="a red kite", **where), service
    )
    job = outcome.job
    assert job.kind is JobKind.REGION and job.state is JobState.DONE
    assert (job.parent_job_id, job.parent_index) == (parent.job.id, 1)
    assert job.spec.prompt == "a red kite" and len(outcome.images) == 4
    weights = feather_weights(mask, feather_radius(64, 64))
    outside, inside = weights == 0, weights == 1
    assert outside.any() and inside.any()
    for image in opened(service, outcome):
        assert np.array_equal(pixels(image)[outside], pixels(original)[outside])
        assert np.abs(pixels(image)[inside] - pixels(original)[inside]).mean() > 5
    # The mask is stored by content hash and is the one that was repainted.
    assert (
        job.params["mask"].startswith("masks/") and job.params["mask_sha256"] in job.params["mask"]
    )
    assert np.array_equal(np.asarray(service.files.open(job.params["mask"])), np.asarray(mask))
    assert await usage(service, store) == (before[0] + 1, before[1] + 4)
    command = service.remake_command(job)
    assert command.startswith(f"easel region {parent.job.id} 2 --prompt 'a red kite' ")
    assert command.endswith(f"--seed {job.spec.seed}")
    if way == "cells":
        assert "--cells 5,6" in command
    elif way == "area":
        assert "--area 'the sky'" in command


async def test_the_same_edit_twice_is_byte_identical(make_service):
    service = make_service()
    parent = await made(service)
    runs = [
        await edited(
            service.region(ANN, parent.job.id, 0, prompt="a kite", cells=[1], seed=5), service
        )
        for _ in range(2)
    ]
    assert [i.sha256 for i in runs[0].images] == [i.sha256 for i in runs[1].images]
    assert [i.seed for i in runs[0].images] == [5, 6, 7, 8]


async def test_a_reroll_of_an_edit_repaints_the_same_region(make_service):
    service = make_service()
    parent = await made(service)
    edit = await edited(service.region(ANN, parent.job.id, 0, prompt="a kite", cells=[9]), service)
    reroll = await edited(service.reroll(ANN, edit.job.id), service)
    again = await edited(service.reroll(ANN, reroll.job.id), service)  # 🔄 of the 🔄
    original = service.open_image(parent.images[0])
    outside = feather_weights(cells_mask(64, 64, [9]), feather_radius(64, 64)) == 0
    for image in [*opened(service, reroll), *opened(service, again)]:
        assert np.array_equal(pixels(image)[outside], pixels(original)[outside])


# -- Zoom Out, Pan, Make Square ----------------------------------------------------------------


def kept(canvas, image: Image.Image) -> np.ndarray:
    box = canvas.kept_exactly(feather_radius(*canvas.image.size)).box
    return pixels(image.crop(box))


@pytest.mark.parametrize("factor", [2.0, 1.5])
async def test_zoom_out_keeps_the_picture_unchanged_at_the_centre(make_service, factor):
    service = make_service()
    parent = await made(service)
    original = service.open_image(parent.images[0])
    outcome = await edited(
        service.zoom(ANN, parent.job.id, 0, factor=factor, prompt="a harbour"), service
    )
    canvas = zoom_out(original, factor, native_side=NATIVE, max_pixels=Limits().max_pixels)
    p = canvas.placement
    assert p.x > 0 and p.y > 0 and abs(p.x * 2 + p.width - canvas.image.width) <= 1  # centred
    for image in opened(service, outcome):
        assert image.size == canvas.image.size
        assert np.array_equal(kept(canvas, image), kept(canvas, canvas.image))
    job = outcome.job
    assert job.kind is JobKind.ZOOM and job.params["factor"] == factor
    assert job.spec.prompt == "a harbour"
    assert service.remake_command(job) == (
        f"easel zoom {parent.job.id} 1 --factor {factor:g} --prompt 'a harbour' "
        f"--seed {job.spec.seed}"
    )


@pytest.mark.parametrize("direction", ["left", "up"])
async def test_pan_keeps_the_picture_on_the_opposite_side(make_service, direction):
    service = make_service()
    parent = await made(service)
    original = service.open_image(parent.images[2])
    outcome = await edited(service.pan(ANN, parent.job.id, 2, direction=direction), service)
    canvas = pan(original, direction, native_side=NATIVE, max_pixels=Limits().max_pixels)
    p, (w, h) = canvas.placement, canvas.image.size
    if direction == "left":  # the picture keeps to the right
        assert p.x + p.width == w and p.x > 0
    else:  # up: the picture keeps to the bottom
        assert p.y + p.height == h and p.y > 0
    for image in opened(service, outcome):
        assert image.size == (w, h)
        assert np.array_equal(kept(canvas, image), kept(canvas, canvas.image))
    assert outcome.job.params["direction"] == direction
    assert outcome.job.spec.prompt == parent.job.spec.prompt  # no new prompt: the old one


async def test_make_square_is_square_and_contains_the_picture(make_service):
    service = make_service()
    parent = await made(service, "a lighthouse --ar 3:2 --seed 3")
    original = service.open_image(parent.images[0])
    assert original.width != original.height
    outcome = await edited(service.square(ANN, parent.job.id, 0), service)
    canvas = make_square(original, native_side=NATIVE, max_pixels=Limits().max_pixels)
    for image in opened(service, outcome):
        assert image.width == image.height
        assert np.array_equal(kept(canvas, image), kept(canvas, canvas.image))
    assert outcome.job.kind is JobKind.SQUARE
    with pytest.raises(InvalidInput, match="square already"):
        await service.square(ANN, outcome.job.id, 0)


# -- what is refused, and costs nothing ----------------------------------------------------------


def mask_upload(image: Image.Image, kind: str = "image/png") -> Upload:
    return Upload(png(image), kind)


BAD_REGIONS = [
    ({"cells": [1], "area": "the sky"}, InvalidInput, "exactly one way"),
    ({}, InvalidInput, "exactly one way"),
    ({"cells": [10]}, InvalidInput, "Cells are numbered 1 to 9"),
    ({"mask": Upload(b"white here", "text/plain")}, BadImage, "The mask must be PNG"),
    ({"mask": mask_upload(Image.new("L", (64, 32), 255))}, InvalidInput, "same shape"),
    ({"mask": mask_upload(Image.new("L", (64, 64), 0))}, InvalidInput, "all black"),
    ({"mask": mask_upload(Image.new("RGB", (64, 64), (255, 0, 0)))}, InvalidInput, "colours"),
]


@pytest.mark.parametrize(("where", "error", "message"), BAD_REGIONS)
async def test_bad_regions_get_a_specific_message_and_cost_nothing(
    make_service, store, where, error, message
):
    service = make_service()
    parent = await made(service)
    before = await usage(service, store)
    with pytest.raises(error, match=message):
        await service.region(ANN, parent.job.id, 0, prompt="a kite", **where)
    assert await usage(service, store) == before


async def test_nothing_found_by_words_is_said_and_costs_nothing(make_service, store, helpers):
    service = make_service()
    # The real segmenter, asked for more certainty than any pixel reaches: nothing matches.
    service.helpers = Stricter(helpers, threshold=1.0)
    parent = await made(service)
    before = await usage(service, store)
    with pytest.raises(InvalidInput) as refused:
        await service.region(ANN, parent.job.id, 0, prompt="a kite", area="the sky")
    assert str(refused.value) == (
        "Nothing matched 'the sky' in this image; pick cells or upload a mask instead."
    )
    assert await usage(service, store) == before


async def test_bad_zooms_and_pans_get_a_specific_message_and_cost_nothing(make_service, store):
    service = make_service()
    parent = await made(service)
    upscaled = await service.finish(await service.upscale(ANN, parent.job.id, 0))  # 128×128
    # Where pictures may have 3,600 pixels, zooming the upscale out 2× would shrink it to 23%.
    service = make_service(limits=Limits(max_steps=50, max_pixels=3600))
    before = await usage(service, store)
    with pytest.raises(InvalidInput, match=r"Zoom Out takes a factor from 1\.1 to 2\.0, not 2\.5"):
        await service.zoom(ANN, parent.job.id, 0, factor=2.5)
    with pytest.raises(InvalidInput, match="within the limit of 3,600 pixels"):
        await service.zoom(ANN, upscaled.job.id, 0, factor=2.0)
    with pytest.raises(InvalidInput, match="Pan goes left, right, up, down"):
        await service.pan(ANN, parent.job.id, 0, direction="sideways")
    with pytest.raises(InvalidInput, match="square already"):
        await service.square(ANN, parent.job.id, 0)
    assert await usage(service, store) == before


@pytest.mark.parametrize(
    "edit",
    [
        lambda s, j: s.region(ANN, j, 0, prompt="bare skin", area="her dress"),
        lambda s, j: s.region(ANN, j, 0, prompt="bare skin", cells=[4, 5]),
        lambda s, j: s.region(ANN, j, 0, prompt="natural look", area="remove her dress"),
        lambda s, j: s.zoom(ANN, j, 0, factor=2, prompt="bare skin"),
        lambda s, j: s.pan(ANN, j, 0, direction="down", prompt="bare skin"),
    ],
)
async def test_edits_of_an_uploaded_photo_keep_the_photo_hard_limits(
    make_service, store, files, edit
):
    service = make_service()
    photo = Upload(png(Image.effect_noise((64, 64), 60).convert("RGB")), "image/png")
    parent = await made(service, "a portrait of her --seed 2", upload=photo)
    assert parent.job.from_photo
    before = await usage(service, store)
    with pytest.raises(PolicyRefusal) as refused:
        await edit(service, parent.job.id)
    assert refused.value.hard
    assert await usage(service, store) == before
    for folder in ("masks", "edits"):  # nothing of the refused edit is kept
        assert not list((files.root / folder).rglob("*.png"))


async def test_an_edit_of_a_private_result_is_private_and_of_a_photo_stays_a_photo(make_service):
    service = make_service()
    await service.update_settings(ANN, private=True)
    parent = await made(service)
    assert parent.job.private
    await service.update_settings(ANN, private=False)
    zoomed = await edited(service.zoom(ANN, parent.job.id, 0, factor=1.5), service)
    assert zoomed.job.private
    photo = Upload(png(Image.effect_noise((64, 64), 60).convert("RGB")), "image/png")
    parent = await made(service, "a portrait --seed 2", upload=photo)
    panned = await edited(service.pan(ANN, parent.job.id, 0, direction="right"), service)
    assert panned.job.from_photo and not panned.job.private


# -- the easel command -------------------------------------------------------------------------

environment = test_cli.environment  # a data directory with the session's tiny model


@pytest.fixture
def easel(environment, tmp_path, monkeypatch, capsys):
    """`easel …` in this process (tests/test_cli.py runs it as a real process; here that would
    load torch once per command): its exit status, standard output and standard error."""
    for name in [k for k in os.environ if k.startswith("EASEL_")]:
        monkeypatch.delenv(name)
    for name, value in environment(EASEL_SEGMENT_MODEL="tiny").items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)

    def easel(*args: str) -> tuple[int, str, str]:
        status = main(list(args))
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return easel


def test_every_edit_from_the_command_line(easel, tmp_path):
    status, made, err = easel("imagine", "a castle --ar 3:2 --seed 3")
    assert status == 0, err
    job = test_cli.job_id(made)
    out = tmp_path / "out"
    with Image.open(out / f"job{job}_1.png") as image:
        original = image.size
    status, region, err = easel(
        "region", job, "1", "--prompt", "a red door", "--cells", "1,2", "--seed", "5"
    )
    assert status == 0, err
    assert "(region)" in region and "seeds 5, 6, 7, 8" in region
    remake = region.split("Remake: ", 1)[1].strip()
    assert remake == f"easel region {job} 1 --prompt 'a red door' --cells 1,2 --seed 5"
    status, again, err = easel(*shlex.split(remake)[1:])
    first, second = test_cli.job_id(region), test_cli.job_id(again)
    for i in range(1, 5):
        assert (out / f"job{first}_{i}.png").read_bytes() == (
            out / f"job{second}_{i}.png"
        ).read_bytes()
    (tmp_path / "mask.png").write_bytes(png(cells_mask(*original, [9])))
    status, masked, err = easel("region", job, "1", "--prompt", "a kite", "--mask", "mask.png")
    assert status == 0, err
    remake = masked.split("Remake: ", 1)[1].strip()
    assert " --mask masks/" in remake  # the stored mask, by its place in the data directory
    status, again, err = easel(*shlex.split(remake)[1:])
    assert status == 0, err
    first, second = test_cli.job_id(masked), test_cli.job_id(again)
    assert (out / f"job{first}_4.png").read_bytes() == (out / f"job{second}_4.png").read_bytes()
    status, words, err = easel("region", job, "1", "--prompt", "a kite", "--area", "the sky")
    assert status == 0, err  # the segmenter the settings name (tiny here), loaded on first use
    assert "--area 'the sky'" in words
    sizes = {}
    for name, *options in (
        ("zoom", "--factor", "1.5"),
        ("pan", "--direction", "up", "--prompt", "a castle in fog"),
        ("square",),
    ):
        status, result, err = easel(name, job, "2", *options)
        assert status == 0, err
        assert f"({name})" in result
        with Image.open(out / f"job{test_cli.job_id(result)}_1.png") as image:
            sizes[name] = image.size
    assert sizes["square"][0] == sizes["square"][1]
    assert sizes["pan"][1] > sizes["pan"][0] * original[1] / original[0]  # taller than before
    status, _, err = easel("zoom", job, "1", "--factor", "3")
    assert status == 2
    assert err.strip().splitlines()[-1] == "easel: Zoom Out takes a factor from 1.1 to 2.0, not 3."
    with pytest.raises(SystemExit) as usage:  # argparse: no part given
        easel("region", job, "1", "--prompt", "a door")
    assert usage.value.code == 2


async def test_masks_go_with_forget_me_unless_another_job_uses_them(make_service, store, files):
    service = make_service()
    bob = Actor(key="discord:2", name="bob", guild_id=100, channel_id=200)
    parent = await made(service)
    uploaded = Upload(png(cells_mask(64, 64, [3, 6])), "image/png")
    mine = await edited(
        service.region(ANN, parent.job.id, 0, prompt="a kite", mask=uploaded), service
    )
    shared = await edited(
        service.region(ANN, parent.job.id, 0, prompt="a kite", cells=[1]), service
    )
    his = await made(service, "a harbour --seed 8", actor=bob)
    bobs = await edited(service.region(bob, his.job.id, 0, prompt="a kite", cells=[1]), service)
    assert shared.job.params["mask"] == bobs.job.params["mask"]  # the same bytes, stored once
    await service.forget_me(ANN)
    assert not files.path(mine.job.params["mask"]).exists()
    assert files.path(bobs.job.params["mask"]).exists()  # bob's edit still needs it
    again = await edited(service.reroll(bob, bobs.job.id), service)  # and can use it
    assert again.job.params["mask"] == bobs.job.params["mask"]
