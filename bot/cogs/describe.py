"""/describe: an image in, four prompts out, each with an "Imagine this" button.

The core describes the image (a captioning model), drops any description the policy refuses here
before it is shown, and records a job holding the prompts and the image's aspect ratio; a
button's ``custom_id`` names that job and the prompt's number (``easel:describe:<job>:<n>``),
so the buttons work after a restart and no prompt text travels in it.
"""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import actor_from, read_attachment
from bot.core.errors import EaselError
from bot.core.service import Described, Press, Service

if TYPE_CHECKING:
    from bot.client import EaselBot
    from bot.cogs.imagine.cog import ImagineCog

PROMPT_CHARS = 400  # four of them, numbered, stay well inside a message's 2,000 characters


class ImagineThisButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=re.compile(r"easel:describe:(?P<job>\d{1,18}):(?P<index>[0-3])"),
):
    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Imagine {index + 1}",
                emoji="🎨",
                style=discord.ButtonStyle.primary,
                custom_id=f"easel:describe:{job_id}:{index}",
            )
        )
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> ImagineThisButton:
        return cls(int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: DescribeCog = interaction.client.get_cog("Describe")  # type: ignore[attr-defined,assignment]
        await cog.imagine_this(interaction, self.job_id, self.index)


def described_view(described: Described) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for index in range(len(described.prompts)):
        view.add_item(ImagineThisButton(described.job.id, index))
    return view


def described_text(described: Described) -> str:
    lines = [
        f"**{n}.** {discord.utils.escape_markdown(prompt[:PROMPT_CHARS])}"
        for n, prompt in enumerate(described.prompts, 1)
    ]
    aspect = described.job.params.get("aspect", "")
    return "\n".join([*lines, f"-# Job #{described.job.id} · aspect {aspect}"])


class DescribeCog(commands.Cog, name="Describe"):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @property
    def service(self) -> Service:
        return self.bot.service

    @app_commands.command(name="describe", description="Four prompts that describe an image")
    @app_commands.describe(image="The image to describe (PNG, JPEG or WebP)")
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        actor = actor_from(interaction)
        private = self.service.answers_privately(actor)
        await interaction.response.defer(ephemeral=private, thinking=True)
        try:
            upload = await read_attachment(
                image, max_bytes=self.service.config.max_upload_bytes, what="The image to describe"
            )
            described = await self.service.describe(actor, upload)
        except EaselError as exc:
            await interaction.edit_original_response(content=f"❌ {exc}")
            return
        message = await interaction.edit_original_response(
            content=described_text(described), view=described_view(described)
        )
        if not private and interaction.channel_id is not None:  # for purges and /forget-me
            await self.service.record_message(described.job.id, interaction.channel_id, message.id)

    async def imagine_this(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        """A prompt's button: /imagine with it, answered first from memory alone."""
        actor = actor_from(interaction)
        message = interaction.message
        on_private = bool(message is not None and message.flags.ephemeral)
        private = self.service.answers_privately(actor, on_private_message=on_private)
        await interaction.response.defer(ephemeral=private, thinking=True)
        press = Press(message.id if message else 0, f"easel:describe:{job_id}:{index}")
        make = functools.partial(self.service.imagine_described, actor, job_id, index, press=press)
        imagine: ImagineCog = self.bot.get_cog("Imagine")  # type: ignore[assignment]
        reply = imagine.reply_for(interaction, private=private)
        await imagine.delivery.run(
            reply, lambda relay: make(on_progress=relay), interaction.user.id
        )
