"""Who may see a job, and where; enforcement below the adapters (real SQLite, the real engine)."""

from __future__ import annotations

import asyncio
import io
import time
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from PIL import Image

from bot.core import privacy
from bot.core.errors import Banned, EmptyPrompt, InvalidInput, NotFound, PolicyRefusal
from bot.core.grammar import Defaults, parse_prompt, resolve
from bot.core.metadata import parse_parameters
from bot.core.models import Job, JobKind, JobState
from bot.core.privacy import AgeRestricted, Place
from bot.core.service import (
    REFUSAL_AUDITS_PER_MINUTE,
    Actor,
    Press,
    Service,
    ServiceConfig,
    Upload,
    _Bounded,
)
from bot.core.text import clean_text, is_blank, model_label
from engine.worker import Engine

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
BOB = Actor(key="discord:2", name="bob", guild_id=100, channel_id=200)
HERE = Place(guild_id=100, channel_id=200, nsfw_allowed=False)


def job(**kw) -> Job:
    spec = resolve(parse_prompt("a castle --seed 1"), native_side=64)
    values = {
        "id": 7,
        "user_id": 1,
        "kind": JobKind.IMAGINE,
        "state": JobState.DONE,
        "spec": spec,
        "model": "tiny",
        "guild_id": 100,
        "channel_id": 200,
        "message_id": None,
        "parent_job_id": None,
        "parent_index": None,
        "init_image_path": None,
        "error": None,
        "attempts": 1,
        "repro": {},
        "charged_images": 4,
        "created_at": datetime.now(UTC),
        "started_at": None,
        "finished_at": None,
    }
    values.update(kw)
    return Job(**values)


# -- the rules, pure ----------------------------------------------------------------------------


def test_a_derived_job_inherits_privacy_age_and_photo_provenance():
    parent = job(private=True, age_restricted=True, from_photo=True)
    child = privacy.derive(parent, private_setting=False, place=HERE)
    assert (child.private, child.age_restricted, child.from_photo) == (True, True, True)
    fresh = privacy.derive(None, private_setting=True, place=HERE, photo=False)
    assert (fresh.private, fresh.age_restricted, fresh.from_photo) == (True, False, False)
    in_dm = privacy.derive(None, private_setting=True, place=Place(None, 5, False))
    assert not in_dm.private  # a DM is private already
    nsfw = privacy.derive(None, private_setting=False, place=replace(HERE, nsfw_allowed=True))
    assert nsfw.age_restricted


def test_who_may_see_a_job_where():
    public = job()
    privacy.check_may_show(public, viewer_id=2, place=HERE)  # where it was made
    with pytest.raises(NotFound):  # someone else's job, moved to another channel
        privacy.check_may_show(public, viewer_id=2, place=replace(HERE, channel_id=201))
    privacy.check_may_show(  # ...unless the press came from a message that shows it
        public, viewer_id=2, place=replace(HERE, channel_id=201), on_its_message=True
    )
    privacy.check_may_show(public, viewer_id=1, place=Place(None, 9, False))  # owner: anywhere
    with pytest.raises(NotFound):
        privacy.check_may_show(job(private=True), viewer_id=2, place=HERE, on_its_message=True)
    adult = job(age_restricted=True)
    for viewer in (1, 2):  # the owner too
        with pytest.raises(AgeRestricted):
            privacy.check_may_show(adult, viewer_id=viewer, place=HERE)
    privacy.check_may_show(adult, viewer_id=2, place=replace(HERE, nsfw_allowed=True))


def test_text_cleaning_and_model_labels():
    assert clean_text("a\x00 fox\tin\nsnow\u200b") == "a  fox in snow"
    assert is_blank("\u200b\u2060 \u200d") and not is_blank("\u200bfox")
    assert model_label("/home/op/models/dreamshaper_8.safetensors") == "dreamshaper_8"
    assert model_label("~/ckpt/anything.ckpt") == "anything"
    assert model_label("./models/my-sd15/") == "my-sd15"
    assert model_label("C:\\models\\x.safetensors") == "x"
    assert model_label("stabilityai/sdxl-turbo") == "stabilityai/sdxl-turbo"
    assert model_label("tiny") == "tiny"


def test_bounded_maps_forget_the_least_recently_used():
    seen = _Bounded(3)
    for key in "abcd":
        seen.touch(key, key)
    seen.touch("b", "b")
    seen.touch("e", "e")
    assert list(seen) == ["d", "b", "e"]


# -- the service -------------------------------------------------------------------------------


def png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


async def test_a_banned_member_cannot_flood_the_database(make_service, store):
    service = make_service()
    user = await service.user(ANN)
    await store.set_ban(user.id, banned=True, reason="spam", until=None)
    for _ in range(20):
        with pytest.raises(Banned):
            await service.imagine(ANN, "a nude figure")  # banned before the prompt is read
    assert await store.count_jobs() == 0
    refusals = await store.list_audit(action="refuse", limit=100)
    assert len(refusals) == REFUSAL_AUDITS_PER_MINUTE
    assert all("prompt" not in e.detail for e in refusals)  # never read, never written


async def test_refused_prompts_write_no_jobs_and_a_bounded_audit(make_service, store):
    service = make_service()
    for _ in range(12):
        with pytest.raises(PolicyRefusal):
            await service.imagine(BOB, "a nude figure")
    assert await store.count_jobs() == 0
    assert len(await store.list_audit(action="refuse", limit=100)) == REFUSAL_AUDITS_PER_MINUTE


