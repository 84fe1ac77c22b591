"""/blend: a grid from 2 to 5 images (attachments) and optional text, with the usual buttons.

The images are image prompts (an IP-Adapter), in the order given; the core checks each like any
upload and decides visibility and limits. This cog only gathers the attachments.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import actor_from, read_attachment
from bot.cogs.imagine.delivery import ProgressRelay
from bot.core.service import Service, Submission

if TYPE_CHECKING:
    from bot.client import EaselBot
    from bot.cogs.imagine.cog import ImagineCog


class BlendCog(commands.Cog, name="Blend"):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @property
    def service(self) -> Service:
        return self.bot.service

    @app_commands.command(name="blend", description="Blend 2 to 5 images into four new ones")
    @app_commands.describe(
        image1="First image (PNG, JPEG or WebP)",
        image2="Second image",
        image3="Third image (optional)",
        image4="Fourth image (optional)",
        image5="Fifth image (optional)",
        prompt="Optional words and parameters, such as --ar 16:9 --iw 1.5 --sref",
    )
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        actor = actor_from(interaction)
        private = self.service.answers_privately(actor)
        await interaction.response.defer(ephemeral=private, thinking=True)
        attachments = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        limit = self.service.config.max_upload_bytes

        async def submit(relay: ProgressRelay) -> Submission:
            uploads = [
                await read_attachment(a, max_bytes=limit, what=f"Image {n} of the blend")
                for n, a in enumerate(attachments, 1)
            ]
            return await self.service.blend(actor, uploads, prompt, on_progress=relay)

        imagine: ImagineCog = self.bot.get_cog("Imagine")  # type: ignore[assignment]
        reply = imagine.reply_for(interaction, private=private)
        await imagine.delivery.run(reply, submit, interaction.user.id)
