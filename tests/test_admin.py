"""Moderation: the admin use cases, then the same through /admin on the fake Discord server."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.core.admin import Admin, parse_duration
from bot.core.errors import Banned, InvalidInput, NotAllowed, NotFound, PolicyRefusal, QuotaExceeded
from bot.core.grammar import Defaults
from bot.core.models import JobState, NsfwRule
from bot.core.service import Actor, Service, ServiceConfig
from engine.worker import Engine
from tests.harness import WAIT, custom_ids, job_id_of

MOD = Actor(key="discord:9", name="mod", guild_id=100, channel_id=200, is_admin=True)
ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)


@pytest.fixture
def service(store, files, tiny_model):
    engine = Engine(tiny_model, preview_interval=0)
    engine.start()
    yield Service(store, files, engine, ServiceConfig(defaults=Defaults(steps=4)))
    engine.stop()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("12h", timedelta(hours=12)),
        ("7D", timedelta(days=7)),
        (" 2 w ", timedelta(weeks=2)),
    ],
)
def test_durations(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5", "-3d", "3y", "0m"])
def test_bad_durations(text):
    with pytest.raises(InvalidInput):
        parse_duration(text)


async def test_every_admin_action_checks_rights_and_is_audited(service, store):
    admin = Admin(service)
    for call in (
        admin.ban(ANN, "discord:2"),
        admin.set_quota(ANN, "discord:2", 5),
        admin.block(ANN, "dragons"),
        admin.queue(ANN),
        admin.stats(ANN),
        admin.audit_log(ANN),
        admin.update_settings(ANN, nsfw_rule="age_restricted"),
    ):
        with pytest.raises(NotAllowed):
            await call
    await admin.ban(MOD, "discord:1", reason="spam", duration="1h")
    with pytest.raises(Banned, match=r"until .* UTC: spam"):
        await service.imagine(ANN, "a fox")
    await admin.unban(MOD, "discord:1")
    await admin.set_quota(MOD, "discord:1", 4)
    await service.finish(await service.imagine(ANN, "a fox"))
    with pytest.raises(QuotaExceeded):
        await service.imagine(ANN, "another")
    with pytest.raises(InvalidInput, match="Only the operator"):
        await admin.set_quota(MOD, "discord:1", 4, reset_usage=True)
    operator = Actor(key="local:owner", name="owner", is_admin=True)
    await admin.set_quota(operator, "discord:1", None, reset_usage=True)
    await service.imagine(ANN, "after the reset")
    actions = [e.action for e in await store.list_audit(guild_id=100, limit=50)]
    assert {"ban", "unban", "quota"} <= set(actions) and "refuse" in actions
    with pytest.raises(InvalidInput, match="cannot ban yourself"):
        await admin.ban(MOD, MOD.key)


async def test_blocklist_with_wildcards(service):
    admin = Admin(service)
    await admin.block(MOD, "drag*n")
    with pytest.raises(InvalidInput, match="already on the blocklist"):
        await admin.block(MOD, "DRAG*N")
    with pytest.raises(InvalidInput):
        await admin.block(MOD, "*")
    with pytest.raises(PolicyRefusal, match="blocked"):
        await service.imagine(ANN, "a red dragon")
    await service.imagine(ANN, "a drag race --count 1")
    other_server = Actor(key="discord:1", name="ann", guild_id=555)
    await service.imagine(other_server, "a red dragon --count 1")  # blocklists are per server
    assert [e.term for e in await admin.blocklist(MOD)] == ["drag*n"]
    await admin.unblock(MOD, "drag*n")
    with pytest.raises(NotFound):
        await admin.unblock(MOD, "drag*n")


async def test_queue_cancel_purge_and_stats(service, store, files):
    admin = Admin(service)
    done = await service.finish(await service.imagine(ANN, "a fox --seed 1"))
    paths = [files.path(i.path) for i in done.images]
    assert all(p.exists() for p in paths)
    purged, _messages = await admin.purge(MOD, done.job.id, reason="rule 3")
    assert all(not p.exists() for p in paths)
    assert all(i.deleted for i in await store.get_images(purged.id))
    stats = await admin.stats(MOD)
    assert stats.jobs_today == 1 and stats.images_today == 4 and stats.p95_seconds is not None
    events = await admin.audit_log(MOD)
    assert events[0].action == "purge" and events[0].reason == "rule 3"
    with pytest.raises(NotFound, match="on this server"):
        await admin.purge(Actor(key="discord:9", name="m", guild_id=7, is_admin=True), done.job.id)


async def test_server_settings_are_checked(service):
    admin = Admin(service)
    updated = await admin.update_settings(
        MOD,
        nsfw_rule="age_restricted",
        aspect="16:9",
        sampler="DDIM",
        max_steps=20,
        allowed_channel_ids={200, 201},
        blur_flagged=True,
    )
    assert updated.nsfw_rule is NsfwRule.AGE_RESTRICTED and updated.sampler == "ddim"
    assert updated.allowed_channel_ids == (200, 201)
    with pytest.raises(InvalidInput, match="block' or 'age_restricted"):
        await admin.update_settings(MOD, nsfw_rule="sometimes")
    with pytest.raises(InvalidInput, match="Max steps goes from 1 to 50"):
        await admin.update_settings(MOD, max_steps=99)
    with pytest.raises(InvalidInput, match="no server setting"):
        await admin.update_settings(MOD, colour="red")


async def test_admin_cancel(store, files, tiny_model):
    engine = Engine(tiny_model)  # not started: the job waits
    service = Service(store, files, engine, ServiceConfig())
    submission = await service.imagine(ANN, "a fox")
    entries = await Admin(service).queue(MOD)
    assert [(e.job.id, e.position, e.user.key) for e in entries] == [
        (submission.job.id, 0, "discord:1")
    ]
    await Admin(service).cancel(MOD, submission.job.id, reason="wrong channel")
    assert (await store.get_job(submission.job.id)).state is JobState.CANCELLED


# -- through Discord ---------------------------------------------------------------------------


async def slash_text(h, name, options=None, **kw) -> str:
    interaction = await h.fake.slash(name, options or {}, **kw)
    message = await interaction.wait_for_followup(timeout=WAIT)
    return message["content"]


async def test_a_normal_member_calling_admin_ban_is_refused(h):
    async with h.bot():
        # The fake delivers the command although its permission hint says Manage Server,
        # as Discord does when a server admin overrides the hint.
        text = await slash_text(
            h,
            "admin ban",
            {"user": h.fake.other_user_id},
            user=h.fake.user_id,
            check_permissions=False,
        )
    assert "Only server admins" in text
    assert await h.store.find_user(f"discord:{h.fake.other_user_id}") is None
    assert all(e.action != "ban" for e in await h.store.list_audit(limit=50))


async def test_an_admins_ban_blocks_the_next_imagine(h):
    async with h.bot():
        text = await slash_text(
            h, "admin ban", {"user": h.fake.user_id, "reason": "spam"}, user=h.fake.owner_id
        )
        assert "is banned" in text
        interaction = await h.fake.slash("imagine", {"prompt": "a fox"}, user=h.fake.user_id)
        refused = await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "❌" in m["content"], timeout=WAIT
        )
    assert "banned from using Easel on this server: spam" in refused["content"]
    assert await h.store.count_jobs() == 0


async def test_purge_removes_files_and_the_message(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        job = job_id_of(grid)
        paths = [h.files.path(i.path) for i in await h.store.get_images(job)]
        text = await slash_text(h, "admin purge", {"job": job}, user=h.fake.owner_id)
        assert "purged" in text
    assert h.fake.get_message(grid["id"])["deleted"]
    assert not any(p.exists() for p in paths)


async def test_nsfw_prompts_follow_the_server_rule_and_the_channel(h):
    async with h.bot():

        async def imagine(channel):
            interaction = await h.fake.slash(
                "imagine", {"prompt": "a nude figure study --seed 1"}, channel_id=channel
            )
            return await h.fake.wait_for_message(
                lambda m: (
                    m["id"] == interaction.original_id and ("❌" in m["content"] or m["components"])
                ),
                timeout=WAIT,
            )

        assert "age-restricted" in (await imagine(h.fake.channel_id))["content"]
        assert "❌" in (await imagine(h.fake.nsfw_channel_id))["content"]  # default: block
        await slash_text(h, "admin set", {"nsfw": "age_restricted"}, user=h.fake.owner_id)
        assert "❌" in (await imagine(h.fake.channel_id))["content"]
        allowed = await imagine(h.fake.nsfw_channel_id)
        assert allowed["components"]
    refusals = [e for e in await h.store.list_audit(limit=50) if e.action == "refuse"]
    assert len(refusals) == 3 and all(e.detail["category"] == "nsfw" for e in refusals)


async def test_hard_limits_hold_even_in_age_restricted_channels(h):
    async with h.bot():
        await slash_text(h, "admin set", {"nsfw": "age_restricted"}, user=h.fake.owner_id)
        interaction = await h.fake.slash(
            "imagine", {"prompt": "n.u.d.e 12yo girl"}, channel_id=h.fake.nsfw_channel_id
        )
        refused = await h.fake.wait_for_message(
            lambda m: m["id"] == interaction.original_id and "❌" in m["content"], timeout=WAIT
        )
    assert "minors" in refused["content"]
    (event,) = [e for e in await h.store.list_audit(limit=50) if e.action == "refuse"]
    assert event.detail["hard"] is True


async def test_forget_me_after_confirmation(h):
    async with h.bot():
        _, grid = await h.imagine("a castle --seed 3")
        paths = [h.files.path(i.path) for i in await h.store.get_images(job_id_of(grid))]
        asked = await h.fake.slash("forget-me")
        await asked.wait_for_response(WAIT)
        prompt = asked.original
        assert "cannot be undone" in prompt["content"]
        (button,) = custom_ids(prompt)
        confirmed = await h.fake.click(prompt, button, user=h.fake.user_id)
        await h.fake.wait_for_message(
            lambda m: m["id"] == prompt["id"] and "deleted" in m["content"], timeout=WAIT
        )
        assert confirmed.responded
    user = await h.store.find_user(f"discord:{h.fake.user_id}")
    assert user.name == "" and await h.store.list_jobs(user_id=user.id) == []
    assert not any(p.exists() for p in paths)


async def test_admin_stats_queue_and_audit_through_discord(h):
    async with h.bot():
        await h.imagine("a castle --seed 3")
        stats = await slash_text(h, "admin stats", user=h.fake.owner_id)
        assert "1 jobs" in stats and "4 images" in stats and "p95" in stats
        assert "Engine**: running" in stats
        await slash_text(h, "admin block", {"term": "drag*n"}, user=h.fake.owner_id)
        audit = await slash_text(h, "admin audit", user=h.fake.owner_id)
        assert "blocklist_add" in audit
        queue = await slash_text(h, "admin queue", user=h.fake.owner_id)
        assert "Nothing is waiting" in queue


async def test_the_rest_of_admin_through_discord(h):
    async def say(name, options=None):
        return await slash_text(h, name, options or {}, user=h.fake.owner_id)

    user = h.fake.user_id
    async with h.bot():
        assert "is banned" in await say("admin ban", {"user": user, "duration": "2h"})
        assert "may use Easel again" in await say("admin unban", {"user": user})
        assert "not banned" in await say("admin unban", {"user": user})
        assert "may make 12 images a day here" in await say(
            "admin quota", {"user": user, "daily": 12}
        )
        assert "may make 200 images a day here" in await say(
            "admin quota", {"user": user, "default": True}
        )
        assert "at most 200 images" in await say("admin quota", {"user": user, "daily": 999})
        assert "Blocked `drag*n`" in await say("admin block", {"term": "Drag*n"})
        assert "`drag*n`" in await say("admin blocklist")
        assert "Unblocked" in await say("admin unblock", {"term": "drag*n"})
        assert "empty" in await say("admin blocklist")
        shown = await say("admin channel", {"action_": "allow", "channel": h.fake.channel_id})
        assert f"<#{h.fake.channel_id}>" in shown
        assert "every channel" in await say("admin channel", {"action_": "everywhere"})
        role = await say("admin role", {"action_": "add", "role": h.fake.admin_role_id})
        assert f"<@&{h.fake.admin_role_id}>" in role
        assert "NSFW: blocked" in await say("admin settings")
        assert "1:4 to 4:1" in await say("admin set", {"aspect": "9:1"})
        assert "no job #999" in await say("admin cancel", {"job": 999})


async def test_a_server_admin_acts_on_their_own_server_only(service, store):
    admin = Admin(service)
    elsewhere = Actor(key="discord:66", name="other admin", guild_id=999, is_admin=True)
    # Someone who invites the bot to their own server is an admin there, not here.
    assert await admin.set_quota(elsewhere, "discord:1", 0) == 0
    await admin.ban(elsewhere, "discord:1", reason="not here")
    job = await service.finish(await service.imagine(ANN, "a fox --count 1"))
    assert job.job.state is JobState.DONE  # ANN's own server is unaffected
    with pytest.raises(Banned, match="on this server"):
        await service.imagine(Actor(key="discord:1", name="ann", guild_id=999), "a fox")
    with pytest.raises(NotFound):
        await service.cancel(elsewhere, job.job.id)
    with pytest.raises(InvalidInput, match="at most 200 images"):
        await admin.set_quota(elsewhere, "discord:66", 100_000)
    with pytest.raises(InvalidInput, match="0 to this installation's 200"):
        await admin.update_settings(elsewhere, daily_images_per_user=5000)
    operator = Actor(key="local:owner", name="owner", is_admin=True)
    await admin.ban(operator, "discord:1", reason="everywhere")
    with pytest.raises(Banned, match="everywhere"):
        await service.imagine(ANN, "a fox")
