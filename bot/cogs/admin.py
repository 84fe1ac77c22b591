"""/admin: moderation for server admins.

The command carries Discord's ``default_member_permissions`` (Manage Server) as a hint for the
client; the real check is in the service, on the permissions Discord resolved for this member,
because a server can override the hint."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import actor_from, answer_privately, delete_messages, given, model_choices
from bot.cogs.user import SAMPLER_CHOICES
from bot.core.admin import Admin
from bot.core.models import GuildSettings
from bot.core.service import Actor

if TYPE_CHECKING:
    from bot.client import EaselBot


def describe_guild(g: GuildSettings, warnings: Sequence[str] = ()) -> str:
    channels = ", ".join(f"<#{c}>" for c in g.allowed_channel_ids) or "every channel"
    roles = ", ".join(f"<@&{r}>" for r in g.admin_role_ids) or "none (Manage Server only)"
    nsfw = "allowed in age-restricted channels" if g.nsfw_rule == "age_restricted" else "blocked"

    def show(value: object) -> str:
        return "default" if value in (None, "") else f"`{value}`"

    return (
        f"**Server settings**\nNSFW: {nsfw} · flagged images: "
        f"{'blurred and spoilered' if g.blur_flagged else 'withheld'} · start images (uploads): "
        f"{'allowed' if g.allow_uploads else 'off'}\n"
        f"Channels: {channels}\nAdmin roles: {roles}\n"
        f"Daily images per user: {show(g.daily_images_per_user)} · max steps: "
        f"{show(g.max_steps)}\nDefaults: aspect {show(g.aspect)} · steps {show(g.steps)} · "
        f"guidance {show(g.guidance)} · sampler {show(g.sampler)} · negative {show(g.negative)} · "
        f"model {show(g.model)}"
    ) + "".join(f"\n⚠️ {w}" for w in warnings)


class AdminCog(commands.Cog):
    admin = app_commands.Group(
        name="admin",
        description="Moderate Easel on this server",
        default_permissions=discord.Permissions(manage_guild=True),
        guild_only=True,
        # Spelled out: the bot's default contexts (servers and DMs) would otherwise fill the gaps.
        allowed_contexts=app_commands.AppCommandContext(
            guild=True, dm_channel=False, private_channel=False
        ),
    )

    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @property
    def admin_service(self) -> Admin:
        return Admin(self.bot.service)

    def describe(self, guild: GuildSettings) -> str:
        return describe_guild(guild, self.admin_service.warnings(guild))

    @admin.command(name="ban", description="Stop a member from using Easel")
    @app_commands.describe(duration="For how long: 30m, 12h, 7d, 2w (default: until unbanned)")
    async def ban(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        reason: str | None = None,
        duration: str | None = None,
    ) -> None:
        async def action(actor: Actor) -> str:
            ban = await self.admin_service.ban(
                actor,
                f"discord:{user.id}",
                reason=reason,
                duration=duration,
                target_name=user.name,
            )
            until = f" until <t:{int(ban.banned_until.timestamp())}:f>" if ban.banned_until else ""
            return f"{user.mention} is banned from Easel on this server{until}."

        await answer_privately(interaction, action)

    @admin.command(name="unban", description="Let a member use Easel again")
    async def unban(
        self, interaction: discord.Interaction, user: discord.User, reason: str | None = None
    ) -> None:
        async def action(actor: Actor) -> str:
            await self.admin_service.unban(actor, f"discord:{user.id}", reason=reason)
            return f"{user.mention} may use Easel again."

        await answer_privately(interaction, action)

    @admin.command(name="quota", description="Set a member's daily images, or give today's back")
    @app_commands.describe(
        daily="Images per day for this member on this server",
        default="Go back to the server's quota",
    )
    async def quota(
        self,
        interaction: discord.Interaction,
        user: discord.User,
        daily: app_commands.Range[int, 0, 100_000] | None = None,
        default: bool = False,
    ) -> None:
        async def action(actor: Actor) -> str:
            quota = await self.admin_service.set_quota(
                actor,
                f"discord:{user.id}",
                daily,
                back_to_default=default,
                target_name=user.name,
            )
            return f"{user.mention} may make {quota} images a day here."

        await answer_privately(interaction, action)

    @admin.command(name="block", description="Block a term in prompts (* is a wildcard)")
    async def block(self, interaction: discord.Interaction, term: str) -> None:
        async def action(actor: Actor) -> str:
            return f"Blocked `{await self.admin_service.block(actor, term)}`."

        await answer_privately(interaction, action)

    @admin.command(name="unblock", description="Remove a term from the blocklist")
    async def unblock(self, interaction: discord.Interaction, term: str) -> None:
        async def action(actor: Actor) -> str:
            return f"Unblocked `{await self.admin_service.unblock(actor, term)}`."

        await answer_privately(interaction, action)

    @admin.command(name="blocklist", description="The blocked terms")
    async def blocklist(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            entries = await self.admin_service.blocklist(actor)
            if not entries:
                return "The blocklist is empty."
            return "**Blocked terms**\n" + "\n".join(
                f"• `{e.term}`" + (" (everywhere)" if e.guild_id is None else "") for e in entries
            )

        await answer_privately(interaction, action)

    @admin.command(name="queue", description="Jobs waiting or running on this server")
    async def queue(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            entries = await self.admin_service.queue(actor)
            if not entries:
                return "Nothing is waiting."
            lines = ["**Queue**"]
            for e in entries[:20]:
                where = "running" if e.job.state == "running" else f"{e.position or 0} ahead"
                who = f"<@{e.user.discord_id}>" if e.user.discord_id else e.user.name
                prompt = discord.utils.escape_markdown(e.job.spec.prompt[:80])
                lines.append(f"#{e.job.id} · {where} · {who} · {prompt}")
            return "\n".join(lines)

        await answer_privately(interaction, action)

    @admin.command(name="cancel", description="Cancel anyone's job")
    async def cancel(
        self,
        interaction: discord.Interaction,
        job: app_commands.Range[int, 1],
        reason: str | None = None,
    ) -> None:
        async def action(actor: Actor) -> str:
            await self.admin_service.cancel(actor, job, reason=reason)
            return f"Job #{job} is cancelled."

        await answer_privately(interaction, action)

    @admin.command(name="purge", description="Delete a job's images and its message")
    async def purge(
        self,
        interaction: discord.Interaction,
        job: app_commands.Range[int, 1],
        reason: str | None = None,
    ) -> None:
        async def action(actor: Actor) -> str:
            _, messages = await self.admin_service.purge(actor, job, reason=reason)
            unreachable = await delete_messages(self.bot, messages)
            deleted = len(messages) - unreachable
            text = f"Job #{job} is purged: its images and {deleted} message(s) are deleted."
            if unreachable:
                text += f" {unreachable} message(s) could not be reached; delete them by hand."
            return text

        await answer_privately(interaction, action)

    @admin.command(name="settings", description="Show this server's Easel settings")
    async def settings(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            return self.describe(await self.admin_service.settings(actor))

        await answer_privately(interaction, action)

    @admin.command(name="set", description="Change this server's rules and defaults")
    @app_commands.describe(
        nsfw="Nudity: blocked, or allowed in age-restricted channels only",
        blur="Post flagged images blurred and spoilered instead of withholding them",
        uploads="Let members give start images (photos) to edit",
        daily_quota="Images per member per day",
        model="The server's default model (/models lists them)",
        max_steps="Most sampling steps a prompt may ask for",
    )
    @app_commands.choices(sampler=SAMPLER_CHOICES)
    async def set_(
        self,
        interaction: discord.Interaction,
        nsfw: Literal["block", "age_restricted"] | None = None,
        blur: bool | None = None,
        uploads: bool | None = None,
        daily_quota: app_commands.Range[int, 0, 100_000] | None = None,
        max_steps: app_commands.Range[int, 1, 500] | None = None,
        aspect: str | None = None,
        steps: app_commands.Range[int, 1, 500] | None = None,
        guidance: app_commands.Range[float, 0.0, 30.0] | None = None,
        sampler: str | None = None,
        negative: str | None = None,
        model: str | None = None,
    ) -> None:
        changes = given(
            model=model,
            nsfw_rule=nsfw,
            blur_flagged=blur,
            allow_uploads=uploads,
            daily_images_per_user=daily_quota,
            max_steps=max_steps,
            aspect=aspect,
            steps=steps,
            guidance=guidance,
            sampler=sampler,
            negative=negative,
        )

        async def action(actor: Actor) -> str:
            return "Saved.\n" + self.describe(
                await self.admin_service.update_settings(actor, **changes)
            )

        await answer_privately(interaction, action)

    @set_.autocomplete("model")
    async def _model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await model_choices(self.bot.service, actor_from(interaction), current)

    @admin.command(name="channel", description="Choose the channels Easel works in")
    async def channel(
        self,
        interaction: discord.Interaction,
        action_: Literal["allow", "disallow", "everywhere"],
        # A forum, or a text channel with its threads and posts.
        channel: discord.TextChannel | discord.ForumChannel | None = None,
    ) -> None:
        async def action(actor: Actor) -> str:
            current = set((await self.admin_service.settings(actor)).allowed_channel_ids)
            if action_ == "everywhere":
                current = set()
            elif channel is None:
                return "Name a channel."
            elif action_ == "allow":
                current.add(channel.id)
            else:
                current.discard(channel.id)
            updated = await self.admin_service.update_settings(actor, allowed_channel_ids=current)
            return self.describe(updated)

        await answer_privately(interaction, action)

    @admin.command(name="role", description="Give or take a role's Easel admin rights")
    async def role(
        self,
        interaction: discord.Interaction,
        action_: Literal["add", "remove"],
        role: discord.Role,
    ) -> None:
        async def action(actor: Actor) -> str:
            roles = set((await self.admin_service.settings(actor)).admin_role_ids)
            (roles.add if action_ == "add" else roles.discard)(role.id)
            return self.describe(
                await self.admin_service.update_settings(actor, admin_role_ids=roles)
            )

        await answer_privately(interaction, action)

    @admin.command(name="stats", description="Today's jobs, images and generation times")
    async def stats(self, interaction: discord.Interaction) -> None:
        async def action(actor: Actor) -> str:
            s = await self.admin_service.stats(actor)
            states = ", ".join(f"{k} {v}" for k, v in sorted(s.by_state.items())) or "none"
            times = (
                f"{s.mean_seconds:.1f} s mean, {s.p95_seconds:.1f} s p95"
                if s.mean_seconds is not None and s.p95_seconds is not None
                else "no finished jobs yet"
            )
            health = s.engine
            engine = "running" if health.alive else "stopped"
            if health.out_of_memory:
                engine += f", {health.out_of_memory} out-of-memory errors since start"
            if health.last_error:
                engine += f"; last error: {health.last_error[:200]}"
            return (
                f"**Today (UTC)**: {s.jobs_today} jobs ({states}), {s.images_today} images\n"
                f"**Queue**: {s.queue_length} · **generation time**: {times}\n"
                f"**Engine**: {engine}"
            )

        await answer_privately(interaction, action)

    @admin.command(name="audit", description="Recent admin actions and refusals")
    async def audit(
        self, interaction: discord.Interaction, limit: app_commands.Range[int, 1, 50] = 15
    ) -> None:
        async def action(actor: Actor) -> str:
            events = await self.admin_service.audit_log(actor, limit)
            if not events:
                return "The audit log is empty."
            lines = ["**Audit log** (newest first)"]
            for e in events:
                who = (
                    f"<@{e.actor.partition(':')[2]}>" if e.actor.startswith("discord:") else e.actor
                )
                what = f" {e.target}" if e.target else ""
                why = f" — {discord.utils.escape_markdown(e.reason[:120])}" if e.reason else ""
                lines.append(
                    f"<t:{int(e.created_at.timestamp())}:R> {who} **{e.action}**{what}{why}"
                )
            return "\n".join(lines)

        await answer_privately(interaction, action)


FORGET_ME_TEXT = (
    "This deletes what Easel keeps about you that is personal, here and on every server: your "
    "jobs, prompts, images, settings and presets, and the text of any prompt Easel refused. It "
    "cannot be undone. Kept, because abuse prevention needs them: bans and quota limits set on "
    "you, the number of images you made today, and the moderation log (without your prompts). "
    "Messages already posted in channels stay."
)


class ForgetMeView(discord.ui.View):
    """A confirmation button: deleting everything is not undone."""

    CONFIRM_SECONDS = 120.0

    def __init__(self, bot: EaselBot, interaction: discord.Interaction) -> None:
        super().__init__(timeout=self.CONFIRM_SECONDS)
        self.bot = bot
        self.user_id = interaction.user.id
        self.asked = interaction

    @discord.ui.button(label="Delete everything", style=discord.ButtonStyle.danger, emoji="🗑️")
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:  # type: ignore[type-arg]
        if interaction.user.id != self.user_id:
            await interaction.response.send_message("This button is not yours.", ephemeral=True)
            return
        await interaction.response.defer()
        files = await self.bot.service.forget_me(actor_from(interaction))
        self.stop()
        await interaction.edit_original_response(
            content=f"Done: your jobs, prompts, images ({files} files) and settings are deleted.",
            view=None,
        )

    async def on_timeout(self) -> None:
        """Two minutes without a press: the button goes grey, so an old one is not pressed."""
        for item in self.children:
            item.disabled = True  # type: ignore[attr-defined]
        with contextlib.suppress(discord.HTTPException):
            await self.asked.edit_original_response(
                content=FORGET_ME_TEXT + "\n*(Not confirmed: nothing was deleted.)*", view=self
            )


class PrivacyCog(commands.Cog):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @app_commands.command(
        name="forget-me", description="Delete your jobs, prompts, images, settings"
    )
    async def forget_me(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(
            FORGET_ME_TEXT, view=ForgetMeView(self.bot, interaction), ephemeral=True
        )
