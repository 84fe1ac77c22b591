"""The edit buttons on a single image, and the Vary (Region) and Custom Zoom modals.

As for the imagine buttons, a button's state lives in its ``custom_id`` (a
``discord.ui.DynamicItem``), so the buttons work after a restart and on ``/show``:
``easel:e:<action>:<job id>:<image index>``. The wire values of :class:`EditAction` never
change, so buttons on old messages keep working.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import discord

from bot.core.models import Job

if TYPE_CHECKING:
    from bot.cogs.edit.cog import EditCog


class EditAction(StrEnum):
    REGION = "rg"  # 🖌️ Vary (Region): the modal, then four edits of one part
    ZOOM_2 = "z2"  # 🔍 Zoom Out 2×
    ZOOM_1_5 = "z15"  # 🔍 Zoom Out 1.5×
    ZOOM_CUSTOM = "zc"  # 🔍 Custom Zoom: the modal (factor, prompt), then Zoom Out
    SQUARE = "sq"  # Make Square (only on images that are not square)
    PAN_LEFT = "pl"
    PAN_RIGHT = "pr"
    PAN_UP = "pu"
    PAN_DOWN = "pd"


TEMPLATE = re.compile(
    r"easel:e:(?P<action>"
    + "|".join(re.escape(a.value) for a in EditAction)
    + r"):(?P<job>\d{1,18}):(?P<index>[0-3])"
)


def custom_id(action: EditAction, job_id: int, index: int) -> str:
    return f"easel:e:{action.value}:{job_id}:{index}"


class EditButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=TEMPLATE):
    def __init__(
        self,
        action: EditAction,
        job_id: int,
        index: int,
        *,
        label: str | None = None,
        emoji: str | None = None,
        row: int | None = None,
    ) -> None:
        super().__init__(
            discord.ui.Button(
                label=label,
                emoji=emoji,
                style=discord.ButtonStyle.secondary,
                row=row,
                custom_id=custom_id(action, job_id, index),
            )
        )
        self.action = action
        self.job_id = job_id
        self.index = index

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: re.Match[str]
    ) -> EditButton:
        return cls(EditAction(match["action"]), int(match["job"]), int(match["index"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: EditCog = interaction.client.get_cog("Edit")  # type: ignore[attr-defined,assignment]
        await cog.press(interaction, self.action, self.job_id, self.index)


# The single-image view's rows 0 and 1 hold Upscale, Vary, Remix, 🔄, ✉️ and ❌; these take
# rows 2 and 3 (Discord allows 5 rows of 5 buttons).
EDIT_ROWS = (
    (EditAction.REGION, "Vary (Region)", "🖌️", 2),
    (EditAction.ZOOM_2, "Zoom Out 2×", "🔍", 2),
    (EditAction.ZOOM_1_5, "Zoom Out 1.5×", "🔍", 2),
    (EditAction.ZOOM_CUSTOM, "Custom Zoom", "🔍", 2),
    (EditAction.SQUARE, "Make Square", None, 2),
    (EditAction.PAN_LEFT, None, "⬅️", 3),
    (EditAction.PAN_RIGHT, None, "➡️", 3),
    (EditAction.PAN_UP, None, "⬆️", 3),
    (EditAction.PAN_DOWN, None, "⬇️", 3),
)


def add_edit_rows(view: discord.ui.View, job: Job, index: int) -> None:
    """The edit buttons for image ``index`` of ``job``; Make Square only when it is not."""
    square = job.spec.width == job.spec.height
    for action, label, emoji, row in EDIT_ROWS:
        if action is EditAction.SQUARE and square:
            continue
        view.add_item(EditButton(action, job.id, index, label=label, emoji=emoji, row=row))


CELL_NAMES = (
    "top left",
    "top middle",
    "top right",
    "middle left",
    "centre",
    "middle right",
    "bottom left",
    "bottom middle",
    "bottom right",
)


class RegionModal(discord.ui.Modal, title="Vary (Region)"):
    """Say where (in words, as cells, or with a mask) and what it should show instead. The
    service checks that exactly one "where" is given.

    Its custom_id is discord.py's random default: two people editing the same image each get
    their own modal."""

    def __init__(self, cog: EditCog, job_id: int, index: int, *, text: str) -> None:
        super().__init__(timeout=600)
        self.cog = cog
        self.job_id = job_id
        self.index = index
        # Discord: text inputs up to 4000 characters, labels up to 45, descriptions up to 100.
        self.area: discord.ui.TextInput[RegionModal] = discord.ui.TextInput(
            max_length=200, required=False, placeholder="the sky, the dog's hat"
        )
        self.cells: discord.ui.Select[RegionModal] = discord.ui.Select(
            options=[
                discord.SelectOption(label=f"{n} {name}", value=str(n))
                for n, name in enumerate(CELL_NAMES, start=1)
            ],
            min_values=0,
            max_values=len(CELL_NAMES),
            required=False,
        )
        self.mask: discord.ui.FileUpload[RegionModal] = discord.ui.FileUpload(
            min_values=0, max_values=1, required=False
        )
        self.prompt: discord.ui.TextInput[RegionModal] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph, max_length=1000, default=text[:1000] or None
        )
        self.add_item(
            discord.ui.Label(
                text="What to change",
                description="Describe it, or pick cells below, or upload a mask",
                component=self.area,
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Or: cells of a 3×3 grid",
                description="1-9, left to right",
                component=self.cells,
            )
        )
        self.add_item(
            discord.ui.Label(
                text="Or: a mask",
                description="Black and white, white = change",
                component=self.mask,
            )
        )
        self.add_item(discord.ui.Label(text="New prompt", component=self.prompt))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.region(
            interaction,
            self.job_id,
            self.index,
            prompt=self.prompt.value,
            area=self.area.value.strip() or None,
            cells=[int(v) for v in self.cells.values] or None,
            mask=self.mask.values[0] if self.mask.values else None,
        )


class ZoomModal(discord.ui.Modal, title="Custom Zoom"):
    """A zoom factor from 1.1 to 2.0 (checked by the service) and an optional new prompt."""

    def __init__(self, cog: EditCog, job_id: int, index: int, *, text: str) -> None:
        super().__init__(timeout=600)
        self.cog = cog
        self.job_id = job_id
        self.index = index
        self.factor: discord.ui.TextInput[ZoomModal] = discord.ui.TextInput(
            max_length=8, default="1.5"
        )
        self.prompt: discord.ui.TextInput[ZoomModal] = discord.ui.TextInput(
            style=discord.TextStyle.paragraph,
            max_length=1000,
            required=False,
            placeholder=text[:100] or None,  # left empty: the image's own prompt
        )
        self.add_item(
            discord.ui.Label(text="Zoom out by", description="1.1 to 2.0", component=self.factor)
        )
        self.add_item(discord.ui.Label(text="Prompt (optional)", component=self.prompt))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.cog.zoom(
            interaction,
            self.job_id,
            self.index,
            factor=self.factor.value,
            prompt=self.prompt.value.strip() or None,
        )
