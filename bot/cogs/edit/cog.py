"""What the edit buttons and modals do: answer Discord first (a modal, or a deferral with the
visibility the core decides from memory), then call one service method and hand the job to the
imagine cog's :class:`~bot.cogs.imagine.delivery.Delivery`, which shows the 2×2 grid."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.cogs.common import actor_from, read_attachment
from bot.cogs.edit.buttons import EditAction, RegionModal, ZoomModal
from bot.cogs.imagine.cog import ImagineCog, on_private_message
from bot.cogs.imagine.delivery import ProgressRelay
from bot.core.errors import InvalidInput
from bot.core.service import Actor, Press, Service, Submission

if TYPE_CHECKING:
    from bot.client import EaselBot

# What each button that makes a job at once asks of the service: (service, presser, job id,
# image index, press, progress) → the submission.
MakeEdit = Callable[[Service, Actor, int, int, Press, ProgressRelay], Awaitable[Submission]]
MAKES_AN_EDIT: dict[EditAction, MakeEdit] = {
    EditAction.ZOOM_2: lambda s, a, j, i, p, r: s.zoom(a, j, i, factor=2.0, press=p, on_progress=r),
    EditAction.ZOOM_1_5: lambda s, a, j, i, p, r: s.zoom(
        a, j, i, factor=1.5, press=p, on_progress=r
    ),
    EditAction.SQUARE: lambda s, a, j, i, p, r: s.square(a, j, i, press=p, on_progress=r),
    EditAction.PAN_LEFT: lambda s, a, j, i, p, r: s.pan(
        a, j, i, direction="left", press=p, on_progress=r
    ),
    EditAction.PAN_RIGHT: lambda s, a, j, i, p, r: s.pan(
        a, j, i, direction="right", press=p, on_progress=r
    ),
    EditAction.PAN_UP: lambda s, a, j, i, p, r: s.pan(
        a, j, i, direction="up", press=p, on_progress=r
    ),
    EditAction.PAN_DOWN: lambda s, a, j, i, p, r: s.pan(
        a, j, i, direction="down", press=p, on_progress=r
    ),
}


class EditCog(commands.Cog, name="Edit"):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @property
    def service(self) -> Service:
        return self.bot.service

    @property
    def imagine(self) -> ImagineCog:
        return self.bot.get_cog("Imagine")  # type: ignore[return-value]

    async def press(
        self, interaction: discord.Interaction, action: EditAction, job_id: int, index: int
    ) -> None:
        """An edit button. The modals open at once; the rest defer, then make the job."""
        if action in (EditAction.REGION, EditAction.ZOOM_CUSTOM):
            known = self.service.recent_job(job_id)
            text = known.spec.prompt if known is not None else ""
            modal = RegionModal if action is EditAction.REGION else ZoomModal
            await interaction.response.send_modal(modal(self, job_id, index, text=text))
            return
        make = MAKES_AN_EDIT[action]
        button = str(interaction.data.get("custom_id", ""))  # type: ignore[union-attr]
        await self._run(
            interaction, button, lambda a, p, r: make(self.service, a, job_id, index, p, r)
        )

    async def region(
        self,
        interaction: discord.Interaction,
        job_id: int,
        index: int,
        *,
        prompt: str,
        area: str | None,
        cells: list[int] | None,
        mask: discord.Attachment | None,
    ) -> None:
        """The Vary (Region) modal was submitted."""

        async def submit(actor: Actor, press: Press, relay: ProgressRelay) -> Submission:
            upload = None
            if mask is not None:
                limit = self.service.config.max_upload_bytes
                upload = await read_attachment(mask, max_bytes=limit, what="The mask")
            return await self.service.region(
                actor,
                job_id,
                index,
                prompt=prompt,
                area=area,
                cells=cells,
                mask=upload,
                press=press,
                on_progress=relay,
            )

        await self._run(interaction, f"region:{job_id}:{index}", submit)

    async def zoom(
        self,
        interaction: discord.Interaction,
        job_id: int,
        index: int,
        *,
        factor: str,
        prompt: str | None,
    ) -> None:
        """The Custom Zoom modal was submitted."""

        async def submit(actor: Actor, press: Press, relay: ProgressRelay) -> Submission:
            return await self.service.zoom(
                actor,
                job_id,
                index,
                factor=_factor(factor),
                prompt=prompt,
                press=press,
                on_progress=relay,
            )

        await self._run(interaction, f"zoom:{job_id}:{index}", submit)

    async def _run(
        self,
        interaction: discord.Interaction,
        button: str,
        make: Callable[[Actor, Press, ProgressRelay], Awaitable[Submission]],
    ) -> None:
        """Defer with the visibility decided from memory (a press on a private result stays
        private), then make the job and show it through the imagine cog's delivery. ``button``:
        what was pressed or submitted, for the double-click rule."""
        actor = actor_from(interaction)
        press = Press(interaction.message.id if interaction.message else 0, button)
        private = self.service.answers_privately(
            actor, on_private_message=on_private_message(interaction)
        )
        await interaction.response.defer(ephemeral=private, thinking=True)
        imagine = self.imagine
        reply = imagine.reply_for(interaction, private=private)
        submit = functools.partial(make, actor, press)
        await imagine.delivery.run(reply, submit, interaction.user.id)


def _factor(text: str) -> float:
    try:
        return float(text.strip().replace(",", ".").rstrip("x×"))
    except ValueError:
        # The range is the service's to check; here only that it is a number.
        raise InvalidInput(f"The zoom factor is a number such as 1.5, not '{text}'.") from None
