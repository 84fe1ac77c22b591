"""Abuse resistance below the adapters: hostile uploads, flood control, the image-side check."""

from __future__ import annotations

import io
import struct
import zlib

import pytest
from PIL import Image

from bot.core.errors import BadImage, CoolingDown, QueueFull
from bot.core.grammar import Defaults, Limits
from bot.core.imaging import check_upload_meta, decode_upload
from bot.core.models import JobState
from bot.core.service import Actor, Service, ServiceConfig, Upload
from engine.loading import ModelLoadError
from engine.safety import load_safety_checker
from engine.worker import Engine

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
MiB = 1024 * 1024


def encode(image: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_with_header(width: int, height: int, body: Image.Image) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` while its pixel data is ``body``'s."""
    data = bytearray(encode(body))
    ihdr = data[12:29]  # type + 13 bytes of header
    patched = ihdr[:4] + struct.pack(">II", width, height) + ihdr[12:]
    data[12:29] = patched
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(patched)))
    return bytes(data)


def noisy(size=(64, 64)) -> Image.Image:
    return Image.effect_noise(size, 80).convert("RGB")


BOMB = encode(Image.new("1", (20000, 20000)))  # ~400 million pixels, a few hundred kB on disk
BAD_UPLOADS = {
    "decompression bomb": (BOMB, "image/png", "too large to decode safely"),
    "oversized": (
        encode(Image.new("1", (5000, 300))),
        "image/png",
        "is 5000×300; the limit is 4096",
    ),
    "lying header": (png_with_header(3000, 3000, noisy()), "image/png", "damaged or truncated"),
    "empty file": (b"", "image/png", r"empty \(0 bytes\)"),
    "truncated jpeg": (encode(noisy(), "JPEG")[:600], "image/jpeg", "damaged or truncated"),
    "wrong content type": (encode(noisy()), "application/pdf", "must be PNG, JPEG or WebP"),
    "type that lies": (encode(noisy()), "image/webp", "says it is WEBP but is PNG"),
    "not an image": (b"GIF89a" + b"\0" * 100, "image/png", "not a picture Easel can read"),
}


def test_the_bomb_is_small_on_disk_but_huge_decoded():
    assert len(BOMB) < 2 * MiB


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
async def test_bad_uploads_are_refused_and_nothing_is_stored(case, store, files, tiny_model):
    data, content_type, message = BAD_UPLOADS[case]
    engine = Engine(tiny_model)
    service = Service(store, files, engine, ServiceConfig(defaults=Defaults(steps=4)))
    with pytest.raises(BadImage, match=message):
        await service.imagine(ANN, "a fox", upload=Upload(data, content_type))
    assert await store.count_jobs() == 0
    assert not (files.root / "uploads").exists()
    assert engine.snapshot() == []


def test_a_huge_file_is_refused_before_it_is_downloaded():
    with pytest.raises(BadImage, match=r"is 50\.0 MiB; the limit is 10\.0 MiB"):
        check_upload_meta("image/png", 50 * MiB, max_bytes=10 * MiB)


def test_pillows_own_bomb_check_becomes_a_clear_error():
    # Between Pillow's warning and error thresholds (89M and 179M pixels), the warning is
    # turned into a refusal too.
    bomb = encode(Image.new("1", (10000, 10000)))
    with pytest.raises(BadImage, match="too large to decode safely"):
        decode_upload(bomb, "image/png", max_bytes=10 * MiB, max_side=100_000)


def test_a_good_upload_is_decoded_to_rgb():
    image = decode_upload(encode(noisy((40, 30)).convert("RGBA")), "image/png", max_bytes=MiB)
    assert image.mode == "RGB" and image.size == (40, 30)


async def test_cooldown_between_requests(store, files, tiny_model):
    engine = Engine(tiny_model)  # not started: jobs just wait
    service = Service(store, files, engine, ServiceConfig(cooldown_seconds=30))
    await service.imagine(ANN, "one")
    with pytest.raises(CoolingDown, match=r"wait \d+ s"):
        await service.imagine(ANN, "two")
    other = Actor(key="discord:2", name="bob")
    await service.imagine(other, "bob is not slowed by ann")
    assert (await store.list_audit(action="refuse"))[0].detail["kind"] == "CoolingDown"


async def test_a_full_queue_refuses_and_charges_nothing(store, files, tiny_model):
    engine = Engine(tiny_model, queue_size=1)
    service = Service(store, files, engine, ServiceConfig())
    await service.imagine(ANN, "first")
    with pytest.raises(QueueFull, match="The queue is full"):
        await service.imagine(Actor(key="discord:2", name="bob"), "second")
    refused = await store.list_jobs(states=[JobState.REFUSED])
    assert len(refused) == 1 and refused[0].charged_images == 0


# -- the image-side check with diffusers' real safety checker class ---------------------------


def build_checker(folder, *, flag_everything: bool) -> None:
    import torch
    from diffusers.pipelines.stable_diffusion.safety_checker import (
        StableDiffusionSafetyChecker,
    )
    from transformers import CLIPConfig, CLIPImageProcessor

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "vocab_size": 99,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_attention_heads": 4,
            "num_hidden_layers": 1,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=32,
    )
    checker = StableDiffusionSafetyChecker(config)
    with torch.no_grad():
        # Thresholds far below any similarity flag everything; far above flag nothing.
        fill = -10.0 if flag_everything else 10.0
        checker.concept_embeds_weights.fill_(fill)
        checker.special_care_embeds_weights.fill_(fill)
    checker.save_pretrained(folder)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(folder)


@pytest.mark.parametrize("flag_everything", [True, False])
async def test_configured_safety_checker_withholds_flagged_images(
    tmp_path, store, files, tiny_model, flag_everything
):
    build_checker(tmp_path / "checker", flag_everything=flag_everything)
    classify = load_safety_checker(str(tmp_path / "checker"), model="tiny")
    assert classify(noisy()) is flag_everything
    engine = Engine(tiny_model, preview_interval=0)
    engine.start()
    try:
        service = Service(
            store, files, engine, ServiceConfig(defaults=Defaults(steps=4)), classifier=classify
        )
        outcome = await service.finish(await service.imagine(ANN, "a fox --count 2"))
    finally:
        engine.stop()
    assert [i.withheld for i in outcome.images] == [flag_everything] * 2
    assert outcome.job.charged_images == (0 if flag_everything else 2)


def test_a_missing_safety_checker_fails_at_start_up(tmp_path):
    with pytest.raises(ModelLoadError, match="cannot load a safety checker"):
        load_safety_checker(str(tmp_path / "nowhere"), model="tiny")


def test_limits_refuse_big_requests():
    from bot.core.errors import ParameterOutOfRange
    from bot.core.grammar import parse_prompt

    with pytest.raises(ParameterOutOfRange, match="--steps must be from 1 to 30"):
        parse_prompt("fox --steps 31", limits=Limits(max_steps=30))
    with pytest.raises(ParameterOutOfRange, match="--count must be from 1 to 2"):
        parse_prompt("fox --count 3", limits=Limits(max_count=2))
