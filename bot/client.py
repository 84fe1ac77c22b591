"""The Discord client: slash commands only, no privileged intents, nothing pings anyone."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.admin import AdminCog, PrivacyCog
from bot.cogs.blend import BlendCog
from bot.cogs.describe import DescribeCog, ImagineThisButton
from bot.cogs.edit.buttons import EditButton
from bot.cogs.edit.cog import EditCog
from bot.cogs.imagine import ImagineCog, JobButton
from bot.cogs.models import ModelsCog
from bot.cogs.user import UserCog
from bot.core.errors import EaselError
from bot.core.service import Service

log = logging.getLogger(__name__)


class EaselBot(commands.AutoShardedBot):
    """Sharded as Discord recommends (GET /gateway/bot): one gateway connection for a small bot,
    as many as it asks for a large one; nothing in Easel assumes there is only one."""

    def __init__(
        self,
        service: Service | None,
        *,
        data_dir: Path,
        sync_commands: bool = True,
        resume_jobs: bool = True,
        progress_interval: float = 2.0,
        command_guild: int | None = None,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channels (age-restricted or not) and roles; not privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            # A prompt containing @everyone must ping nobody.
            allowed_mentions=discord.AllowedMentions.none(),
            # Installed to servers only: turning on "User Install" in the Developer Portal must
            # not make the commands usable in servers where the bot is absent (whose rules and
            # channels Easel cannot see). In DMs with the bot they work, under the strict rules.
            allowed_installs=app_commands.AppInstallationType(guild=True, user=False),
            allowed_contexts=app_commands.AppCommandContext(
                guild=True, dm_channel=True, private_channel=False
            ),
        )
        self.service = service  # type: ignore[assignment]
        self.data_dir = Path(data_dir)
        self.sync_on_start = sync_commands
        self.resume_on_start = resume_jobs
        self.progress_interval = progress_interval
        # Development mode: the commands live in this one server (instantly), not globally.
        self.command_guild = command_guild
        self._tasks: set[asyncio.Task[Any]] = set()
        self.tree.on_error = self.on_app_command_error  # type: ignore[method-assign]

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        return self.track(asyncio.create_task(coro))

    def track(self, task: asyncio.Task[Any] | None) -> asyncio.Task[Any] | None:
        """Keep a reference (the loop holds only weak ones) and cancel it when closing; jobs
        cut short this way stay queued in the database and resume at the next start."""
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return task

    async def add_easel_commands(self) -> None:
        await self.add_cog(ImagineCog(self, self.progress_interval))
        await self.add_cog(UserCog(self))
        await self.add_cog(ModelsCog(self))
        await self.add_cog(AdminCog(self))
        await self.add_cog(PrivacyCog(self))
        self.add_dynamic_items(JobButton)
        await self.add_cog(BlendCog(self))
        await self.add_cog(DescribeCog(self))
        self.add_dynamic_items(ImagineThisButton)
        await self.add_cog(EditCog(self))
        self.add_dynamic_items(EditButton)

    async def setup_hook(self) -> None:
        await self.add_easel_commands()
        if self.service is not None:
            await self.service.warm()  # settings in memory: no database read before answering
        if self.sync_on_start:
            await self.sync_if_changed()
        if self.resume_on_start and self.service is not None:
            cog: ImagineCog = self.get_cog("Imagine")  # type: ignore[assignment]
            self.spawn(cog.delivery.resume())

    # -- command sync --------------------------------------------------------------------------

    def _commands_hash(self) -> str:
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands()]
        text = json.dumps(payload, sort_keys=True, default=str)
        where = f"guild:{self.command_guild}" if self.command_guild else "global"
        return hashlib.sha256(f"{self.application_id}:{where}:{text}".encode()).hexdigest()

    async def sync_if_changed(self) -> bool:
        """Sync the commands only when they differ from the last sync (Discord allows 200
        command creates a day per guild; a restart should not spend any). In development mode
        (``EASEL_COMMAND_GUILD``) they go to that server only, never globally, so each command
        appears once there."""
        marker = self.data_dir / "discord_commands.sha256"
        digest = self._commands_hash()
        try:
            if marker.read_text().strip() == digest:
                return False
        except OSError:
            pass
        await sync_tree(self.tree, self.command_guild)
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(digest)
        log.info("Slash commands synced (%d).", len(self.tree.get_commands()))
        return True

    # -- errors --------------------------------------------------------------------------------

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, EaselError):
            text = f"❌ {original}"
        elif isinstance(error, app_commands.CheckFailure):
            text = "❌ You may not use this command here."
        else:
            log.error("Command failed", exc_info=original)
            text = "❌ Something went wrong on Easel's side; the owner can find it in the log."
        try:
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
        except (discord.HTTPException, RuntimeError):  # RuntimeError: the client is closing
            log.warning("Could not report an error to the user", exc_info=True)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await super().close()


async def sync_tree(tree: app_commands.CommandTree, guild: int | None) -> list[Any]:
    """Register the commands globally, or in one server only (development mode)."""
    if guild is None:
        return await tree.sync()
    target = discord.Object(guild)
    tree.copy_global_to(guild=target)
    return await tree.sync(guild=target)


async def sync_commands(
    token: str, data_dir: Path, guild: int | None = None, *, clear: bool = False
) -> str:
    """Register the slash commands now (``easel sync-commands``); returns what was done.

    With ``guild``: development mode, the commands in that server only (instant), and the global
    ones are not touched; set ``EASEL_COMMAND_GUILD`` to the same id so ``easel run`` keeps them
    there. With ``clear``: remove that server's copy (after development, before going global)."""
    bot = EaselBot(None, data_dir=data_dir, sync_commands=False, resume_jobs=False)
    async with bot:
        await bot.login(token)  # runs setup_hook, which adds the commands
        if clear:
            if guild is None:
                raise EaselError("Give --guild with --clear: the server whose copy to remove.")
            bot.tree.clear_commands(guild=discord.Object(guild))
            await bot.tree.sync(guild=discord.Object(guild))
            return f"Removed Easel's commands from server {guild}."
        synced = await sync_tree(bot.tree, guild)
    if guild:
        return (
            f"Synced {len(synced)} commands to server {guild} only. Set EASEL_COMMAND_GUILD="
            f"{guild} so `easel run` keeps them there instead of registering them globally "
            "(both at once would show each command twice in that server)."
        )
    return f"Synced {len(synced)} commands to all servers (may take up to an hour to show)."
