"""/settings, /info, /history and /cancel: each defers, calls the service, shows the result."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import actor_from, answer_privately, given, model_choices
from bot.core.grammar import SAMPLERS
from bot.core.models import UserSettings
from bot.core.service import Actor

if TYPE_CHECKING:
    from bot.client import EaselBot

HISTORY_PAGE = 5
SAMPLER_CHOICES = [app_commands.Choice(name=v, value=k) for k, v in SAMPLERS.items()]


def describe_settings(s: UserSettings) -> str:
    def show(value: object) -> str:
        return "—" if value in (None, "") else f"`{value}`"

    presets = (
        "\n".join(f"• `{name}`: `{text}`" for name, text in sorted(s.presets.items())) or "none"
    )
    return (
        f"**Your defaults** (your parameters in a prompt win over them)\n"
        f"aspect {show(s.aspect)} · steps {show(s.steps)} · guidance {show(s.guidance)} · "
        f"sampler {show(s.sampler)} · model {show(s.model)}\nnegative {show(s.negative)}\n"
        f"suffix {show(s.suffix)}\n"
        f"remix mode {'on' if s.remix_mode else 'off'} · private results "
        f"{'on' if s.private else 'off'}\n**Presets** (use with `--preset NAME`)\n{presets}"
    )


class UserCog(commands.Cog):
    settings = app_commands.Group(name="settings", description="Your personal defaults")

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @settings.command(name="show", description="Show your defaults and presets")
    async def settings_show(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            return describe_settings(await self.bot.service.settings(actor))

        await answer_privately(interaction, action)

    @settings.command(name="set", description="Change your defaults (empty text clears one)")
    @app_commands.describe(
        aspect="Aspect ratio, e.g. 16:9",
        steps="Sampling steps",
        guidance="Guidance scale (CFG)",
        sampler="Sampler",
        negative="Negative prompt added when you give no --no",
        suffix="Text added to every prompt",
        remix="Open the Remix editor before variations",
        private="Post your results only to you",
        model="Your default model (/models lists them)",
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES)
    async def settings_set(
        self,
        interaction: discord.Interaction,
        aspect: str | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        sampler: str | None = None,
        negative: str | None = None,
        suffix: str | None = None,
        remix: bool | None = None,
        private: bool | None = None,
        model: str | None = None,
    ) -> None:
        changes = given(
            model=model,
            aspect=aspect,
            steps=steps,
            guidance=guidance,
            sampler=sampler,
            negative=negative,
            suffix=suffix,
            remix_mode=remix,
            private=private,
        )

        async def action(actor: Actor) -> str:
            if not changes:
                return "Nothing to change: give at least one option."
            return "Saved.\n" + describe_settings(
                await self.bot.service.update_settings(actor, **changes)
            )

        await answer_privately(interaction, action)

    @settings_set.autocomplete("model")
    async def _model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await model_choices(self.bot.service, actor_from(interaction), current)

    @settings.command(name="preset", description="Save parameters under a name for --preset")
    @app_commands.describe(name="Preset name", parameters="e.g. --ar 16:9 --steps 30 --no text")
    async def settings_preset(
        self, interaction: discord.Interaction, name: str, parameters: str
    ) -> None:
        async def action(actor: Actor) -> str:
            await self.bot.service.save_preset(actor, name, parameters)
            return f"Saved preset `{name.strip().lower()}`: use it with `--preset {name}`."

        await answer_privately(interaction, action)

    @settings.command(name="unpreset", description="Delete a preset")
    async def settings_unpreset(self, interaction: discord.Interaction, name: str) -> None:
        async def action(actor: Actor) -> str:
            await self.bot.service.delete_preset(actor, name)
            return f"Deleted preset `{name}`."

        await answer_privately(interaction, action)

    @app_commands.command(name="info", description="Your images left today and your queue")
    async def info(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            info = await self.bot.service.info(actor)
            mine = ", ".join(
                f"#{job} ({'running' if state == 'running' else f'{pos or 0} ahead'})"
                for job, state, pos in info["my_jobs"]
            )
            return (
                f"**Images left today:** {info['left_today']} of {info['quota']} "
                f"(resets 00:00 UTC)\n**Your jobs in the queue:** {mine or 'none'}\n"
                f"**Queue:** {info['queue_length']} jobs · **your jobs in all:** "
                f"{info['total_jobs']} · **model:** `{info['model']}`"
            )

        await answer_privately(interaction, action)

    @app_commands.command(name="history", description="Your recent jobs")
    @app_commands.describe(search="Only prompts containing this", page="Page (1 is the newest)")
    async def history(
        self,
        interaction: discord.Interaction,
        search: str | None = None,
        page: app_commands.Range[int, 1, 1000] = 1,
    ) -> None:
        async def action(actor: Actor) -> str:
            service = self.bot.service
            jobs, total = await service.history(
                actor, search=search, page=page - 1, per_page=HISTORY_PAGE
            )
            if not jobs:
                return "No jobs found." if total == 0 else f"There is no page {page}."
            pages = (total + HISTORY_PAGE - 1) // HISTORY_PAGE
            lines = [f"**Your jobs** — page {page} of {pages} ({total} in all)"]
            for job in jobs:
                command = discord.utils.escape_markdown(service.remake_command(job))[:300]
                lines.append(
                    f"**#{job.id}** <t:{int(job.created_at.timestamp())}:R> · {job.kind} · "
                    f"{job.state}\n`{command}`"
                )
            lines.append("Bring one back with `/show job:<number>`.")
            return "\n".join(lines)

        await answer_privately(interaction, action)

    @app_commands.command(name="cancel", description="Cancel your queued or running job")
    @app_commands.describe(job="The job number (default: your latest)")
    async def cancel(
        self, interaction: discord.Interaction, job: app_commands.Range[int, 1] | None = None
    ) -> None:
        async def action(actor: Actor) -> str:
            cancelled = await self.bot.service.cancel(actor, job)
            return f"Job #{cancelled.id} is cancelled; nothing was charged."

        await answer_privately(interaction, action)
