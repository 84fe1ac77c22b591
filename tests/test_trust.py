"""Easel's promises tried as a hostile member would try them, end to end through the fake
Discord: private results stay private, /forget-me lifts no ban and gives back no images, ids are
never reused, provenance of uploaded photos outlives deletion, nothing unchecked is shown, images
stay where age-restricted content is allowed, and a purge reaches every copy."""

from __future__ import annotations

import asyncio
import io
import socket
import subprocess
import sys

import pytest
from PIL import Image

from bot.core.models import JobState
from bot.core.service import Actor
from bot.processes import this_process
from tests.harness import WAIT, image_of, job_id_of

pytestmark = pytest.mark.e2e


def photo_png() -> bytes:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def public(h, text: str) -> list[dict]:
    """Messages anyone in the server can see that show ``text``."""
    dm = {h.fake.dm_channel(u).id for u in (h.fake.user_id, h.fake.other_user_id)}
    return [
        m
        for m in h.fake.messages()
        if text in (m.get("content") or "")
        and m["channel_id"] not in dm
        and not h.fake.is_ephemeral(m)
    ]


async def test_forget_me_lifts_no_ban(h):
    async with h.bot():
        await h.imagine("a castle --seed 1")
        banned = await h.text(
            "admin ban", {"user": h.fake.user_id, "reason": "spam"}, user=h.fake.owner_id
        )
        assert "banned" in banned
        await h.forget_me(h.fake.user_id)
        again = await h.fake.slash("imagine", {"prompt": "a castle"})
        assert "banned from using Easel on this server: spam" in await h.refused(again)


async def test_forget_me_gives_back_no_images(h):
    async with h.bot(h.service(daily_images_per_user=4)):
        await h.imagine("a castle --seed 1")  # 4 of 4 today
        await h.forget_me(h.fake.user_id)
        again = await h.fake.slash("imagine", {"prompt": "a castle --count 1"})
        assert "you have 0 left today" in await h.refused(again)


async def test_a_forgotten_users_old_button_never_reaches_a_new_job(h):
    async with h.bot():
        _, old = await h.imagine("ann's castle --seed 1")
        old_job = job_id_of(old)
        await h.forget_me(h.fake.user_id)
        _, new = await h.imagine("bob's castle --seed 2", user=h.fake.other_user_id)
        assert job_id_of(new) > old_job  # the forgotten id is never handed out again
        for button in (f"easel:u:{old_job}:0", f"easel:v:{old_job}:0", f"easel:r:{old_job}"):
            pressed = await h.fake.click(old, button)
            assert "This image was deleted" in await h.refused(pressed)
    assert not public(h, "bob's castle")[1:]  # only Bob's own grid shows his job


async def test_private_results_stay_private_on_every_path(h):
    async with h.bot():
        assert "Saved" in await h.text("settings set", {"private": True})
        _interaction, grid = await h.imagine("a hidden castle --seed 3")
        job = job_id_of(grid)
        assert h.fake.is_ephemeral(grid)
        single = await h.done(await h.fake.click(grid, f"easel:u:{job}:0"))
        variations = await h.done(await h.fake.click(grid, f"easel:v:{job}:1"))
        rerolled = await h.done(await h.fake.click(grid, f"easel:r:{job}"))
        upscaled = await h.done(await h.fake.click(single, f"easel:up:{job}:0"))
        subtle = await h.done(await h.fake.click(single, f"easel:vs:{job}:0"))
        opened = await h.fake.click(single, f"easel:rx:{job}:0")
        await opened.wait_for_response(WAIT)
        modal = opened.response_data
        field = next(
            c["custom_id"]
            for row in modal["components"]
            for c in [row.get("component") or {}, *row.get("components", [])]
            if c.get("type") == 4
        )
        remixed = await h.done(
            await h.fake.submit_modal(
                modal["custom_id"], {field: "a hidden castle at night"}, message=single
            )
        )
        shown = await h.done(await h.fake.slash("show", {"job": job}))
        failed = await h.fake.slash("show", {"job": 999_999})
        await h.refused(failed)
        for message in (single, variations, rerolled, upscaled, subtle, remixed, shown):
            assert h.fake.is_ephemeral(message), message["content"]
        assert h.fake.is_ephemeral(h.fake.get_message(failed.original_id))
    assert public(h, "hidden castle") == []


async def test_a_private_result_resumed_after_a_restart_goes_to_dms(h):
    crashed = h.service(start=False)
    async with h.bot(crashed):
        assert "Saved" in await h.text("settings set", {"private": True})
        interaction = await h.fake.slash("imagine", {"prompt": "a hidden castle --seed 3"})
        await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "castle" in m["content"],
            timeout=WAIT,
        )
    crashed.engine.stop()  # the process died with the job queued
    async with h.bot(h.service()):
        dm = h.fake.dm_channel(h.fake.user_id)
        delivered = await h.fake.wait_for_message(
            lambda m: m["channel_id"] == dm.id and m["components"], timeout=WAIT
        )
    assert "hidden castle" in delivered["content"]
    assert public(h, "hidden castle") == []


