"""/models: the models, LoRAs and embeddings this installation offers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import answer_privately
from bot.core.service import Actor, Catalogued

if TYPE_CHECKING:
    from bot.client import EaselBot

MESSAGE_LIMIT = 2000  # characters in a Discord message


def describe_catalogue(found: Catalogued) -> str:
    lines = ["**Models** (choose with `--model NAME`, or /settings set model)"]
    for m in found.models:
        tags = [m.family or "?"]
        if m.name == found.default:
            tags.append("default here")
        if m.nsfw_only:
            tags.append("age-restricted channels only")
        if m.few_step:
            tags.append("few-step")
        about = f" — {discord.utils.escape_markdown(m.description)}" if m.description else ""
        lines.append(
            f"• `{m.name}` ({', '.join(tags)}){about} · {m.steps} steps, cfg {m.guidance:g}, "
            f"{m.sampler}, {m.native_side}px" + (f" · `--fast`: `{m.fast}`" if m.fast else "")
        )
    for title, entries, how in (
        ("LoRAs", found.loras, "`--lora NAME:0.8` or `<lora:NAME:0.8>`"),
        ("Embeddings", found.embeddings, "their name in the prompt"),
    ):
        if entries:
            names = ", ".join(
                f"`{e.name}`" + (f" ({e.family})" if e.family else "") for e in entries
            )
            lines.append(f"**{title}** (use with {how}): {names}")
    text = "\n".join(lines)
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 40].rsplit("\n", 1)[0] + "\n…and more (see `easel models`)"
    return text


class ModelsCog(commands.Cog):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @app_commands.command(name="models", description="The models, LoRAs and embeddings here")
    async def models(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            service = self.bot.service
            return describe_catalogue(service.models(actor, await service.guild(actor)))

        await answer_privately(interaction, action)
