"""The use cases end to end below the adapters: real SQLite, real files, the real engine."""

from __future__ import annotations

import asyncio
import io
from datetime import UTC, datetime

import pytest
from PIL import Image

from bot.core.errors import (
    Banned,
    Cancelled,
    EmptyPrompt,
    InvalidInput,
    NotAllowed,
    NotFound,
    PolicyRefusal,
    QuotaExceeded,
    TooManyJobs,
)
from bot.core.grammar import Limits
from bot.core.metadata import parse_parameters
from bot.core.models import GuildSettings, JobKind, JobState, NsfwRule, UserSettings
from bot.core.service import Actor, Press, Service, ServiceConfig, Upload

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
BOB = Actor(key="discord:2", name="bob", guild_id=100, channel_id=200)


def png_bytes(size=(64, 64), color=(10, 200, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def noisy_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 60).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


async def imagine(service, text="a lighthouse at dusk --seed 7", actor=ANN, **kw):
    submission = await service.imagine(actor, text, **kw)
    return await service.finish(submission)


async def test_imagine_records_the_job_writes_pngs_and_charges_the_quota(
    make_service, store, files
):
    service = make_service()
    outcome = await imagine(service, "a lighthouse at dusk --ar 3:2 --seed 7 --no fog")
    job = outcome.job
    assert job.state is JobState.DONE and job.kind is JobKind.IMAGINE
    assert (job.spec.width, job.spec.height, job.spec.seed) == (80, 56, 7)
    assert [i.seed for i in outcome.images] == [7, 8, 9, 10]
    assert (
        job.repro["model"] == "tiny" and job.repro["scheduler"] == "EulerAncestralDiscreteScheduler"
    )
    for image in outcome.images:
        data = files.read(image.path)
        with Image.open(io.BytesIO(data)) as back:
            assert back.size == (80, 56)
            params = parse_parameters(back.text["parameters"])
        assert params["prompt"] == "a lighthouse at dusk" and params["negative"] == "fog"
        assert params["Seed"] == str(image.seed) and params["Size"] == "80x56"
    user = await service.user(ANN)
    assert await service.images_used_today(user) == 4
    assert service.remake_command(job) == (
        "a lighthouse at dusk --ar 3:2 --seed 7 --steps 4 --cfg 7 --sampler euler_a --count 4"
        " --model tiny --no fog"
    )


async def test_same_prompt_and_seed_make_the_same_files(make_service):
    service = make_service()
    a = await imagine(service)
    b = await imagine(service)
    assert [i.sha256 for i in a.images] == [i.sha256 for i in b.images]
    assert a.job.id != b.job.id


async def test_invalid_input_changes_nothing(make_service, store):
    service = make_service()
    with pytest.raises(EmptyPrompt):
        await service.imagine(ANN, "  --ar 16:9")
    with pytest.raises(InvalidInput, match="--steps must be from 1 to 50"):
        await service.imagine(ANN, "fox --steps 99")
    with pytest.raises(InvalidInput, match="--strength applies only to an image prompt"):
        await service.imagine(ANN, "fox --strength 0.5")
    assert await store.count_jobs() == 0
    assert await store.list_audit() == []


async def test_quota_refuses_before_any_work_and_counts_running_jobs(make_service, store):
    service = make_service(daily_images_per_user=6)
    await imagine(service)  # 4 of 6
    with pytest.raises(QuotaExceeded, match="needs 4 images but you have 2 left today"):
        await service.imagine(ANN, "another --seed 1")
    assert await store.count_jobs() == 1
    events = await store.list_audit(action="refuse")
    assert events and "QuotaExceeded" in str(events[0].detail)
    ok = await imagine(service, "two more --count 2")
    assert len(ok.images) == 2
    # Bob's quota is his own.
    assert len((await imagine(service, actor=BOB)).images) == 4


async def test_quota_override_and_reset(make_service, store):
    service = make_service(daily_images_per_user=4)
    await imagine(service)
    user = await service.user(ANN)
    with pytest.raises(QuotaExceeded):
        await service.imagine(ANN, "more")
    await store.set_quota(user.id, daily_quota=4, reset_usage=True)
    assert len((await imagine(service, "more")).images) == 4
    await store.set_quota(user.id, daily_quota=0)
    with pytest.raises(QuotaExceeded, match="switched off for you"):
        await service.imagine(ANN, "more")


async def test_cancelled_and_failed_jobs_charge_nothing(make_service, store):
    service = make_service(start=False)
    submission = await service.imagine(ANN, "fox --seed 3")
    assert submission.position == 0
    cancelled = await service.cancel(ANN, submission.job.id)
    assert cancelled.state is JobState.CANCELLED
    with pytest.raises(Cancelled, match="nothing was charged"):
        await service.finish(submission)
    assert (await store.get_job(submission.job.id)).state is JobState.CANCELLED
    assert await service.images_used_today(await service.user(ANN)) == 0
    with pytest.raises(InvalidInput, match="already cancelled"):
        await service.cancel(ANN, submission.job.id)


async def test_others_cannot_cancel_my_job_but_admins_can(make_service, store):
    service = make_service(start=False)
    submission = await service.imagine(ANN, "fox")
    with pytest.raises(NotFound):
        await service.cancel(BOB, submission.job.id)
    admin = Actor(key="discord:9", name="mod", guild_id=100, is_admin=True)
    await service.cancel(admin, submission.job.id)
    with pytest.raises(Cancelled):
        await service.finish(submission)
    assert (await store.list_audit(action="cancel"))[0].actor == "discord:9"


async def test_per_user_job_cap(make_service):
    service = make_service(start=False, max_queued_per_user=2)
    await service.imagine(ANN, "one")
    await service.imagine(ANN, "two")
    with pytest.raises(TooManyJobs, match="already have 2 jobs waiting or running"):
        await service.imagine(ANN, "three")
    await service.imagine(BOB, "bob's")


async def test_banned_users_are_refused(make_service, store):
    service = make_service()
    user = await service.user(ANN)
    await store.set_ban(user.id, banned=True, reason="spam", until=None)
    with pytest.raises(Banned, match="banned from using Easel: spam"):
        await service.imagine(ANN, "fox")
    assert await store.count_jobs() == 0


async def test_variations_upscale_reroll_and_remix(make_service, store):
    service = make_service()
    grid = await imagine(service, "a castle --seed 40")
    vary = await service.finish(await service.vary(BOB, grid.job.id, 1, strong=False))
    assert vary.job.kind is JobKind.VARIATION and vary.job.parent_index == 1
    assert vary.job.spec.strength == pytest.approx(0.35) and len(vary.images) == 4
    assert vary.job.user_id == (await service.user(BOB)).id  # charged to whoever pressed
    strong = await service.finish(await service.vary(ANN, grid.job.id, 0, strong=True))
    assert strong.job.spec.strength == pytest.approx(0.65)
    assert {i.sha256 for i in strong.images}.isdisjoint({i.sha256 for i in grid.images})

    up = await service.finish(await service.upscale(ANN, grid.job.id, 2))
    assert up.job.kind is JobKind.UPSCALE and len(up.images) == 1
    assert (up.images[0].width, up.images[0].height) == (128, 128)
    assert up.images[0].seed == grid.images[2].seed

    reroll = await service.finish(await service.reroll(ANN, grid.job.id))
    assert reroll.job.spec.prompt == "a castle" and reroll.job.spec.seed != 40

    remix = await service.finish(
        await service.vary(ANN, grid.job.id, 3, prompt="a castle in the snow --no people")
    )
    assert remix.job.kind is JobKind.REMIX
    assert (remix.job.spec.prompt, remix.job.spec.negative) == ("a castle in the snow", "people")


async def test_upscale_is_deterministic_from_the_stored_image(make_service):
    service = make_service()
    grid = await imagine(service, "a castle --seed 40")
    first = await service.finish(await service.upscale(ANN, grid.job.id, 0))
    second = await service.finish(await service.upscale(BOB, grid.job.id, 0))
    assert first.images[0].sha256 == second.images[0].sha256


async def test_a_double_click_makes_one_job(make_service, store):
    service = make_service()
    grid = await imagine(service, "a castle --seed 40")
    press = Press(message_id=5, button=f"easel:v:{grid.job.id}:0")
    first, second = await asyncio.gather(
        service.vary(BOB, grid.job.id, 0, press=press),
        service.vary(BOB, grid.job.id, 0, press=press),
    )
    assert first.job.id == second.job.id
    assert sorted([first.created, second.created]) == [False, True]
    done = first if first.created else second
    await service.finish(done)
    up = Press(message_id=5, button=f"easel:up:{grid.job.id}:0")
    a = await service.upscale(BOB, grid.job.id, 0, press=up)
    await service.finish(a)
    b = await service.upscale(BOB, grid.job.id, 0, press=up)
    assert b.job.id == a.job.id and not b.created
    assert (await service.finish(b)).images[0].sha256  # the finished job's images come back
    assert await store.count_jobs() == 3


async def test_image_prompt(make_service, store, files):
    service = make_service()
    upload = Upload(png_bytes((100, 60)), "image/png")
    outcome = await imagine(service, "a watercolour --strength 0.5 --ar 3:2", upload=upload)
    assert outcome.job.kind is JobKind.IMG2IMG and outcome.job.spec.strength == 0.5
    assert outcome.job.init_image_path.startswith("uploads/")
    assert outcome.images[0].width == 80
    default = await imagine(service, "a watercolour", upload=upload)
    assert default.job.spec.strength == pytest.approx(0.6)


@pytest.mark.parametrize(
    ("data", "content_type", "message"),
    [
        (b"", "image/png", "empty"),
        (b"hello", "text/plain", "must be PNG, JPEG or WebP"),
        (png_bytes()[:40], "image/png", "not a picture Easel can read"),
        (noisy_png()[: len(noisy_png()) // 2], "image/png", "damaged or truncated"),
        (png_bytes(), "image/jpeg", "says it is JPEG but is PNG"),
    ],
)
async def test_bad_uploads_are_refused_and_nothing_is_stored(
    make_service, store, files, data, content_type, message
):
    service = make_service()
    with pytest.raises(InvalidInput, match=message):
        await service.imagine(ANN, "fox", upload=Upload(data, content_type))
    assert await store.count_jobs() == 0
    assert not (files.root / "uploads").exists()


async def test_withheld_images_are_kept_back_and_not_charged(make_service, store):
    calls = []

    def classifier(image):
        calls.append(image.size)
        return len(calls) % 2 == 0  # flag every second image

    service = make_service(classifier=classifier)
    outcome = await imagine(service)
    assert [i.withheld for i in outcome.images] == [False, True, False, True]
    assert outcome.job.charged_images == 2
    assert (await store.list_audit(action="withhold"))[0].target == f"job:{outcome.job.id}"
    with pytest.raises(InvalidInput, match="withheld"):
        await service.upscale(ANN, outcome.job.id, 1)


async def test_a_failing_image_check_withholds_everything(make_service):
    def broken(image):
        raise RuntimeError("checker crashed")

    outcome = await imagine(make_service(classifier=broken))
    assert all(i.withheld for i in outcome.images) and outcome.job.charged_images == 0


async def test_resume_after_a_crash(make_service, store):
    crashed = make_service(start=False)
    submission = await crashed.imagine(ANN, "fox --seed 5")
    await store.mark_running(submission.job.id)  # it had started when the process died
    restarted = make_service()
    resumed = await restarted.resume()
    assert [s.job.id for s in resumed] == [submission.job.id]
    outcome = await restarted.finish(resumed[0])
    assert outcome.job.state is JobState.DONE and outcome.job.attempts == 2
    fresh = await imagine(restarted, "fox --seed 5")
    assert [i.sha256 for i in outcome.images] == [i.sha256 for i in fresh.images]


async def test_resume_gives_up_after_the_attempts(make_service, store):
    crashed = make_service(start=False, attempts=2)
    submission = await crashed.imagine(ANN, "fox")
    for _ in range(2):  # started twice, and the process died both times
        await store.mark_running(submission.job.id)
        await store.requeue(submission.job.id)
    assert await make_service(attempts=2).resume() == []
    job = await store.get_job(submission.job.id)
    assert job.state is JobState.FAILED and "Gave up after 2 attempts" in job.error


async def test_history_info_and_search(make_service):
    service = make_service()
    await imagine(service, "a red fox --count 1")
    await imagine(service, "a blue whale --count 1")
    jobs, total = await service.history(ANN, search="fox")
    assert total == 1 and jobs[0].spec.prompt == "a red fox"
    info = await service.info(ANN)
    assert (info["used_today"], info["total_jobs"], info["my_jobs"]) == (2, 2, [])


async def test_personal_defaults_and_presets(make_service):
    service = make_service()
    settings = await service.update_settings(ANN, aspect="16:9", sampler="DDIM", suffix="ink")
    assert (settings.aspect, settings.sampler, settings.suffix) == ("16:9", "ddim", "ink")
    with pytest.raises(InvalidInput, match="Unknown sampler"):
        await service.update_settings(ANN, sampler="plms")
    await service.save_preset(ANN, "Tall", "--ar 2:3 --steps 3")
    outcome = await imagine(service, "a tower --preset tall --count 1")
    assert outcome.job.spec.aspect == (2, 3) and outcome.job.spec.steps == 3
    assert outcome.job.spec.prompt == "a tower ink" and outcome.job.spec.sampler == "ddim"
    with pytest.raises(InvalidInput, match="only parameters"):
        await service.save_preset(ANN, "bad", "a cat")
    await service.delete_preset(ANN, "tall")
    with pytest.raises(InvalidInput, match="no preset called 'tall'"):
        await service.imagine(ANN, "x --preset tall")


async def test_server_defaults_and_limits(make_service, store):
    service = make_service()
    await store.save_guild_settings(100, GuildSettings(aspect="2:1", max_steps=5))
    outcome = await imagine(service, "wide --count 1")
    assert outcome.job.spec.aspect == (2, 1)
    with pytest.raises(InvalidInput, match="from 1 to 5"):
        await service.imagine(ANN, "x --steps 6")
    await store.save_guild_settings(100, GuildSettings(allowed_channel_ids=(300,)))
    with pytest.raises(Exception, match="not enabled in this channel"):
        await service.imagine(ANN, "x")


async def test_nsfw_rule_follows_server_and_channel(make_service, store):
    service = make_service()
    with pytest.raises(PolicyRefusal, match="age-restricted"):
        await service.imagine(ANN, "a nude figure study")
    assert await store.count_jobs() == 0  # a refused prompt makes no job; the audit has it
    (refusal,) = await store.list_audit(action="refuse")
    assert refusal.detail["category"] == "nsfw"
    await store.save_guild_settings(100, GuildSettings(nsfw_rule=NsfwRule.AGE_RESTRICTED))
    with pytest.raises(PolicyRefusal):
        await service.imagine(ANN, "a nude figure study")  # normal channel: still refused
    nsfw_channel = Actor(
        key="discord:1", name="ann", guild_id=100, channel_id=201, nsfw_channel=True
    )
    outcome = await imagine(service, "a nude figure study --count 1", actor=nsfw_channel)
    assert outcome.job.state is JobState.DONE
    dm = Actor(key="discord:1", name="ann", nsfw_channel=True)  # no guild: the strict rule
    with pytest.raises(PolicyRefusal):
        await service.imagine(dm, "a nude figure study")


async def test_forget_me_deletes_jobs_settings_and_files(make_service, store, files):
    service = make_service()
    mine = await imagine(service)
    theirs = await imagine(service, actor=BOB)  # same prompt and seed: the same files
    await service.save_preset(ANN, "p", "--ar 1:1")
    deleted = await service.forget_me(ANN)
    assert deleted == 0  # Bob's identical images keep the shared files
    with pytest.raises(NotFound):
        await store.get_job(mine.job.id)
    forgotten = await store.find_user("discord:1")  # kept for enforcement, nothing personal
    assert forgotten.name == "" and forgotten.settings == UserSettings()
    assert all(files.path(i.path).exists() for i in theirs.images)
    other = await imagine(service, "unique to bob --seed 99 --count 1", actor=BOB)
    assert await service.forget_me(BOB) == len(theirs.images) + 1
    assert not files.path(other.images[0].path).exists()


async def test_admin_check_uses_roles_and_permissions(make_service):
    service = make_service(admin_role_ids=(55,))
    guild = GuildSettings(admin_role_ids=(66,))
    service.require_admin(Actor("discord:1", "a", is_admin=True), guild)
    service.require_admin(Actor("discord:1", "a", role_ids=(55,)), guild)
    service.require_admin(Actor("discord:1", "a", role_ids=(66,)), guild)
    with pytest.raises(NotAllowed):
        service.require_admin(Actor("discord:1", "a", role_ids=(77,)), guild)


def test_midnight_is_utc():
    from bot.core.service import utc_midnight

    now = datetime(2026, 3, 4, 23, 59, tzinfo=UTC)
    assert utc_midnight(now) == datetime(2026, 3, 4, tzinfo=UTC)


async def test_a_cancel_from_another_process_is_honoured(make_service, store, files):
    from bot.app import NoEngine
    from bot.settings import load_settings

    bot = make_service(start=False)
    submission = await bot.imagine(ANN, "fox --seed 3")
    cli = Service(store, files, NoEngine(load_settings()), ServiceConfig())  # `easel cancel`
    operator = Actor(key="local:op", name="op", is_admin=True)
    assert (await cli.cancel(operator, submission.job.id)).state is JobState.CANCELLED
    bot.engine.start()  # the bot's engine still makes the images...
    with pytest.raises(Cancelled):
        await bot.finish(submission)  # ...but they are neither recorded nor charged
    job = await store.get_job(submission.job.id)
    assert job.state is JobState.CANCELLED and job.charged_images == 0
    assert await store.get_images(job.id) == []
    assert not list((files.root / "images").rglob("*.png"))


async def test_a_failed_upscale_can_be_pressed_again(make_service, store):
    service = make_service()
    grid = await imagine(service, "a castle --seed 40")
    idle = make_service(start=False)
    press = Press(message_id=5, button=f"easel:up:{grid.job.id}:0")
    first = await idle.upscale(BOB, grid.job.id, 0, press=press)
    await idle.cancel(BOB, first.job.id)
    again = await service.upscale(BOB, grid.job.id, 0, press=press)
    assert again.created and again.job.id != first.job.id
    assert len((await service.finish(again)).images) == 1


async def test_variations_keep_to_the_size_and_count_limits(make_service, store):
    service = make_service()
    grid = await imagine(service, "a castle --seed 40")
    up = await service.finish(await service.upscale(ANN, grid.job.id, 0))  # 128×128
    limited = make_service(limits=Limits(max_pixels=64 * 64, max_count=2))
    with pytest.raises(InvalidInput, match="vary the image it was upscaled from"):
        await limited.vary(ANN, up.job.id, 0)
    vary = await limited.finish(await limited.vary(ANN, grid.job.id, 0))
    assert len(vary.images) == 2


async def test_a_refused_image_prompt_leaves_no_file(make_service, files):
    service = make_service(daily_images_per_user=0)
    with pytest.raises(QuotaExceeded):
        await service.imagine(ANN, "a watercolour", upload=Upload(png_bytes(), "image/png"))
    assert not list((files.root / "uploads").rglob("*.png"))


async def test_an_out_of_memory_split_counts_one_attempt(make_service, store, monkeypatch):
    import torch

    from engine.pipelines import Runner

    real_run = Runner.run

    def flaky(self, requests, on_step):
        if len(requests) > 1:
            on_step(1, 4, torch.zeros(len(requests), 4, 8, 8))
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return real_run(self, requests, on_step)

    monkeypatch.setattr(Runner, "run", flaky)
    service = make_service(start=False)
    subs = [await service.imagine(a, "fox --count 1") for a in (ANN, BOB)]
    service.engine.start()
    for sub in subs:
        assert (await service.finish(sub)).job.attempts == 1