async def test_a_photo_stays_a_photo_after_its_uploader_forgets(h):
    """A uploads a photo, B varies it, A runs /forget-me, B remixes "in a bikini": refused."""
    async with h.bot():
        photo = h.fake.add_attachment(photo_png(), "me.png", "image/png")
        uploaded = await h.fake.slash("imagine", {"prompt": "a portrait --seed 1", "image": photo})
        grid = await h.done(uploaded)
        bob = h.fake.other_user_id
        varied = await h.done(await h.fake.click(grid, f"easel:v:{job_id_of(grid)}:0", user=bob))
        await h.forget_me(h.fake.user_id)
        bobs = job_id_of(varied)
        single = await h.done(await h.fake.click(varied, f"easel:u:{bobs}:0", user=bob))
        opened = await h.fake.click(single, f"easel:rx:{bobs}:0", user=bob)
        await opened.wait_for_response(WAIT)
        modal = opened.response_data
        field = next(
            c["custom_id"]
            for row in modal["components"]
            for c in [row.get("component") or {}, *row.get("components", [])]
            if c.get("type") == 4
        )
        submitted = await h.fake.submit_modal(
            modal["custom_id"], {field: "a portrait in a bikini"}, user=bob, message=single
        )
        assert "does not undress or sexualise photos" in await h.refused(submitted)
    assert (await h.store.get_job(bobs)).from_photo


async def test_no_previews_are_shown_while_an_image_check_is_on(h):
    checked = []

    def classifier(image):
        checked.append(image.size)
        return False

    async with h.bot(h.service(classifier=classifier)):
        _, grid = await h.imagine("a castle --seed 3 --steps 12")
    statuses = [v["content"] for v in grid["history"]]
    previews = [a for v in grid["history"] for a in v["attachments"] if "preview" in a["filename"]]
    assert any("%" in s or "starting" in s for s in statuses)  # progress was still shown
    assert previews == [] and len(checked) == 4


async def test_age_restricted_images_stay_where_they_are_allowed(h):
    async with h.bot():
        await h.text("admin set", {"nsfw": "age_restricted"}, user=h.fake.owner_id)
        _, grid = await h.imagine("a castle --seed 3", channel_id=h.fake.nsfw_channel_id)
        job = job_id_of(grid)
        for where in ({"channel_id": h.fake.channel_id}, {"dm": True}):
            moved = await h.fake.slash("show", {"job": job}, **where)
            assert "age-restricted" in await h.refused(moved)
        mailed = await h.fake.click(grid, f"easel:dm:{job}")  # ✉️: DMs are no such place
        assert "age-restricted" in await h.refused(mailed)
        again = await h.done(
            await h.fake.slash("show", {"job": job}, channel_id=h.fake.nsfw_channel_id)
        )
        assert again["components"]  # where it was allowed, it still is


async def test_purge_deletes_every_copy_of_a_job(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        single = await h.done(await h.fake.click(grid, f"easel:u:{job}:0"))
        shown = await h.done(await h.fake.slash("show", {"job": job}))
        text = await h.text("admin purge", {"job": job}, user=h.fake.owner_id)
        assert "3 message(s) are deleted" in text
        for message in (grid, single, shown):
            assert h.fake.get_message(message["id"])["deleted"]


async def test_the_owner_deletes_a_result_and_nobody_else_can(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        other = await h.fake.click(grid, f"easel:x:{job}", user=h.fake.other_user_id)
        assert "Only the person who made" in await h.refused(other)
        assert not h.fake.get_message(grid["id"])["deleted"]
        mine = await h.fake.click(grid, f"easel:x:{job}")
        await h.fake.wait_for_message(
            lambda m: m["id"] in mine.followup_ids and "Deleted" in m["content"], timeout=WAIT
        )
    assert h.fake.get_message(grid["id"])["deleted"]
    assert all(i.deleted for i in await h.store.get_images(job))
    assert (await h.store.list_audit(action="delete"))[0].target == f"job:{job}"


async def test_a_result_sent_to_dms_with_the_envelope(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        pressed = await h.fake.click(grid, f"easel:dm:{job}", user=h.fake.other_user_id)
        dm = h.fake.dm_channel(h.fake.other_user_id)
        delivered = await h.fake.wait_for_message(
            lambda m: m["channel_id"] == dm.id and m["components"], timeout=WAIT
        )
        assert image_of(delivered).size == (128, 128)
        assert "Sent to your direct messages" in (await h.answer(pressed))["content"]
    assert (await h.store.list_audit(action="dm"))[0].target == f"job:{job}"


async def test_admin_rights_are_checked_before_anything_else(h):
    async with h.bot():
        for name, options in (
            ("admin quota", {"user": h.fake.other_user_id}),  # no daily: still "not allowed"
            ("admin set", {}),
            ("admin channel", {"action_": "allow"}),
        ):
            text = await h.text(name, options, check_permissions=False)
            assert "Only server admins" in text, (name, text)
    refusals = await h.store.list_audit(action="refuse")
    assert len(refusals) == 3 and all(e.detail["kind"] == "NotAllowed" for e in refusals)


async def test_a_dead_cli_job_is_closed_not_rerun_into_a_channel(h):
    gone = f"cli:{socket.gethostname()}:{dead_pid()}:1"  # a killed `easel imagine`
    cli = h.service(start=False, runner=gone)
    actor = Actor("discord:1", "ann", guild_id=int(h.fake.guild_id), channel_id=1)
    submission = await cli.imagine(actor, "a command-line castle --seed 3")
    cli.engine.stop()
    async with h.bot(h.service(runner=this_process("bot"))):
        await asyncio.sleep(0.5)  # resumption runs at start-up
    job = await h.store.get_job(submission.job.id)
    assert job.state is JobState.FAILED and "easel command running it stopped" in job.error
    assert job.charged_images == 0 and not public(h, "command-line castle")


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
