"""Buttons whose state lives in the ``custom_id`` (``discord.ui.DynamicItem``), so they keep
working after a restart (discord.py ``examples/views/persistent.py``), and the Remix modal.

custom_id: ``easel:<action>:<job id>[:<image index>]``, well under Discord's 100 characters.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import discord

from bot.core.models import Image, Job

if TYPE_CHECKING:
    from bot.cogs.imagine import Jobs

# u: take image n; v: variations of n; r: reroll the job; up: upscale ×2; vs/vS: vary subtle or
# strong (single image); rx: remix (modal first).
ACTIONS = ("u", "v", "r", "up", "vs", "vS", "rx")
TEMPLATE = re.compile(
    r"easel:(?P<action>u|v|r|up|vs|vS|rx):(?P<job>\d{1,18})(?::(?P<index>[0-3]))?"
)


def custom_id(action: str, job_id: int, index: int | None = None) -> str:
    return f"easel:{action}:{job_id}" + (f":{index}" if index is not None else "")


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(
        self,
        action: str,
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
        return cls(match["action"], int(match["job"]), int(index) if index is not None else None)

    async def callback(self, interaction: discord.Interaction) -> None:
        jobs: Jobs = interaction.client.jobs  # type: ignore[attr-defined]
        await jobs.on_button(interaction, self.action, self.job_id, self.index)


def grid_view(job: Job, images: list[Image]) -> discord.ui.View:
    """U1–U4 and 🔄 on the first row, V1–V4 on the second, as Midjourney lays them out."""
    view = discord.ui.View(timeout=None)
    for image in images:
        view.add_item(
            JobButton(
                "u",
                job.id,
                image.index,
                label=f"U{image.index + 1}",
                row=0,
                disabled=image.withheld or image.deleted,
            )
        )
    view.add_item(JobButton("r", job.id, emoji="🔄", row=0))
    for image in images:
        view.add_item(
            JobButton(
                "v",
                job.id,
                image.index,
                label=f"V{image.index + 1}",
                row=1,
                disabled=image.withheld or image.deleted,
            )
        )
    return view


def single_view(job: Job, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    blue = discord.ButtonStyle.primary
    view.add_item(JobButton("up", job.id, index, label="Upscale ×2", emoji="⬆️", style=blue))
    view.add_item(JobButton("vs", job.id, index, label="Vary (Subtle)", emoji="🪄"))
    view.add_item(JobButton("vS", job.id, index, label="Vary (Strong)", emoji="🌀"))
    view.add_item(JobButton("rx", job.id, index, label="Remix", emoji="🖌️"))
    view.add_item(JobButton("r", job.id, emoji="🔄"))
    return view


class RemixModal(discord.ui.Modal, title="Remix"):
    """Edit the prompt, then vary the image with it. Parameters such as --no work here too."""

    prompt: discord.ui.TextInput[RemixModal] = discord.ui.TextInput(
        label="Prompt", style=discord.TextStyle.paragraph, max_length=1000
    )

    def __init__(self, jobs: Jobs, job: Job, index: int, *, strong: bool = True) -> None:
        super().__init__(timeout=600, custom_id=f"easel:remix:{job.id}:{index}")
        self.jobs = jobs
        self.job = job
        self.index = index
        self.strong = strong
        text = job.spec.prompt + (f" --no {job.spec.negative}" if job.spec.negative else "")
        self.prompt.default = text[:1000]

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.jobs.remix(interaction, self.job.id, self.index, self.prompt.value, self.strong)
