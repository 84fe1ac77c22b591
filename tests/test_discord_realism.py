"""Discord as it really behaves, through the stricter fake: error codes decide what delivery does
next, commands are registered once and only where they work, threads count as their channel, and
what Easel echoes is shown the way it was typed."""

from __future__ import annotations

import asyncio
import re
import tomllib
from pathlib import Path

from bot.client import EaselBot
from bot.cogs.admin import ForgetMeView
from bot.core.grammar import parse_prompt
from bot.core.text import clean_text
from tests.harness import WAIT, custom_ids, job_id_of

ROOT = Path(__file__).resolve().parents[1]


async def _job_done(h, job_id: int) -> None:
    for _ in range(300):
        if (await h.store.get_job(job_id)).state.finished:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"job #{job_id} never finished")


async def _queued(h, prompt: str):
    """/imagine with the engine stopped: the job waits at "queued"."""
    interaction = await h.fake.slash("imagine", {"prompt": prompt})
    await h.fake.wait_for_message(
        lambda m: (
            (m["id"] == interaction.original_id and "queued" in m["content"])
            or (m["id"] == interaction.original_id and "starting" in m["content"])
        ),
        timeout=WAIT,
    )
    (job,) = await h.store.unfinished_jobs()
    return interaction, job


async def test_a_refused_delivery_is_recorded_once_and_not_retried(h):
    service = h.service(start=False)
    async with h.bot(service):
        interaction, job = await _queued(h, "a castle --seed 3 --steps 20")
        h.fake.expire_token(interaction.token)  # 15 minutes pass
        h.fake.set_bot_permissions(h.fake.channel_id, view_channel=False)  # and access is lost
        service.engine.start()
        await _job_done(h, job.id)
        await asyncio.sleep(0.5)  # any retry on a progress tick would come now
    refused = [r for r in h.fake.requests if r.status == 403]
    assert len(refused) == 1  # one attempt: failures count toward Discord's invalid-request limit
    kept = await h.store.get_job(job.id)
    assert kept.state.value == "done" and "no access to the channel" in kept.delivery_error


async def test_a_result_whose_message_was_deleted_is_not_posted_again(h):
    service = h.service(start=False)
    async with h.bot(service):
        interaction, job = await _queued(h, "a castle --seed 3")
        h.fake.delete_message(interaction.original_id)  # a moderator removed it
        service.engine.start()
        await _job_done(h, job.id)
        await asyncio.sleep(0.3)
    castles = [m for m in h.fake.messages() if "castle" in m["content"]]
    assert castles == []
    assert "deleted" in (await h.store.get_job(job.id)).delivery_error


async def test_the_remake_line_copies_back_exactly(h):
    typed = "a `neon` sign over snake_case_street --sampler dpmpp_2m_karras --seed 5"
    async with h.bot():
        _, grid = await h.imagine(typed)
    line = grid["content"].splitlines()[2]
    assert "\\" not in line  # Discord shows backslashes inside code: none may be there
    inner = re.fullmatch(r"(`+) ?(.*?) ?\1", line).group(2)
    back = parse_prompt(clean_text(inner))
    assert back.prompt == "a `neon` sign over snake_case_street"
    assert back.sampler == "dpmpp_2m_karras" and back.seed == 5


async def test_links_in_prompts_are_not_unfurled(h):
    async with h.bot():
        _, grid = await h.imagine("a poster for https://example.com/launch --seed 1")
    assert "<https://example.com/launch>" in grid["content"]


async def test_commands_live_in_one_place(h):
    async with h.bot():
        pass
    assert h.fake.commands() and not h.fake.duplicate_commands()
    guild = int(h.fake.guild_id)
    development = EaselBot(
        h.service(), data_dir=h.data_dir / "dev", progress_interval=0.05, command_guild=guild
    )
    async with h.fake.run_client(development):
        pass
    assert h.fake.commands(guild)  # development mode: registered in the one server...
    # ...where, with the global ones from before, each command would now show twice: the README
    # says to clear one (sync-commands --guild ID --clear, or run without EASEL_COMMAND_GUILD).
    assert h.fake.duplicate_commands(guild)


