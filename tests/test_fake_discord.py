"""A real discord.py bot (commands.Bot + app_commands tree) against tests.fake_discord."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fake_discord import FakeDiscord

pytestmark = pytest.mark.e2e

WAIT = 5.0  # seconds; every wait in these tests is bounded


def make_png(width: int, height: int) -> bytes:
    """A valid RGB PNG of the given size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


PNG = make_png(3, 2)


# --------------------------------------------------------------------------------------------
# A tiny bot
# --------------------------------------------------------------------------------------------


class AgainView(discord.ui.View):
    def __init__(self, bot: DemoBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    @discord.ui.button(label="Again", style=discord.ButtonStyle.primary, custom_id="demo:again")
    async def again(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.bot.clicks.put_nowait(interaction.user.id)
        await interaction.response.send_message("Again it is", ephemeral=True)


class PromptModal(discord.ui.Modal, title="Edit the prompt"):
    prompt: discord.ui.TextInput = discord.ui.TextInput(label="Prompt", custom_id="demo:prompt")

    def __init__(self, bot: DemoBot) -> None:
        super().__init__(timeout=None)
        self.bot = bot

    async def on_submit(self, interaction: discord.Interaction) -> None:
        self.bot.submissions.put_nowait(self.prompt.value)
        await interaction.response.send_message(f"New prompt: {self.prompt.value}")


@app_commands.command(description="Paint a picture")
async def imagine(interaction: discord.Interaction[DemoBot], prompt: str) -> None:
    bot = interaction.client
    await interaction.response.defer(thinking=True)
    if bot.hold is not None:  # lets a test act between the defer and the follow-up
        await bot.hold.wait()
    try:
        await interaction.followup.send(
            f"**{prompt}**",
            file=discord.File(io.BytesIO(bot.image), filename="easel.png"),
            view=AgainView(bot),
            suppress_embeds="://" in prompt,  # a prompt's links are not previewed
        )
    except discord.HTTPException as exc:
        bot.followup_errors.put_nowait(exc)


@app_commands.command(description="Answer after a while")
async def slow(interaction: discord.Interaction[DemoBot]) -> None:
    await asyncio.sleep(interaction.client.response_wait)
    try:
        await interaction.response.send_message("finally")
    except discord.HTTPException as exc:
        interaction.client.followup_errors.put_nowait(exc)


@app_commands.command(description="Defer, then follow up three times")
async def reveal(interaction: discord.Interaction[DemoBot], hidden: bool) -> None:
    """Defers (ephemeral when `hidden`), then follows up asking for the opposite visibility,
    then publicly, then ephemerally."""
    await interaction.response.defer(ephemeral=hidden, thinking=True)
    followup = interaction.followup
    first = await followup.send("first", ephemeral=not hidden, wait=True)
    await followup.send("second", wait=True)
    await followup.send("third", ephemeral=True, wait=True)
    interaction.client.sent.put_nowait(first)


@app_commands.command(description="Change the prompt")
async def reprompt(interaction: discord.Interaction[DemoBot]) -> None:
    await interaction.response.send_modal(PromptModal(interaction.client))


@app_commands.command(description="Measure an image")
async def measure(interaction: discord.Interaction, image: discord.Attachment) -> None:
    data = await image.read()
    await interaction.response.send_message(
        f"{image.filename}: {len(data)} bytes, {image.width}x{image.height}", ephemeral=True
    )


settings = app_commands.Group(
    name="settings",
    description="Server settings",
    default_permissions=discord.Permissions(manage_guild=True),
)


@settings.command(name="show", description="Show the settings")
async def settings_show(interaction: discord.Interaction) -> None:
    perms = interaction.permissions
    await interaction.response.send_message(f"manage_guild={perms.manage_guild}")


@app_commands.command(description="Are you there?")
async def ping(interaction: discord.Interaction) -> None:
    where = "DM" if interaction.guild is None else "guild"
    await interaction.response.send_message(f"pong ({where})")


class DemoBot(commands.Bot):
    def __init__(self, guild_id: str, **options: Any) -> None:
        intents = discord.Intents.default()
        # default() already leaves the privileged intents out; the fake refuses them too.
        intents.members = intents.presences = intents.message_content = False
        super().__init__(command_prefix=commands.when_mentioned, intents=intents, **options)
        self.home = discord.Object(int(guild_id))
        self.clicks: asyncio.Queue[int] = asyncio.Queue()
        self.submissions: asyncio.Queue[str] = asyncio.Queue()
        self.followup_errors: asyncio.Queue[discord.HTTPException] = asyncio.Queue()
        self.seen: asyncio.Queue[discord.Interaction] = asyncio.Queue()
        self.sent: asyncio.Queue[discord.WebhookMessage] = asyncio.Queue()
        self.hold: asyncio.Event | None = None
        self.image = PNG
        self.response_wait = 0.0

    async def setup_hook(self) -> None:
        for command in (imagine, reprompt, measure, settings, slow, reveal):
            self.tree.add_command(command, guild=self.home)
        self.tree.add_command(ping)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        self.seen.put_nowait(interaction)

    async def sync_all(self) -> None:
        await self.tree.sync(guild=self.home)
        await self.tree.sync()


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


@pytest.fixture
async def no_leaked_tasks() -> AsyncIterator[None]:
    before = asyncio.all_tasks()
    yield
    await asyncio.sleep(0)  # let finished tasks be reaped
    leaked = [t for t in asyncio.all_tasks() - before - {asyncio.current_task()} if not t.done()]
    assert not leaked, f"tasks left running: {leaked}"


@pytest.fixture
async def fake(no_leaked_tasks: None) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake
        # Every test below answers its interactions within Discord's 3 s.
        assert not fake.late_responses


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[DemoBot]:
    async with fake.run_client(DemoBot(fake.guild_id)) as bot:
        await bot.sync_all()
        yield bot


def general(fake: FakeDiscord, bot: DemoBot) -> discord.TextChannel:
    """The bot's view of the fake's default text channel."""
    channel = bot.get_channel(int(fake.channel_id))
    assert isinstance(channel, discord.TextChannel)
    return channel


async def imagine_and_wait(fake: FakeDiscord, prompt: str) -> dict:
    interaction = await fake.slash("imagine", {"prompt": prompt})
    return await interaction.wait_for_followup(timeout=WAIT)


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------


async def test_bot_connects_and_sees_the_guild(fake: FakeDiscord, bot: DemoBot) -> None:
    assert bot.user is not None and bot.user.id == int(fake.bot_id)
    assert bot.application_id == int(fake.application_id)
    guild = bot.get_guild(int(fake.guild_id))
    assert guild is not None and guild.owner_id == int(fake.owner_id)
    general = guild.get_channel(int(fake.channel_id))
    nsfw = guild.get_channel(int(fake.nsfw_channel_id))
    assert isinstance(general, discord.TextChannel) and not general.is_nsfw()
    assert isinstance(nsfw, discord.TextChannel) and nsfw.is_nsfw()
    admin_role = guild.get_role(int(fake.admin_role_id))
    assert admin_role is not None and admin_role.permissions.manage_guild
    assert guild.default_role.id == guild.id
    assert guild.me is not None
    # A plain Client dials DEFAULT_GATEWAY and asks for zlib-stream transport compression.
    assert fake.identifies == 1
    assert "compress=zlib-stream" in fake.gateway_urls[0]
    assert not fake.unhandled


async def test_tree_sync_stores_guild_commands(fake: FakeDiscord, bot: DemoBot) -> None:
    names = {c["name"] for c in fake.commands(fake.guild_id)}
    assert names == {"imagine", "reprompt", "measure", "settings", "slow", "reveal"}
    assert [c["name"] for c in fake.commands()] == ["ping"]
    assert fake.command_writes == 2  # one bulk PUT per scope
    imagine_id = fake.find_command("imagine", fake.guild_id)["id"]

    synced = await bot.tree.sync(guild=bot.home)
    assert fake.command_writes == 3
    # Overwriting under the same name keeps the command id, as Discord does.
    assert {c.name: c.id for c in synced}["imagine"] == int(imagine_id)
    settings_def = fake.find_command("settings", fake.guild_id)
    assert settings_def["default_member_permissions"] == str(0x20)
    assert settings_def["options"][0]["name"] == "show"


async def test_slash_defer_then_followup_with_file(fake: FakeDiscord, bot: DemoBot) -> None:
    interaction = await fake.slash("imagine", {"prompt": "a red fox"})
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.response_type == 5  # DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE
    message = await interaction.wait_for_followup(timeout=WAIT)

    # The first follow-up after a defer resolves the "thinking" message itself.
    assert message["id"] == interaction.original_id
    assert message["interaction_token"] == interaction.token
    assert message["content"] == "**a red fox**"
    assert message["history"][0]["flags"] & 128  # LOADING
    assert not message["flags"] & (128 | 64)
    (attachment,) = message["attachments"]
    assert attachment["filename"] == "easel.png"
    assert attachment["content_type"] == "image/png"
    assert (attachment["width"], attachment["height"]) == (3, 2)
    assert attachment["data"] == PNG
    buttons = message["components"][0]["components"]
    assert [b["custom_id"] for b in buttons] == ["demo:again"]

    async with aiohttp.ClientSession() as http, http.get(attachment["url"]) as response:
        assert response.status == 200
        assert await response.read() == PNG

    callback = fake.requests_to("POST", r"/callback$")[0]
    assert callback.query == {"with_response": "1"}
    follow_up = fake.requests_to("POST", r"^/webhooks/")[0]
    assert follow_up.body["files"][0]["filename"] == "easel.png"


async def test_button_click_reaches_the_bot(fake: FakeDiscord, bot: DemoBot) -> None:
    message = await imagine_and_wait(fake, "a lighthouse")
    click = await fake.click(message, "demo:again", user=fake.other_user)

    assert await asyncio.wait_for(bot.clicks.get(), WAIT) == int(fake.other_user_id)
    await click.wait_for_response(timeout=WAIT)
    assert click.response_type == 4
    reply = click.original
    assert reply is not None and reply["content"] == "Again it is"
    assert reply["flags"] & 64  # ephemeral
    assert click.payload["message"]["id"] == message["id"]


async def test_modal_submit_reaches_the_bot(fake: FakeDiscord, bot: DemoBot) -> None:
    opened = await fake.slash("reprompt")
    await opened.wait_for_response(timeout=WAIT)
    assert opened.response_type == 9 and opened.response_data is not None
    assert opened.response_data["title"] == "Edit the prompt"

    submit = await fake.submit_modal(opened.response_data["custom_id"], {"demo:prompt": "a heron"})
    assert await asyncio.wait_for(bot.submissions.get(), WAIT) == "a heron"
    await submit.wait_for_response(timeout=WAIT)
    assert submit.original is not None
    assert submit.original["content"] == "New prompt: a heron"


async def test_rate_limited_followup_is_retried(fake: FakeDiscord, bot: DemoBot) -> None:
    fake.fail_next("POST", r"^/webhooks/\d+/[^/]+$", status=429, retry_after=0.05)
    message = await imagine_and_wait(fake, "rain")

    assert message["attachments"][0]["data"] == PNG
    assert len(fake.rate_limits_served) == 1
    statuses = [r.status for r in fake.requests_to("POST", r"^/webhooks/")]
    assert statuses == [429, 200]


async def test_expired_token_fails_the_followup(fake: FakeDiscord, bot: DemoBot) -> None:
    bot.hold = asyncio.Event()
    interaction = await fake.slash("imagine", {"prompt": "too late"})
    await interaction.wait_for_response(timeout=WAIT)
    fake.expire_token(interaction.token)
    bot.hold.set()

    error = await asyncio.wait_for(bot.followup_errors.get(), WAIT)
    assert isinstance(error, discord.HTTPException)
    assert (error.status, error.code) == (401, 50027)
    assert interaction.original is not None and interaction.original["flags"] & 128


async def test_restarted_bot_reconnects_to_the_same_fake(fake: FakeDiscord) -> None:
    async with fake.run_client(DemoBot(fake.guild_id)) as first:
        await first.sync_all()
        before = await imagine_and_wait(fake, "first run")
    assert first.is_closed()

    async with fake.run_client(DemoBot(fake.guild_id)) as second:
        await second.sync_all()
        after = await imagine_and_wait(fake, "second run")

    assert fake.identifies == 2
    assert fake.get_message(before["id"]) is before  # the fake kept its messages
    assert [m["content"] for m in fake.messages(fake.channel_id)] == [
        "**first run**",
        "**second run**",
    ]
    assert int(after["id"]) > int(before["id"])


async def test_attachment_option_is_resolved(fake: FakeDiscord, bot: DemoBot) -> None:
    upload = fake.add_attachment(PNG, "input.png")
    interaction = await fake.slash("measure", {"image": upload})
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.original is not None
    assert interaction.original["content"] == f"input.png: {len(PNG)} bytes, 3x2"


async def test_subcommand_permissions(fake: FakeDiscord, bot: DemoBot) -> None:
    with pytest.raises(PermissionError):
        await fake.slash("settings show", user=fake.user)

    carol = fake.add_user("carol", admin=True)  # Admin role, not the owner
    interaction = await fake.slash("settings show", user=carol)
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.original is not None
    assert interaction.original["content"] == "manage_guild=True"


async def test_dm_interaction(fake: FakeDiscord, bot: DemoBot) -> None:
    with pytest.raises(PermissionError):  # guild commands do not exist in DMs
        await fake.slash("imagine", {"prompt": "x"}, dm=True)
    interaction = await fake.slash("ping", dm=True)
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.guild_id is None
    assert interaction.original is not None and interaction.original["content"] == "pong (DM)"


async def test_gateway_drop_is_resumed(fake: FakeDiscord, bot: DemoBot) -> None:
    resumed = asyncio.create_task(bot.wait_for("resumed", timeout=WAIT))
    await fake.disconnect_gateway(code=4000)
    await resumed
    assert fake.resumes == 1
    assert fake.gateway_urls[-1].startswith(fake.resume_gateway_url)
    message = await imagine_and_wait(fake, "after the storm")
    assert message["content"] == "**after the storm**"


async def test_unknown_routes_are_recorded(fake: FakeDiscord, bot: DemoBot) -> None:
    with pytest.raises(discord.NotFound):
        await bot.http.request(discord.http.Route("GET", "/stickers/{id}", id=1))
    assert [(r.method, r.path) for r in fake.unhandled] == [("GET", "/stickers/1")]


async def test_channel_messages_round_trip(fake: FakeDiscord, bot: DemoBot) -> None:
    channel = general(fake, bot)
    echoed = asyncio.create_task(
        bot.wait_for("message", check=lambda m: m.content == "hello", timeout=WAIT)
    )
    sent = await channel.send("hello", file=discord.File(io.BytesIO(PNG), filename="a.png"))
    assert (await echoed).id == sent.id  # MESSAGE_CREATE came back over the gateway
    stored = fake.get_message(sent.id)
    assert stored is not None and stored["attachments"][0]["data"] == PNG

    await sent.edit(content="hello again", attachments=[])
    edited = await fake.wait_for_edit(sent.id, timeout=WAIT)
    assert edited["attachments"] == []
    assert [version["content"] for version in edited["history"]] == ["hello", "hello again"]
    assert (await channel.fetch_message(sent.id)).content == "hello again"
    assert [m.id async for m in channel.history(limit=10)] == [sent.id]

    await sent.delete()
    assert edited["deleted"]
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(sent.id)


async def test_privileged_intents_are_refused(fake: FakeDiscord) -> None:
    greedy = commands.Bot(command_prefix="!", intents=discord.Intents.all())
    with pytest.raises(discord.PrivilegedIntentsRequired):
        async with fake.run_client(greedy):
            pass
    assert greedy.is_closed()


# --------------------------------------------------------------------------------------------
# What the fake enforces as Discord does
# --------------------------------------------------------------------------------------------


async def test_a_response_after_the_deadline_is_refused_and_recorded(
    no_leaked_tasks: None,
) -> None:
    fake = FakeDiscord(response_deadline=0.2)
    async with fake, fake.run_client(DemoBot(fake.guild_id)) as bot:
        await bot.sync_all()
        bot.response_wait = 0.5
        interaction = await fake.slash("slow")

        error = await asyncio.wait_for(bot.followup_errors.get(), WAIT)
        assert isinstance(error, discord.NotFound)
        assert error.code == 10062  # Unknown interaction
        assert fake.late_responses == [interaction]
        assert interaction.late and not interaction.responded
        assert interaction.response_delay is not None and interaction.response_delay > 0.2
        assert not fake.messages(fake.channel_id)


async def test_a_deferral_decides_the_visibility_of_its_first_followup(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    hidden = await fake.slash("reveal", {"hidden": True})
    await hidden.wait_for_followup(lambda m: m["content"] == "third", timeout=WAIT)
    first, second, third = hidden.followups
    assert first["id"] == hidden.original_id  # the follow-up resolved the "thinking" message
    assert [fake.is_ephemeral(m) for m in (first, second, third)] == [True, False, True]
    assert fake.ephemeral_for(first) == fake.user_id
    assert fake.ephemeral_for(second) is None
    seen_by_bob = fake.messages(fake.channel_id, visible_to=fake.other_user)
    assert [m["content"] for m in seen_by_bob] == ["second"]

    shown = await fake.slash("reveal", {"hidden": False})
    await shown.wait_for_followup(lambda m: m["content"] == "third", timeout=WAIT)
    # The first follow-up asked to be ephemeral, but a public defer keeps it public.
    assert [fake.is_ephemeral(m) for m in shown.followups] == [False, False, True]


async def test_ephemeral_messages_are_reachable_only_through_the_interaction_webhook(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    await fake.slash("reveal", {"hidden": True})
    first = await asyncio.wait_for(bot.sent.get(), WAIT)
    channel = general(fake, bot)

    with pytest.raises(discord.NotFound) as fetched:
        await channel.fetch_message(first.id)
    assert fetched.value.code == 10008
    with pytest.raises(discord.NotFound):
        await channel.get_partial_message(first.id).edit(content="by bot token")
    with pytest.raises(discord.NotFound):
        await channel.get_partial_message(first.id).delete()

    await first.edit(content="by interaction token")
    assert fake.get_message(first.id)["content"] == "by interaction token"
    with pytest.raises(ValueError):  # a moderator never sees someone else's ephemeral message
        fake.delete_message(first.id)


async def test_the_bot_needs_channel_permissions_to_post_but_not_to_respond(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    channel = general(fake, bot)
    assert channel.guild.me is not None
    updated = asyncio.create_task(bot.wait_for("guild_channel_update", timeout=WAIT))
    fake.set_bot_permissions(fake.channel_id, send_messages=False)
    await updated
    assert not channel.permissions_for(channel.guild.me).send_messages

    with pytest.raises(discord.Forbidden) as refused:
        await channel.send("hello")
    assert refused.value.code == 50013  # Missing Permissions

    # An interaction in the same channel is answered through its webhook all the same.
    message = await imagine_and_wait(fake, "still allowed")
    assert message["content"] == "**still allowed**"
    seen = await asyncio.wait_for(bot.seen.get(), WAIT)
    assert seen.app_permissions.send_messages is False  # the interaction says so, too

    fake.set_bot_permissions(fake.channel_id, view_channel=False)
    with pytest.raises(discord.Forbidden) as hidden:
        await channel.send("hello")
    assert hidden.value.code == 50001  # Missing Access


async def test_files_embeds_and_history_need_their_own_permissions(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    channel = general(fake, bot)
    earlier = await channel.send("earlier")
    fake.set_bot_permissions(
        fake.channel_id, attach_files=False, embed_links=False, read_message_history=False
    )

    with pytest.raises(discord.Forbidden) as no_files:
        await channel.send(file=discord.File(io.BytesIO(PNG), filename="a.png"))
    assert no_files.value.code == 50013
    with pytest.raises(discord.Forbidden):  # an embed-only message would be empty
        await channel.send(embed=discord.Embed(title="card"))
    text = await channel.send("text", embed=discord.Embed(title="card"))
    assert fake.get_message(text.id)["embeds"] == []  # the embed is dropped

    assert [m async for m in channel.history(limit=10)] == []
    with pytest.raises(discord.Forbidden):
        await channel.fetch_message(earlier.id)


async def test_a_dm_to_a_user_who_refuses_them_fails(fake: FakeDiscord, bot: DemoBot) -> None:
    alice = await bot.fetch_user(int(fake.user_id))
    await alice.send("welcome")
    fake.set_accepts_dms(fake.user, False)
    with pytest.raises(discord.Forbidden) as refused:
        await alice.send("welcome again")
    assert refused.value.code == 50007  # Cannot send messages to this user

    stranger = fake.add_user("dora", join=False)  # shares no guild with the bot
    with pytest.raises(discord.Forbidden):
        await (await bot.fetch_user(int(stranger.id))).send("hi")

    # A slash command in that DM is still answered (interaction responses need no DM rights).
    interaction = await fake.slash("ping", dm=True)
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.original is not None and interaction.original["content"] == "pong (DM)"


@app_commands.command(description="Only in DMs")
@app_commands.allowed_contexts(guilds=False, dms=True, private_channels=False)
async def dm_only(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("dm")


@app_commands.command(description="Only for user installs")
@app_commands.allowed_installs(guilds=False, users=True)
async def user_only(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("mine")


async def test_command_contexts_and_duplicates(fake: FakeDiscord, bot: DemoBot) -> None:
    bot.tree.add_command(dm_only)
    bot.tree.add_command(user_only)
    bot.tree.add_command(ping, guild=bot.home)  # now both global and in the guild
    await bot.sync_all()

    assert fake.duplicate_commands() == ["ping"]
    in_guild = [c["name"] for c in fake.visible_commands()]
    assert in_guild.count("ping") == 2 and "dm_only" not in in_guild
    assert {c["name"] for c in fake.visible_commands(dm=True)} == {"ping", "dm_only"}

    with pytest.raises(PermissionError, match="not available in a guild"):
        await fake.slash("dm_only", check_permissions=False)
    with pytest.raises(PermissionError, match="integration_types"):
        await fake.slash("user_only", dm=True)
    interaction = await fake.slash("dm_only", dm=True)
    await interaction.wait_for_response(timeout=WAIT)
    assert interaction.payload["context"] == 1  # BOT_DM


async def test_uploads_over_the_guild_limit_are_refused(fake: FakeDiscord, bot: DemoBot) -> None:
    assert fake.set_upload_limit(1024) == 1024
    bot.image = bytes(2048)
    await fake.slash("imagine", {"prompt": "too big"})
    error = await asyncio.wait_for(bot.followup_errors.get(), WAIT)
    assert (error.status, error.code) == (413, 40005)
    seen = await asyncio.wait_for(bot.seen.get(), WAIT)
    assert seen.filesize_limit == 1024  # sent as the interaction's attachment_size_limit

    boosted = asyncio.create_task(bot.wait_for("guild_update", timeout=WAIT))
    assert fake.set_upload_limit(premium_tier=2) == 50 * 1024 * 1024
    await boosted
    guild = bot.get_guild(int(fake.guild_id))
    assert guild is not None and guild.filesize_limit == 50 * 1024 * 1024
    message = await imagine_and_wait(fake, "fits now")
    assert message["attachments"][0]["size"] == 2048


async def test_deleted_messages_are_unknown_by_either_token(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    channel = general(fake, bot)
    posted = await channel.send("progress 10%")
    fake.delete_message(posted.id)
    with pytest.raises(discord.NotFound) as edit:
        await posted.edit(content="progress 20%")
    assert edit.value.code == 10008
    with pytest.raises(discord.NotFound):
        await channel.fetch_message(posted.id)

    await imagine_and_wait(fake, "a moth")
    interaction = await asyncio.wait_for(bot.seen.get(), WAIT)
    fake.delete_message(fake.interactions[-1].original_id or "")
    with pytest.raises(discord.NotFound) as webhook_edit:
        await interaction.edit_original_response(content="edited")
    assert webhook_edit.value.code == 10008

    # A "thinking" message deleted before the follow-up takes the follow-up down with it.
    bot.hold = asyncio.Event()
    thinking = await fake.slash("imagine", {"prompt": "gone"})
    await thinking.wait_for_response(timeout=WAIT)
    fake.delete_message(thinking.original_id or "")
    bot.hold.set()
    error = await asyncio.wait_for(bot.followup_errors.get(), WAIT)
    assert isinstance(error, discord.NotFound) and error.code == 10008


async def test_message_flags_are_stored_as_sent(fake: FakeDiscord, bot: DemoBot) -> None:
    message = await imagine_and_wait(fake, "a map of https://example.com")
    assert message["flags"] & 4  # SUPPRESS_EMBEDS, set on the follow-up that resolved the defer

    channel = general(fake, bot)
    plain = await channel.send("see https://example.com", suppress_embeds=True)
    assert fake.get_message(plain.id)["flags"] == 4
    # EPHEMERAL and LOADING are not a channel message's to set.
    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=channel.id)
    raw = await bot.http.request(route, json={"content": "x", "flags": 4 | 64 | 128})
    assert fake.get_message(raw["id"])["flags"] == 4


async def test_threads_and_forum_posts_reach_the_bot_as_threads(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    created = asyncio.create_task(bot.wait_for("thread_create", timeout=WAIT))
    thread = fake.set_channel(name="cats", parent_id=fake.channel_id)
    assert (await created).id == int(thread.id)

    message = await fake.slash("imagine", {"prompt": "a cat"}, channel_id=thread.id)
    posted = await message.wait_for_followup(timeout=WAIT)
    assert posted["channel_id"] == thread.id
    seen = await asyncio.wait_for(bot.seen.get(), WAIT)
    assert isinstance(seen.channel, discord.Thread)
    assert seen.channel.parent_id == int(fake.channel_id)

    forum = fake.set_channel(name="gallery", channel_type=15)
    post = fake.set_channel(name="show your art", parent_id=forum.id)
    starter = fake.get_message(post.id)
    assert starter is not None and starter["author"]["id"] == fake.user_id
    await fake.slash("ping", channel_id=post.id)
    seen = await asyncio.wait_for(bot.seen.get(), WAIT)
    assert isinstance(seen.channel, discord.Thread)
    assert isinstance(seen.channel.parent, discord.ForumChannel)

    route = discord.http.Route("POST", "/channels/{channel_id}/messages", channel_id=forum.id)
    with pytest.raises(discord.HTTPException) as into_forum:
        await bot.http.request(route, json={"content": "straight into the forum"})
    assert into_forum.value.code == 50008
    # Threads answer to SEND_MESSAGES_IN_THREADS, not SEND_MESSAGES.
    bot_thread = bot.get_channel(int(thread.id))
    assert isinstance(bot_thread, discord.Thread)
    fake.set_bot_permissions(fake.channel_id, send_messages=False)
    await bot_thread.send("still fine in the thread")
    fake.set_bot_permissions(fake.channel_id, send_messages_in_threads=False)
    with pytest.raises(discord.Forbidden):
        await bot_thread.send("not any more")


async def test_allowed_mentions_of_every_message_and_edit_are_recorded(
    fake: FakeDiscord, bot: DemoBot
) -> None:
    channel = general(fake, bot)
    bob = f"<@{fake.other_user_id}>"
    loud = await channel.send(f"hi {bob} @everyone")
    assert fake.pings(loud.id) == [bob, "@everyone"]

    quiet = await channel.send(
        f"hi {bob} @everyone",
        file=discord.File(io.BytesIO(PNG), filename="a.png"),
        allowed_mentions=discord.AllowedMentions.none(),
    )
    stored = fake.get_message(quiet.id)
    assert stored["allowed_mentions"]["parse"] == []  # read from the multipart payload_json
    assert fake.pings(quiet.id) == [] and not fake.could_ping(quiet.id)
    await quiet.edit(content=f"bye {bob}")  # an edit without allowed_mentions parses again
    assert fake.pings(quiet.id) == [bob]
    assert [fake.could_ping(quiet.id, version=v) for v in (0, 1)] == [False, True]
    assert fake.messages_that_could_ping() == [fake.get_message(loud.id), stored]


async def test_a_bot_that_silences_mentions_cannot_ping(fake: FakeDiscord) -> None:
    silent = DemoBot(fake.guild_id, allowed_mentions=discord.AllowedMentions.none())
    async with fake.run_client(silent) as bot:
        await bot.sync_all()
        message = await imagine_and_wait(fake, f"<@{fake.other_user_id}> as a fox")
        await fake.slash("reveal", {"hidden": False})
        await asyncio.wait_for(bot.sent.get(), WAIT)
    assert message["history"][-1]["allowed_mentions"]["parse"] == []
    assert fake.messages_that_could_ping() == []
