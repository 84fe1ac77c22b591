"""The buttons on a result, and the Remix modal.

A button's state lives in its ``custom_id`` (``discord.ui.DynamicItem``), so buttons keep working
after a restart (discord.py ``examples/views/persistent.py``):
``easel:<action>:<job id>[:<image index>]``, well under Discord's 100 characters. The wire values
of :class:`Action` never change, so buttons on old messages keep working.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import discord

from bot.cogs.edit.buttons import add_edit_rows
from bot.core.models import Image, Job

if TYPE_CHECKING:
    from bot.cogs.imagine.cog import ImagineCog


class Action(StrEnum):
    TAKE = "u"  # U1–U4: one image of a grid on its own
    VARY = "v"  # V1–V4: four strong variations (the Remix editor first, in remix mode)
    REROLL = "r"  # 🔄: the same prompt with a new seed
    UPSCALE = "up"  # Upscale ×2
    VARY_SUBTLE = "vs"  # Vary (Subtle)
    VARY_STRONG = "vS"  # Vary (Strong)
    REMIX = "rx"  # Remix: edit the prompt, then vary
    DM = "dm"  # ✉️: a copy to my direct messages
    DELETE = "x"  # ❌: the owner deletes the result
    UPSCALE_SUBTLE = "us"  # Upscale (Subtle) ×2: the upscaler model; UPSCALE is Creative


TEMPLATE = re.compile(
    r"easel:(?P<action>" + "|".join(re.escape(a.value) for a in Action) + r"):(?P<job>\d{1,18})"
    r"(?::(?P<index>[0-3]))?"
)


def custom_id(action: Action, job_id: int, index: int | None = None) -> str:
    return f"easel:{action.value}:{job_id}" + (f":{index}" if index is not None else "")


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(
        self,
        action: Action,
        job_id: int,
        index: int | None = None,
        *,
        label: str | None = None,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
        row: int | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=style,
                row=row,
                disabled=disabled,
                custom_id=custom_id(action, job_id, index),
            )
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> JobButton:
        index = match["index"]
        return cls(
            Action(match["action"]), int(match["job"]), int(index) if index is not None else None
        )

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: ImagineCog = interaction.client.get_cog("Imagine")  # type: ignore[attr-defined,assignment]
        await cog.press(interaction, self.action, self.job_id, self.index)


def grid_view(job: Job, images: list[Image]) -> discord.ui.View:
    """U1–U4 and 🔄 on the first row, V1–V4 on the second, as Midjourney lays them out; ✉️ and
    ❌ below."""
    view = discord.ui.View(timeout=None)
    for action, row in ((Action.TAKE, 0), (Action.VARY, 1)):
        for image in images:
            view.add_item(
                JobButton(
                    action,
                    job.id,
                    image.index,
                    label=f"{action.value.upper()}{image.index + 1}",
                    row=row,
                    disabled=image.withheld or image.deleted,
                )
            )
        if action is Action.TAKE:
            view.add_item(JobButton(Action.REROLL, job.id, emoji="🔄", row=0))
    _add_mail_and_delete(view, job, None, row=2)
    return view


def single_view(job: Job, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    blue = discord.ButtonStyle.primary
    add = view.add_item
    add(JobButton(Action.UPSCALE, job.id, index, label="Upscale (Creative)", emoji="⬆️", style=blue))
    add(JobButton(Action.VARY_SUBTLE, job.id, index, label="Vary (Subtle)", emoji="🪄"))
    add(JobButton(Action.VARY_STRONG, job.id, index, label="Vary (Strong)", emoji="🌀"))
    add(JobButton(Action.REMIX, job.id, index, label="Remix", emoji="🖌️"))
    add(JobButton(Action.REROLL, job.id, emoji="🔄"))
    # Beside ✉️ and ❌: the first row is full, and this adds no row.
    add(
        JobButton(Action.UPSCALE_SUBTLE, job.id, index, label="Upscale (Subtle)", emoji="🔍", row=1)
    )
    _add_mail_and_delete(view, job, index, row=1)
    add_edit_rows(view, job, index)  # Vary (Region), Zoom Out, Pan, Make Square: rows 2 and 3
    return view


def _add_mail_and_delete(view: discord.ui.View, job: Job, index: int | None, *, row: int) -> None:
    view.add_item(JobButton(Action.DM, job.id, index, emoji="✉️", row=row))
    view.add_item(JobButton(Action.DELETE, job.id, emoji="❌", row=row))


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt, then vary the image strongly with it. Parameters such as --no work here
    too.

    Its custom_id is discord.py's random default: two people remixing the same image each get
    their own modal."""

    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", style=discord.TextStyle.paragraph, max_length=1000
    )

    def __init__(self, cog: ImagineCog, job_id: int, index: int, *, text: str) -> None:
        super().__init__(timeout=600)
        self.cog = cog
        self.job_id = job_id
        self.index = index
        self.prompt.default = text[:1000] or None

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.remix(interaction, self.job_id, self.index, self.prompt.value)