async def test_commands_are_installed_to_servers_and_work_in_dms_but_admin(h):
    async with h.bot():
        pass
    imagine, admin = h.fake.find_command("imagine"), h.fake.find_command("admin")
    assert imagine["integration_types"] == [0]  # server install only, never a user install
    assert sorted(imagine["contexts"]) == [0, 1]  # servers and DMs with the bot
    assert admin["contexts"] == [0]


async def test_a_thread_under_an_allowed_channel_is_allowed(h):
    async with h.bot():
        owner = h.fake.owner_id
        await h.text(
            "admin channel", {"action_": "allow", "channel": h.fake.channel_id}, user=owner
        )
        thread = h.fake.set_channel(name="castles", parent_id=h.fake.channel_id)
        interaction = await h.fake.slash("imagine", {"prompt": "a castle"}, channel_id=thread.id)
        done = await h.done(interaction)
        assert done["channel_id"] == thread.id and custom_ids(done)
        forum = h.fake.set_channel(name="gallery", channel_type=15)
        text = await h.text("admin channel", {"action_": "allow", "channel": forum.id}, user=owner)
        assert f"<#{forum.id}>" in text
        post = h.fake.set_channel(name="my castle", parent_id=forum.id)
        in_post = await h.done(
            await h.fake.slash("imagine", {"prompt": "a castle"}, channel_id=post.id)
        )
        assert job_id_of(in_post)
        elsewhere = h.fake.set_channel(name="off-topic")
        refused = await h.fake.slash("imagine", {"prompt": "a castle"}, channel_id=elsewhere.id)
        assert "not enabled in this channel" in await h.refused(refused)


async def test_an_unconfirmed_forget_me_greys_its_button(h, monkeypatch):
    monkeypatch.setattr(ForgetMeView, "CONFIRM_SECONDS", 0.3)
    async with h.bot():
        asked = await h.fake.slash("forget-me")
        await asked.wait_for_response(WAIT)
        greyed = await h.fake.wait_for_message(
            lambda m: m["id"] == asked.original_id and "Not confirmed" in m["content"],
            timeout=WAIT,
        )
    (row,) = greyed["components"]
    assert all(c.get("disabled") for c in row["components"])


def test_the_discord_py_floor_is_the_one_tested():
    """pyproject's lowest discord.py is the one `make test-floor` runs the Discord tests on."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (requirement,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("discord")]
    floor = re.search(r">=\s*([\d.]+)", requirement).group(1)
    tested = re.search(r"DISCORD_FLOOR \?= discord\.py==([\d.]+)", (ROOT / "Makefile").read_text())
    assert tested.group(1).startswith(floor + ".") or tested.group(1) == floor


async def test_a_bot_in_many_servers_runs_on_the_shards_discord_asks_for(h):
    h.fake.shard_count = 2
    other = h.fake.add_guild("Another server")
    bot = EaselBot(h.service(), data_dir=h.data_dir, progress_interval=0.05)

    async def no_wait(shard_id: int | None, *, initial: bool = False) -> None:
        """Discord spaces identifies 5 s apart (max_concurrency 1); the fake does not."""

    bot.before_identify_hook = no_wait  # type: ignore[method-assign]
    async with h.fake.run_client(bot):
        assert bot.shard_count == 2 and len(bot.shards) == 2 and h.fake.identifies == 2
        assert bot.get_guild(int(other.id)) is not None  # every server, whichever shard has it
        await bot.tree.sync()
        interaction, grid = await h.imagine("a castle --seed 3")
        single = await h.done(await h.fake.click(grid, f"easel:u:{job_id_of(grid)}:0"))
    assert single["components"] and interaction.response_type == 5
    # Each interaction reaches one shard and is answered once.
    assert len(h.fake.requests_to("POST", rf"/interactions/{interaction.id}/")) == 1
