"""The real bot (discord.py, the service, the engine on the tiny model, SQLite) against the local
fake Discord server: slash commands, buttons, modals, restarts, expiry, rate limits."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import secrets

import pytest
from PIL import Image
from sqlalchemy.engine import make_url

from bot.core.models import JobKind, JobState
from tests.harness import GRID_IDS, WAIT, custom_ids, image_of, job_id_of

pytestmark = pytest.mark.e2e


async def test_imagine_defers_shows_progress_and_ends_with_a_grid_and_nine_buttons(h):
    async with h.bot():
        interaction = await h.fake.slash("imagine", {"prompt": "a lighthouse at dusk --seed 7"})
        await interaction.wait_for_response(WAIT)
        assert interaction.response_type == 5  # deferred at once
        final = await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and m["components"], timeout=WAIT
        )
    job = job_id_of(final)
    assert custom_ids(final) == ["easel:" + c.format(j=job) for c in GRID_IDS]
    assert image_of(final).size == (128, 128)  # four 64×64 images
    contents = [v["content"] for v in final["history"]]
    assert any("%" in c for c in contents), contents  # a progress edit came before the grid
    assert any(a["filename"] == "preview.png" for v in final["history"] for a in v["attachments"])
    assert "a lighthouse at dusk" in final["content"] and "seeds 7–10" in final["content"]
    assert "--seed 7 --steps 6" in final["content"]  # the command that remakes it
    assert (await h.store.get_job(job)).message_id == int(final["id"])


async def test_u_then_upscale_then_variations(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        pressed = await h.fake.click(grid, f"easel:u:{job}:1")
        single = await h.done(pressed)
        assert image_of(single).size == (64, 64) and "Image #2" in single["content"]
        assert "Seed: 4" in image_of(single).text["parameters"]  # the stored file, as made
        assert custom_ids(single) == [f"easel:{a}:{job}:1" for a in ("up", "vs", "vS", "rx")] + [
            f"easel:r:{job}",
            f"easel:us:{job}:1",
            f"easel:dm:{job}:1",
            f"easel:x:{job}",
        ] + [f"easel:e:{a}:{job}:1" for a in ("rg", "z2", "z15", "zc", "pl", "pr", "pu", "pd")]

        pressed = await h.fake.click(single, f"easel:up:{job}:1")
        upscaled = await h.fake.wait_for_message(
            lambda m: m["id"] == pressed.original_id and m["components"], timeout=WAIT
        )
        assert image_of(upscaled).size == (128, 128)
        assert "upscale" in upscaled["content"]

        pressed = await h.fake.click(grid, f"easel:v:{job}:0", user=h.fake.other_user_id)
        variations = await h.fake.wait_for_message(
            lambda m: m["id"] == pressed.original_id and m["components"], timeout=WAIT
        )
    new_job = await h.store.get_job(job_id_of(variations))
    assert new_job.kind is JobKind.VARIATION and new_job.parent_job_id == job
    pressed_by = await h.store.find_user(f"discord:{h.fake.other_user_id}")
    assert new_job.user_id == pressed_by.id  # charged to whoever pressed
    assert image_of(variations).size == (128, 128)


async def test_remix_through_the_modal(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        u = await h.fake.click(grid, f"easel:u:{job}:0")
        single = await h.done(u)
        opened = await h.fake.click(single, f"easel:rx:{job}:0")
        await opened.wait_for_response(WAIT)
        assert opened.response_type == 9  # a modal
        modal = opened.response_data
        assert modal_field(modal) and "a castle" in str(modal)  # the prompt, ready to edit
        # Another member remixing the same image gets a modal of their own.
        other = await h.fake.click(single, f"easel:rx:{job}:0", user=h.fake.other_user_id)
        await other.wait_for_response(WAIT)
        assert other.response_data["custom_id"] != modal["custom_id"]
        submitted = await h.fake.submit_modal(
            modal["custom_id"], {modal_field(modal): "a castle in the snow --no people"}
        )
        remixed = await h.fake.wait_for_message(
            lambda m: m["id"] == submitted.original_id and m["components"], timeout=WAIT
        )
    job_row = await h.store.get_job(job_id_of(remixed))
    assert job_row.kind is JobKind.REMIX and job_row.spec.prompt == "a castle in the snow"
    assert job_row.spec.negative == "people" and "a castle in the snow" in remixed["content"]


def modal_field(modal: dict) -> str:
    def walk(components):
        for c in components:
            yield c
            yield from walk(c.get("components", []))
            if "component" in c:
                yield from walk([c["component"]])

    return next(c["custom_id"] for c in walk(modal["components"]) if c["type"] == 4)


async def test_remix_mode_opens_the_modal_for_v_buttons(h):
    async with h.bot():
        settings = await h.fake.slash("settings set", {"remix": True})
        await settings.wait_for_followup(timeout=WAIT)
        _, grid = await h.imagine("a castle --seed 3")
        opened = await h.fake.click(grid, f"easel:v:{job_id_of(grid)}:2")
        await opened.wait_for_response(WAIT)
        assert opened.response_type == 9


async def test_buttons_work_after_a_restart(h):
    service = h.service()
    async with h.bot(service):
        _, grid = await h.imagine("a castle --seed 3")
    async with h.bot(h.service()):  # a new process: new client, engine and service
        pressed = await h.fake.click(grid, f"easel:u:{job_id_of(grid)}:3")
        single = await h.done(pressed)
    assert image_of(single).size == (64, 64)


async def test_a_double_click_makes_one_job(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        before = await h.store.count_jobs()
        first, second = await asyncio.gather(
            h.fake.click(grid, f"easel:v:{job}:0"), h.fake.click(grid, f"easel:v:{job}:0")
        )
        for pressed in (first, second):
            await h.fake.wait_for_message(
                lambda m, p=pressed: m["id"] == p.original_id and m["components"], timeout=WAIT
            )
    assert await h.store.count_jobs() == before + 1


async def test_a_late_result_edits_the_message_already_posted(h):
    service = h.service(start=False)
    async with h.bot(service):
        interaction = await h.fake.slash("imagine", {"prompt": "a castle --seed 3"})
        await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "castle" in m["content"],
            timeout=WAIT,
        )
        h.fake.expire_token(interaction.token)  # 15 minutes pass while the job waits
        posts_before = len(h.fake.requests_to("POST", r"/channels/\d+/messages"))
        service.engine.start()
        done = await h.done(interaction)  # the same message, now with the grid
        edits = h.fake.requests_to("PATCH", rf"/channels/\d+/messages/{interaction.original_id}")
        posts = h.fake.requests_to("POST", r"/channels/\d+/messages")
    assert image_of(done).size == (128, 128) and "a castle" in done["content"]
    assert edits and len(posts) == posts_before  # the bot's token edited it; no second post


async def test_a_rate_limit_from_discord_is_survived(h):
    async with h.bot():
        h.fake.fail_next(
            "PATCH",
            r"/webhooks/\d+/[^/]+/messages/@original",
            status=429,
            retry_after=0.05,
            count=2,
        )
        _, grid = await h.imagine("a castle --seed 3")
    assert len(h.fake.rate_limits_served) == 2
    assert grid["components"]


async def test_mentions_in_prompts_ping_nobody(h):
    """Every message and edit Easel sends, uploads (multipart: payload_json + files) included,
    carries allowed_mentions that ping nobody."""
    async with h.bot():
        _, grid = await h.imagine("@everyone look at this <@123> <@&77> --seed 1")
        single = await h.done(await h.fake.click(grid, f"easel:u:{job_id_of(grid)}:0"))
    sent = [
        r.body.get("payload_json", r.body) if isinstance(r.body, dict) else {}
        for r in h.fake.requests
        if r.method in ("POST", "PATCH")
        and re.search(r"/(webhooks|channels|interactions)/", r.path)
    ]
    with_content = [b for b in sent if isinstance(b, dict) and "content" in b]
    uploads = [r for r in h.fake.requests if isinstance(r.body, dict) and "files" in r.body]
    assert uploads and len(with_content) >= 4  # the grids and images themselves are checked
    assert all(b.get("allowed_mentions") == {"parse": []} for b in with_content), with_content
    assert "@everyone" in grid["content"] and "@everyone" in single["content"]


async def test_jobs_left_unfinished_are_resumed_and_delivered_to_the_channel(h):
    crashed = h.service(start=False)
    async with h.bot(crashed):
        interaction = await h.fake.slash("imagine", {"prompt": "a castle --seed 3"})
        await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "castle" in m["content"],
            timeout=WAIT,
        )
    crashed.engine.stop()  # the process died with the job queued
    (job,) = await h.store.unfinished_jobs()
    async with h.bot(h.service()):
        posted = await h.fake.wait_for_message(
            lambda m: m["components"] and m.get("interaction_token") is None, timeout=WAIT
        )
    assert job_id_of(posted) == job.id
    assert (await h.store.get_job(job.id)).state is JobState.DONE


async def test_image_prompt_upload(h):
    buffer = io.BytesIO()
    Image.new("RGB", (96, 64), (200, 50, 50)).save(buffer, format="PNG")
    attachment = h.fake.add_attachment(buffer.getvalue(), "../../etc/passwd.png", "image/png")
    async with h.bot():
        interaction = await h.fake.slash(
            "imagine", {"prompt": "a watercolour --strength 0.5 --seed 1", "image": attachment}
        )
        final = await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and m["components"], timeout=WAIT
        )
    job = await h.store.get_job(job_id_of(final))
    assert job.kind is JobKind.IMG2IMG and job.init_image_path.startswith("uploads/")
    assert "passwd" not in job.init_image_path


async def test_bad_input_gets_a_clear_message_and_changes_nothing(h):
    async with h.bot():
        interaction = await h.fake.slash("imagine", {"prompt": "fox --seed -4"})
        message = await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "❌" in m["content"], timeout=WAIT
        )
    assert "--seed takes a whole number from 0 to 4294967295" in message["content"]
    assert "Traceback" not in message["content"]
    assert await h.store.count_jobs() == 0


async def test_settings_info_history_cancel_and_show(h):
    service = h.service(start=False)
    async with h.bot(service):
        said = await (
            await h.fake.slash("settings set", {"aspect": "16:9", "steps": 5})
        ).wait_for_followup(timeout=WAIT)
        assert "aspect `16:9`" in said["content"] and said["flags"] & 64  # ephemeral
        bad = await (await h.fake.slash("settings set", {"aspect": "9:1"})).wait_for_followup(
            timeout=WAIT
        )
        assert "1:4 to 4:1" in bad["content"]
        await h.fake.slash("imagine", {"prompt": "waiting fox"})
        await h.fake.wait_for_message(lambda m: "waiting fox" in m["content"], timeout=WAIT)
        info = await (await h.fake.slash("info")).wait_for_followup(timeout=WAIT)
        assert "Images left today" in info["content"] and "0 ahead" in info["content"]
        (job,) = await h.store.unfinished_jobs()
        assert (job.spec.width, job.spec.height) == (88, 48)  # the personal 16:9 default
        history = await (await h.fake.slash("history", {"search": "fox"})).wait_for_followup(
            timeout=WAIT
        )
        assert f"#{job.id}" in history["content"]
        cancelled = await (await h.fake.slash("cancel")).wait_for_followup(timeout=WAIT)
        assert f"Job #{job.id} is cancelled" in cancelled["content"]
        assert (await h.store.get_job(job.id)).state is JobState.CANCELLED

        service.engine.start()
        _, grid = await h.imagine("a castle --seed 3 --ar 1:1")
        shown = await h.fake.slash("show", {"job": job_id_of(grid)}, user=h.fake.other_user_id)
        revived = await h.fake.wait_for_message(
            lambda m: m["id"] == shown.original_id and m["components"], timeout=WAIT
        )
    assert custom_ids(revived) == custom_ids(grid)


async def test_commands_are_synced_only_when_they_change(h):
    async with h.bot():
        pass
    writes = h.fake.command_writes
    assert writes == 1 and h.fake.find_command("imagine") is not None
    async with h.bot():
        pass
    assert h.fake.command_writes == writes


async def test_the_real_start_up_never_logs_a_secret(
    fake, postgres_url, model_dir, tiny_model, tmp_path, monkeypatch, capfd
):
    """`easel run` as an operator starts it, at DEBUG: neither the bot token, nor an
    interaction token, nor the database password reaches a log line."""
    from bot import cli

    token = "MTEx." + secrets.token_urlsafe(48)
    password = "hunter2-" + secrets.token_hex(8)
    fake.token = token
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(model_dir / "models")
    monkeypatch.setenv("DISCORD_TOKEN", token)
    monkeypatch.setenv("EASEL_DATA_DIR", str(data))
    url = make_url(postgres_url).set(password=password)  # trust authentication ignores it
    monkeypatch.setenv("EASEL_DATABASE_URL", url.render_as_string(hide_password=False))
    monkeypatch.setenv("EASEL_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("EASEL_DEFAULT_STEPS", "4")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    running = asyncio.create_task(cli._dispatch(cli.build_parser().parse_args(["run"])))
    try:
        await fake.wait_for_session(timeout=60)
        interaction = await fake.slash("imagine", {"prompt": "a castle --seed 3"})
        await fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and m["components"], timeout=WAIT
        )
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    logged = capfd.readouterr().err
    assert "/interactions/" in logged and "/webhooks/" in logged  # the routes were logged
    assert "INTERACTION_CREATE" in logged  # and the gateway payloads, which carry the tokens
    for secret in (token, interaction.token, password):
        assert secret not in logged


async def test_the_other_buttons_reroll_and_vary_subtle_or_strong(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        rerolled = await h.done(await h.fake.click(grid, f"easel:r:{job}"))
        single = await h.done(await h.fake.click(grid, f"easel:u:{job}:2"))
        subtle = await h.done(await h.fake.click(single, f"easel:vs:{job}:2"))
        strong = await h.done(await h.fake.click(single, f"easel:vS:{job}:2"))
    reroll_job = await h.store.get_job(job_id_of(rerolled))
    assert reroll_job.kind.value == "reroll" and reroll_job.spec.seed != 3
    subtle_job = await h.store.get_job(job_id_of(subtle))
    strong_job = await h.store.get_job(job_id_of(strong))
    assert (subtle_job.spec.strength, strong_job.spec.strength) == (0.35, 0.65)
    assert subtle_job.parent_index == strong_job.parent_index == 2


async def test_settings_show_and_presets(h):
    async def say(name, options=None):
        interaction = await h.fake.slash(name, options or {})
        return (await interaction.wait_for_followup(timeout=WAIT))["content"]

    async with h.bot():
        assert "Your defaults" in await say("settings show")
        saved = await say("settings preset", {"name": "Wide", "parameters": "--ar 21:9 --steps 3"})
        assert "--preset Wide" in saved
        assert "`wide`: `--ar 21:9 --steps 3`" in await say("settings show")
        assert "only parameters" in await say("settings preset", {"name": "x", "parameters": "a"})
        _, grid = await h.imagine("a bridge --preset wide --seed 1")
        assert (await h.store.get_job(job_id_of(grid))).spec.aspect == (21, 9)
        assert "Deleted preset" in await say("settings unpreset", {"name": "wide"})
        assert "no preset called" in await say("settings unpreset", {"name": "wide"})


async def test_show_keeps_other_peoples_jobs_where_they_were_made(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        elsewhere = await h.fake.slash(
            "show", {"job": job}, user=h.fake.other_user_id, channel_id=h.fake.nsfw_channel_id
        )
        refused = await h.fake.wait_for_message(
            lambda m: m["id"] == elsewhere.original_id and "❌" in m["content"], timeout=WAIT
        )
        assert f"no job #{job} here" in refused["content"]
        mine = await h.fake.slash("show", {"job": job}, channel_id=h.fake.nsfw_channel_id)
        assert (await h.done(mine))["components"]  # the owner may bring it anywhere
        settings = await h.fake.slash("settings set", {"private": True})
        await settings.wait_for_followup(timeout=WAIT)
        _, secret = await h.imagine("a secret castle --seed 4")  # made while private is on
        private = await h.fake.slash("show", {"job": job_id_of(secret)}, user=h.fake.other_user_id)
        await h.fake.wait_for_message(
            lambda m: m["id"] == private.original_id and "❌" in m["content"], timeout=WAIT
        )
