"""/imagine, /show and every button on a result.

Each path answers Discord first (within its 3 seconds), with the visibility the core decided
from memory (the caller's cached settings, and whether the press came from a private result),
then calls one service method and hands the result to :class:`Delivery`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.cogs.common import actor_from, delete_messages, model_choices, read_attachment
from bot.cogs.imagine.buttons import Action, RemixModal
from bot.cogs.imagine.delivery import Delivery, ProgressRelay, Reply, Undeliverable
from bot.core.errors import EaselError
from bot.core.service import Actor, Press, Service, Submission, Upload

if TYPE_CHECKING:
    from bot.client import EaselBot

log = logging.getLogger(__name__)

# What each button that makes a job asks of the service: (service, presser, job id, image index,
# press, progress) → the submission.
MakeJob = Callable[[Service, Actor, int, Any, Press, ProgressRelay], Awaitable[Submission]]
MAKES_A_JOB: dict[Action, MakeJob] = {
    Action.VARY: lambda s, a, j, i, p, r: s.vary(a, j, i, strong=True, press=p, on_progress=r),
    Action.VARY_STRONG: lambda s, a, j, i, p, r: s.vary(
        a, j, i, strong=True, press=p, on_progress=r
    ),
    Action.VARY_SUBTLE: lambda s, a, j, i, p, r: s.vary(
        a, j, i, strong=False, press=p, on_progress=r
    ),
    Action.REROLL: lambda s, a, j, i, p, r: s.reroll(a, j, press=p, on_progress=r),
    Action.UPSCALE: lambda s, a, j, i, p, r: s.upscale(a, j, i, press=p, on_progress=r),
    Action.UPSCALE_SUBTLE: lambda s, a, j, i, p, r: s.upscale(
        a, j, i, mode="subtle", press=p, on_progress=r
    ),
}


def on_private_message(interaction: discord.Interaction) -> bool:
    message = interaction.message
    return bool(message is not None and message.flags.ephemeral)


class ImagineCog(commands.Cog, name="Imagine"):
    def __init__(self, bot: EaselBot, progress_interval: float) -> None:
        self.bot = bot
        self.delivery = Delivery(bot, progress_interval)

    @property
    def service(self) -> Service:
        return self.bot.service

    def reply_for(self, interaction: discord.Interaction, *, private: bool) -> Reply:
        return Reply(
            self.bot,
            channel_id=interaction.channel_id,
            interaction=interaction,
            user_id=interaction.user.id,
            private=private,
        )

    # -- commands ------------------------------------------------------------------------------

    @app_commands.command(name="imagine", description="Make four images from a prompt")
    @app_commands.describe(
        prompt="What to draw, with parameters such as --ar 16:9 --seed 42 --no text",
        image="A start image (PNG, JPEG or WebP) to draw from",
        control="Follow the image's edges, depth or lines instead (like --control)",
        negative="Things to keep out of the image (like --no)",
        model="Which model draws it (like --model; /models lists them)",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        image: discord.Attachment | None = None,
        control: Literal["canny", "depth", "lineart", "scribble"] | None = None,
        negative: app_commands.Range[str, 1, 1000] | None = None,
        model: app_commands.Range[str, 1, 100] | None = None,
    ) -> None:
        actor = actor_from(interaction)
        private = self.service.answers_privately(actor)
        # Answer first: Discord allows 3 s for the first response, and nothing below is that fast.
        await interaction.response.defer(ephemeral=private, thinking=True)
        if model:
            prompt = f"{prompt} --model {model}"
        if control:
            prompt = f"{prompt} --control {control}"
        service = self.service
        first = self.reply_for(interaction, private=private)
        try:
            prompts = await service.permutations(actor, prompt)
        except EaselError as exc:
            await first.update(f"❌ {exc}")
            return
        if len(prompts) > 1:  # each its own job and message, each charged: said first
            await first.update(
                f"Your {{…}} options make {len(prompts)} prompts: {len(prompts)} jobs, each "
                "charged like any other."
            )

        download: asyncio.Task[Upload] | None = None  # once, for every {…} prompt

        async def submit(text: str, relay: ProgressRelay) -> Submission:
            nonlocal download
            upload = None
            if image is not None:
                if download is None:
                    limit = service.config.max_upload_bytes
                    download = asyncio.ensure_future(
                        read_attachment(image, max_bytes=limit, what="The start image")
                    )
                upload = await download
            return await service.imagine(
                actor, text, upload=upload, negative=negative, on_progress=relay
            )

        runs = []
        for text in prompts:
            reply = first if len(prompts) == 1 else self.reply_for(interaction, private=private)
            reply.followup = len(prompts) > 1
            runs.append(
                self.delivery.run(reply, functools.partial(submit, text), interaction.user.id)
            )
        await asyncio.gather(*runs)

    @imagine.autocomplete("model")
    async def _model_names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return await model_choices(self.service, actor_from(interaction), current)

    @app_commands.command(name="show", description="Bring back a past job with live buttons")
    @app_commands.describe(job="The job number (from /history)")
    async def show(self, interaction: discord.Interaction, job: app_commands.Range[int, 1]) -> None:
        actor = actor_from(interaction)
        private = self.service.answers_privately(actor) or not await self.service.may_show_here(
            actor, job
        )
        await interaction.response.defer(ephemeral=private, thinking=True)
        reply = self.reply_for(interaction, private=private)
        try:
            outcome = await self.service.show(actor, job)
            owner = await self.service.discord_id_of(outcome.job.user_id)
            await self.delivery.show(reply, outcome, owner)
        except EaselError as exc:
            await reply.update(f"❌ {exc}")

    # -- buttons -------------------------------------------------------------------------------

    async def press(
        self, interaction: discord.Interaction, action: Action, job_id: int, index: int | None
    ) -> None:
        """A button on a result. The first response (a modal, or a deferral with the right
        visibility) is decided from memory only; the service checks everything else."""
        actor = actor_from(interaction)
        message_id = interaction.message.id if interaction.message else 0
        press = Press(message_id, str(interaction.data.get("custom_id", "")))  # type: ignore[union-attr]
        on_private = on_private_message(interaction)
        if action is Action.REMIX or (action is Action.VARY and self.service.remix_mode_now(actor)):
            assert index is not None
            known = self.service.recent_job(job_id)
            text = known.spec.prompt if known is not None else ""
            if known is not None and known.spec.negative:
                text += f" --no {known.spec.negative}"
            modal = RemixModal(self, job_id, index, text=text)
            await interaction.response.send_modal(modal)
            return
        if action is Action.DELETE:
            await self._delete(interaction, actor, job_id)
            return
        if action is Action.DM:
            await self._send_to_dm(interaction, actor, job_id, index, press)
            return
        private = self.service.answers_privately(actor, on_private_message=on_private)
        await interaction.response.defer(ephemeral=private, thinking=True)
        reply = self.reply_for(interaction, private=private)
        if action is Action.TAKE:
            assert index is not None
            await self._take(reply, actor, job_id, index, press)
            return
        make = functools.partial(MAKES_A_JOB[action], self.service, actor, job_id, index, press)
        await self.delivery.run(reply, make, interaction.user.id)

    async def _take(
        self, reply: Reply, actor: Actor, job_id: int, index: int, press: Press
    ) -> None:
        """U1–U4: one image of the grid on its own (no job is made)."""
        try:
            outcome = await self.service.take(actor, job_id, index, press=press)
            owner = await self.service.discord_id_of(outcome.job.user_id)
            await self.delivery.show(reply, outcome, owner)
        except EaselError as exc:
            await reply.update(f"❌ {exc}")

    async def remix(
        self, interaction: discord.Interaction, job_id: int, index: int, prompt: str
    ) -> None:
        """The Remix modal was submitted: answer at once, then vary with the new prompt."""
        actor = actor_from(interaction)
        private = self.service.answers_privately(
            actor, on_private_message=on_private_message(interaction)
        )
        await interaction.response.defer(ephemeral=private, thinking=True)
        message_id = interaction.message.id if interaction.message else 0
        press = Press(message_id, f"remix:{job_id}:{index}")

        async def submit(relay: ProgressRelay) -> Submission:
            return await self.service.vary(
                actor, job_id, index, strong=True, prompt=prompt, press=press, on_progress=relay
            )

        await self.delivery.run(
            self.reply_for(interaction, private=private), submit, interaction.user.id
        )

    async def _delete(self, interaction: discord.Interaction, actor: Actor, job_id: int) -> None:
        """❌: the owner deletes the result, its images and every message showing them."""
        # A deferred update: "the original response" is now the pressed message itself, which
        # is how an ephemeral (private) result can be reached at all.
        await interaction.response.defer()
        try:
            messages = await self.service.delete_result(actor, job_id)
        except EaselError as exc:
            await interaction.followup.send(f"❌ {exc}", ephemeral=True)
            return
        unreachable = await delete_messages(self.bot, messages)
        if on_private_message(interaction):
            await interaction.edit_original_response(content="(deleted)", attachments=[], view=None)
        left = f" {unreachable} message(s) could not be reached." if unreachable else ""
        await interaction.followup.send(f"Deleted job #{job_id}.{left}", ephemeral=True)

    async def _send_to_dm(
        self,
        interaction: discord.Interaction,
        actor: Actor,
        job_id: int,
        index: int | None,
        press: Press,
    ) -> None:
        """✉️: a copy of the result in the presser's direct messages."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            outcome = await self.service.copy_to_dm(actor, job_id, index, press=press)
            owner = await self.service.discord_id_of(outcome.job.user_id)
            reply = Reply(self.bot, channel_id=None, user_id=interaction.user.id, private=True)
            await self.delivery.show(reply, outcome, owner)
        except EaselError as exc:
            await interaction.edit_original_response(content=f"❌ {exc}")
            return
        except Undeliverable:
            await interaction.edit_original_response(
                content="❌ Discord would not let me message you: allow direct messages from "
                "this server's members, then press ✉️ again."
            )
            return
        await interaction.edit_original_response(content="Sent to your direct messages. ✉️")
