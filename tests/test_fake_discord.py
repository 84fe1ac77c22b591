"""A real discord.py bot (commands.Bot + app_commands tree) against tests.fake_discord."""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator

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
            file=discord.File(io.BytesIO(PNG), filename="easel.png"),
            view=AgainView(bot),
        )
    except discord.HTTPException as exc:
        bot.followup_errors.put_nowait(exc)


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
    def __init__(self, guild_id: str) -> None:
        intents = discord.Intents.default()
        # default() already leaves the privileged intents out; the fake refuses them too.
        intents.members = intents.presences = intents.message_content = False
        super().__init__(command_prefix=commands.when_mentioned, intents=intents)
        self.home = discord.Object(int(guild_id))
        self.clicks: asyncio.Queue[int] = asyncio.Queue()
        self.submissions: asyncio.Queue[str] = asyncio.Queue()
        self.followup_errors: asyncio.Queue[discord.HTTPException] = asyncio.Queue()
        self.hold: asyncio.Event | None = None

    async def setup_hook(self) -> None:
        for command in (imagine, reprompt, measure, settings):
            self.tree.add_command(command, guild=self.home)
        self.tree.add_command(ping)

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


@pytest.fixture
async def bot(fake: FakeDiscord) -> AsyncIterator[DemoBot]:
    async with fake.run_client(DemoBot(fake.guild_id)) as bot:
        await bot.sync_all()
        yield bot


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
    assert names == {"imagine", "reprompt", "measure", "settings"}
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
    channel = bot.get_channel(int(fake.channel_id))
    assert isinstance(channel, discord.TextChannel)
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
