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
from bot.cogs.imagine import ImagineCog, Jobs
from bot.cogs.user import UserCog
from bot.core.errors import EaselError
from bot.core.service import Service
from bot.views import JobButton

log = logging.getLogger(__name__)


class EaselBot(commands.Bot):
    def __init__(
        self,
        service: Service | None,
        *,
        data_dir: Path,
        sync_commands: bool = True,
        resume_jobs: bool = True,
        progress_interval: float = 2.0,
    ) -> None:
        intents = discord.Intents.none()
        intents.guilds = True  # channels (age-restricted or not) and roles; not privileged
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            # A prompt containing @everyone must ping nobody.
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.service = service  # type: ignore[assignment]
        self.data_dir = Path(data_dir)
        self.sync_on_start = sync_commands
        self.resume_on_start = resume_jobs
        self.jobs = Jobs(self, progress_interval)
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
        await self.add_cog(ImagineCog(self))
        await self.add_cog(UserCog(self))
        await self.add_cog(AdminCog(self))
        await self.add_cog(PrivacyCog(self))
        self.add_dynamic_items(JobButton)

    async def setup_hook(self) -> None:
        await self.add_easel_commands()
        if self.sync_on_start:
            await self.sync_if_changed()
        if self.resume_on_start and self.service is not None:
            self.spawn(self.jobs.resume())

    # -- command sync --------------------------------------------------------------------------

    def _commands_hash(self) -> str:
        payload = [c.to_dict(self.tree) for c in self.tree.get_commands()]
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(f"{self.application_id}:{text}".encode()).hexdigest()

    async def sync_if_changed(self) -> bool:
        """Sync the global commands only when they differ from the last sync (Discord allows
        200 command creates a day per guild; a restart should not spend any)."""
        marker = self.data_dir / "discord_commands.sha256"
        digest = self._commands_hash()
        try:
            if marker.read_text().strip() == digest:
                return False
        except OSError:
            pass
        await self.tree.sync()
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


async def sync_commands(token: str, data_dir: Path, guild: int | None = None) -> str:
    """Register the slash commands now (``easel sync-commands``); returns what was done."""
    bot = EaselBot(None, data_dir=data_dir, sync_commands=False, resume_jobs=False)
    async with bot:
        await bot.login(token)  # runs setup_hook, which adds the commands
        target = discord.Object(guild) if guild else None
        if target is not None:
            bot.tree.copy_global_to(guild=target)
        synced = await bot.tree.sync(guild=target)
    where = f"server {guild}" if guild else "all servers (may take up to an hour to show)"
    return f"Synced {len(synced)} commands to {where}."