async def test_invisible_and_control_characters(make_service, store):
    service = make_service()
    for text in ("\u200b", "\u200b\u2060 --ar 1:1", "\x00\x00", "\u200d\u200b --seed 3"):
        with pytest.raises(EmptyPrompt):
            await service.imagine(ANN, text)
    sub = await service.imagine(ANN, "a fox\x00 in\x07 snow --count 1")
    assert sub.job.spec.prompt == "a fox in snow"
    assert await store.count_jobs() == 1


async def test_a_start_image_gone_at_submit_fails_the_job_clearly(make_service, store, files):
    service = make_service()
    grid = await service.finish(await service.imagine(ANN, "a castle --seed 3"))
    image = grid.images[0]
    files.delete(image.path)
    with pytest.raises(InvalidInput, match=r"start image of job #\d+ is gone"):
        await service.vary(ANN, grid.job.id, 0)
    (failed,) = await store.list_jobs(states=[JobState.FAILED])
    assert failed.kind is JobKind.VARIATION and "is gone" in failed.error
    assert await store.list_jobs(states=[JobState.QUEUED, JobState.RUNNING]) == []


async def test_forget_me_deletes_an_upload_others_varied_and_keeps_its_provenance(
    make_service, store, files
):
    service = make_service()
    mine = await service.finish(
        await service.imagine(ANN, "a portrait --seed 1", upload=Upload(png(), "image/png"))
    )
    upload = mine.job.init_image_path
    theirs = await service.finish(await service.vary(BOB, mine.job.id, 0))
    with pytest.raises(PolicyRefusal):
        await service.imagine(ANN, "a nude figure")  # a refusal with Ann's prompt, audited
    await service.forget_me(ANN)
    assert not files.path(upload).exists()
    assert not any(files.path(i.path).exists() for i in mine.images)
    kept = await store.get_job(theirs.job.id)
    assert kept.from_photo and kept.init_image_path is None  # Bob keeps his images, not Ann's
    assert all(files.path(i.path).exists() for i in theirs.images)
    for event in await store.list_audit(action="refuse"):
        assert "prompt" not in event.detail and event.detail["category"] == "nsfw"
    with pytest.raises(PolicyRefusal, match="undress"):
        await service.vary(BOB, theirs.job.id, 0, prompt="a portrait in a bikini")


async def test_a_double_click_across_a_ten_second_boundary_is_one_job(
    make_service, store, monkeypatch
):
    service = make_service()
    grid = await service.finish(await service.imagine(ANN, "a castle --seed 3"))
    clock = iter([1_000_009.99, 1_000_010.01])  # the old key used 10-second buckets
    monkeypatch.setattr(time, "time", lambda: next(clock, 1_000_010.02))
    press = Press(message_id=42, button=f"easel:v:{grid.job.id}:0")
    first, second = await asyncio.gather(  # both arrive before either has made its job
        service.vary(BOB, grid.job.id, 0, press=press),
        service.vary(BOB, grid.job.id, 0, press=press),
    )
    assert second.job.id == first.job.id and sorted([first.created, second.created]) == [0, 1]
    await service.finish(first if first.created else second)
    assert await store.count_jobs() == 2


async def test_v_pressed_again_later_makes_new_variations(make_service, store):
    later = [datetime.now(UTC)]
    service = make_service()
    service.now = lambda: later[0]
    grid = await service.finish(await service.imagine(ANN, "a castle --seed 3"))
    press = Press(message_id=42, button=f"easel:v:{grid.job.id}:0")
    first = await service.finish(await service.vary(BOB, grid.job.id, 0, press=press))
    later[0] = datetime(2100, 1, 1, tzinfo=UTC)  # long after the double-click window
    again = await service.vary(BOB, grid.job.id, 0, press=press)
    assert again.created and again.job.id != first.job.id
    await service.finish(again)


async def test_png_metadata_and_info_show_a_model_name_never_a_path(store, files, model_dir):
    from engine.loading import load_model
    from engine.tiny import tiny_model_folder

    folder = tiny_model_folder(model_dir)  # EASEL_MODEL set to a path on the operator's disk
    engine = Engine(load_model(str(folder), data_dir=model_dir), preview_interval=0)
    engine.start()
    try:
        service = Service(store, files, engine, ServiceConfig(defaults=Defaults(steps=4)))
        outcome = await service.finish(await service.imagine(ANN, "a castle --count 1"))
        with Image.open(files.path(outcome.images[0].path)) as saved:
            text = saved.text["parameters"]
        shown = {parse_parameters(text)["Model"], outcome.job.model}
        shown.add((await service.info(ANN))["model"])
    finally:
        engine.stop()
    assert shown == {folder.name} and str(folder.parent) not in text


def test_the_database_url_is_printed_without_its_password():
    from bot.app import printable_db_url
    from bot.settings import load_settings

    settings = load_settings(database_url="postgresql+asyncpg://easel:hunter2@db:5432/easel")
    assert "hunter2" not in printable_db_url(settings)
    assert printable_db_url(settings) == "postgresql+asyncpg://easel:***@db:5432/easel"


async def test_the_cli_closes_jobs_of_killed_commands_and_charges_nothing(make_service, store):
    killed = make_service(start=False, runner="cli:host:1:1")
    sub = await killed.imagine(Actor("local:op", "op"), "a castle")
    restarted = make_service(runner="cli:host:2:2")
    restarted.is_alive = lambda runner: runner == "cli:host:2:2"
    (closed,) = await restarted.recover()
    assert closed.id == sub.job.id and closed.state is JobState.FAILED
    assert closed.charged_images == 0
    assert await restarted.resume() == []  # never rerun (into a channel or anywhere)


async def test_usage_survives_in_the_ledger(make_service, store):
    service = make_service(daily_images_per_user=4)
    await service.finish(await service.imagine(ANN, "a castle --seed 3"))
    await service.forget_me(ANN)
    assert await service.images_used_today(await service.user(ANN)) == 4
