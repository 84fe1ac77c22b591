"""What every command shares: who is asking, answering only them, deleting messages."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING

import discord
from discord import app_commands

from bot.core.errors import BadImage, EaselError
from bot.core.imaging import check_upload_meta
from bot.core.service import Actor, Service, Upload

if TYPE_CHECKING:
    from bot.client import EaselBot

log = logging.getLogger(__name__)

Action = Callable[[Actor], Awaitable[str]]


def actor_from(interaction: discord.Interaction) -> Actor:
    """Who pressed or typed, from what Discord itself sent (permissions are resolved by
    Discord for this member in this channel; the command's permission hint is not trusted)."""
    user = interaction.user
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)  # a thread answers for its parent channel
    perms = interaction.permissions
    in_guild = interaction.guild_id is not None
    return Actor(
        key=f"discord:{user.id}",
        name=user.name,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        parent_channel_id=getattr(channel, "parent_id", None),
        nsfw_channel=bool(is_nsfw()) if callable(is_nsfw) else False,
        is_admin=in_guild and (perms.manage_guild or perms.administrator),
        role_ids=tuple(r.id for r in getattr(user, "roles", ())),
    )


def given(**options: object) -> dict[str, object]:
    """The options a slash command was actually given (Discord leaves out the rest)."""
    return {name: value for name, value in options.items() if value is not None}


async def answer_privately(interaction: discord.Interaction, action: Action) -> None:
    """Defer (ephemeral) at once, run ``action`` for the caller, show its text or its error."""
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        text = await action(actor_from(interaction))
    except EaselError as exc:
        text = f"❌ {exc}"
    await interaction.followup.send(text[:2000], ephemeral=True)


async def delete_messages(bot: EaselBot, messages: Iterable[tuple[int, int]]) -> int:
    """Delete these (channel id, message id) messages; returns how many could not be reached
    (an already deleted one counts as done)."""
    unreachable = 0
    for channel_id, message_id in messages:
        channel = bot.get_partial_messageable(channel_id)
        try:
            await channel.get_partial_message(message_id).delete()
        except discord.NotFound:
            pass
        except discord.HTTPException:
            log.info("Could not delete message %s in %s", message_id, channel_id, exc_info=True)
            unreachable += 1
    return unreachable


async def model_choices(
    service: Service, actor: Actor, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete for a model option: the models /models lists here, matching what is typed
    (the service checks again on use)."""
    typed = current.casefold()
    choices = []
    for entry in service.models(actor, await service.guild(actor)).models:
        if typed and typed not in entry.name.casefold():
            continue
        label = f"{entry.name} — {entry.description}" if entry.description else entry.name
        choices.append(app_commands.Choice(name=label[:100], value=entry.name))
    return choices[:25]  # Discord shows at most 25


async def read_attachment(attachment: discord.Attachment, *, max_bytes: int, what: str) -> Upload:
    """An attachment given to a command, as an upload: its declared size and type are checked
    before anything is downloaded, and its own file name is never used."""
    check_upload_meta(attachment.content_type, attachment.size, max_bytes=max_bytes, what=what)
    try:
        data = await attachment.read()
    except discord.HTTPException:
        raise BadImage(f"Could not download {what.lower()} from Discord.") from None
    return Upload(data, attachment.content_type)
