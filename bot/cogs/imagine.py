"""/imagine, /show and the buttons: defer at once, call the service, render what comes back.

Results go to the interaction's message while its token lives (15 minutes), then to the channel
as plain messages (or to the user's DMs for private results).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands
from PIL import Image as PILImage
from PIL import ImageFilter

from bot.cogs.common import actor_from
from bot.core.errors import BadImage, EaselError, NotFound
from bot.core.imaging import check_upload_meta, compose_grid, fit_for_upload
from bot.core.models import Image, Job
from bot.core.service import Actor, Outcome, Service, Submission, Upload
from bot.views import RemixModal, grid_view, single_view
from engine.requests import Progress

if TYPE_CHECKING:
    from bot.client import EaselBot

log = logging.getLogger(__name__)

# Interaction tokens live 15 minutes (Discord docs, "Receiving and Responding"); stop using one
# a little before, rather than race the expiry.
TOKEN_LIFETIME = 15 * 60 - 30
# Webhook message edits share a per-channel rate limit (about 5 per 5 s); one progress edit every
# 2 s leaves room for everything else.
PROGRESS_EDIT_INTERVAL = 2.0
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # bytes, without server boosts
PROMPT_SHOWN = 600  # characters of the prompt shown in a message (2,000 in all)


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prompt_line(job: Job, user_id: int | None) -> str:
    prompt = job.spec.prompt
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    who = f" — <@{user_id}>" if user_id else ""
    return f"**{discord.utils.escape_markdown(prompt)}**{who}"


@dataclass
class Attachment:
    data: bytes
    filename: str

    def file(self) -> discord.File:
        return discord.File(io.BytesIO(self.data), filename=self.filename)


class Reply:
    """The message that shows one job: edited in place while possible."""

    def __init__(
        self,
        bot: EaselBot,
        *,
        channel_id: int | None,
        interaction: discord.Interaction | None = None,
        user_id: int | None = None,
        private: bool = False,
    ) -> None:
        self.bot = bot
        self.channel_id = channel_id
        self.interaction = interaction
        self.user_id = user_id
        self.private = private
        self.started = time.monotonic()
        self.message: discord.Message | None = None
        self.message_id: int | None = None
        self.followup: discord.WebhookMessage | None = None

    @property
    def upload_limit(self) -> int:
        if self.interaction is not None:
            return self.interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        return DEFAULT_UPLOAD_LIMIT

    async def update(
        self,
        content: str,
        *,
        attachments: list[Attachment] | None = None,
        view: discord.ui.View | None = None,
    ) -> None:
        kwargs: dict[str, Any] = {"content": content[:2000]}
        if view is not None:
            kwargs["view"] = view
        if self.interaction is not None and time.monotonic() - self.started < TOKEN_LIFETIME:
            if attachments is not None:
                kwargs["attachments"] = [a.file() for a in attachments]
            try:
                await self._edit_interaction(kwargs)
                return
            except discord.HTTPException as exc:
                if exc.status not in (401, 404):  # 401/50027: the token expired
                    raise
                log.info("Interaction token expired; delivering to the channel instead")
        self.interaction = None
        kwargs.pop("attachments", None)
        if self.message is not None:
            if attachments is not None:
                kwargs["attachments"] = [a.file() for a in attachments]
            self.message = await self.message.edit(**kwargs)
            return
        destination = await self._destination()
        if destination is None:
            return
        if attachments:
            kwargs["files"] = [a.file() for a in attachments]
        self.message = await destination.send(**kwargs)
        self.message_id = self.message.id

    async def _edit_interaction(self, kwargs: dict[str, Any]) -> None:
        assert self.interaction is not None
        if not self.private:
            message = await self.interaction.edit_original_response(**kwargs)
            self.message_id = message.id
            return
        # Private: the public "thinking" message goes, and an ephemeral one takes its place.
        if self.followup is None:
            with contextlib.suppress(discord.HTTPException):
                await self.interaction.delete_original_response()
            files = kwargs.pop("attachments", None)
            if files:
                kwargs["files"] = files
            self.followup = await self.interaction.followup.send(
                ephemeral=True, wait=True, **kwargs
            )
        else:
            self.followup = await self.followup.edit(**kwargs)

    async def _destination(self) -> discord.abc.Messageable | None:
        if self.private and self.user_id is not None:
            user = self.bot.get_user(self.user_id) or await self.bot.fetch_user(self.user_id)
            return user
        if self.channel_id is None:
            return None
        return self.bot.get_partial_messageable(self.channel_id)


class ProgressRelay:
    """Turns the engine's per-step progress into throttled message edits with a preview."""

    def __init__(
        self,
        reply: Reply,
        render: Callable[[Progress], str],
        interval: float = PROGRESS_EDIT_INTERVAL,
    ) -> None:
        self.reply = reply
        self.interval = interval
        self.render = render
        self.latest: Progress | None = None
        self.next_at = 0.0
        self.task: asyncio.Task[None] | None = None
        self.closed = False

    def __call__(self, progress: Progress) -> None:
        if self.closed:
            return
        self.latest = progress
        if self.task is None or self.task.done():
            self.task = asyncio.create_task(self._flush())

    async def _flush(self) -> None:
        wait = self.next_at - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        progress = self.latest
        if progress is None or self.closed:
            return
        self.next_at = time.monotonic() + self.interval
        attachments = None
        if progress.preview is not None:
            data = await asyncio.to_thread(_png, progress.preview)
            attachments = [Attachment(data, "preview.png")]
        try:
            await self.reply.update(self.render(progress), attachments=attachments)
        except discord.HTTPException:
            log.warning("A progress edit failed", exc_info=True)

    async def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


class Jobs:
    """Runs a submission through to its message; shared by commands, buttons and resumption."""

    def __init__(self, bot: EaselBot, progress_interval: float = PROGRESS_EDIT_INTERVAL) -> None:
        self.bot = bot
        self.progress_interval = progress_interval

    @property
    def service(self) -> Service:
        return self.bot.service

    # -- rendering -----------------------------------------------------------------------------

    def _visible(self, image: Image, blur: bool) -> PILImage.Image:
        picture = self.service.open_image(image)
        if image.withheld:
            if blur:
                return picture.filter(ImageFilter.GaussianBlur(radius=max(picture.size) / 12))
            return PILImage.new("RGB", picture.size, (54, 57, 63))
        return picture

    def _picture_file(
        self, images: list[Image], blur: bool, limit: int, stem: str
    ) -> tuple[bytes, str]:
        """The file to post (off the event loop: decoding, compositing and encoding are slow).
        A single image goes as its stored PNG, generation parameters included."""
        if len(images) == 1 and not images[0].withheld:
            png = self.service.image_bytes(images[0])
        else:
            pictures = [self._visible(i, blur) for i in images]
            png = _png(pictures[0] if len(pictures) == 1 else compose_grid(pictures))
        return fit_for_upload(png, limit, stem)

    async def render_job(
        self, outcome: Outcome, limit: int, user_id: int | None
    ) -> tuple[str, Attachment, discord.ui.View]:
        job, images = outcome.job, [i for i in outcome.images if not i.deleted]
        guild = await self.service.store.get_guild_settings(job.guild_id) if job.guild_id else None
        blur = bool(guild and guild.blur_flagged)
        single = len(images) == 1
        data, filename = await asyncio.to_thread(
            self._picture_file, images, blur, limit, f"easel_{job.id}"
        )
        withheld = [i.index + 1 for i in images if i.withheld]
        if withheld and blur:
            filename = "SPOILER_" + filename
        seeds = f"seed {images[0].seed}" if single else f"seeds {images[0].seed}–{images[-1].seed}"
        lines = [
            prompt_line(job, user_id),
            f"Job #{job.id} · {job.kind} · {job.spec.width}×{job.spec.height} · {seeds} · "
            f"{job.spec.sampler}, {job.spec.steps} steps",
            f"`{discord.utils.escape_markdown(self.service.remake_command(job))[:900]}`",
        ]
        if withheld:
            kept = "blurred" if blur else "withheld"
            lines.append(f"Image {', '.join(map(str, withheld))} {kept} by the image check.")
        view = single_view(job, images[0].index) if single else grid_view(job, images)
        return "\n".join(lines), Attachment(data, filename), view

    # -- running a job -------------------------------------------------------------------------

    async def run(
        self,
        reply: Reply,
        submit: Callable[[ProgressRelay], Awaitable[Submission]],
        user_id: int | None,
    ) -> None:
        """Submit, show the queue position and progress, then the result (or the error)."""
        self.bot.track(asyncio.current_task())  # so closing the bot stops the delivery
        try:
            await self._run(reply, submit, user_id)
        except discord.HTTPException:
            log.warning("Discord refused a message for a job", exc_info=True)
        except Exception:
            log.exception("A job's delivery failed")
            # RuntimeError: the client is closing and its HTTP session is gone.
            with contextlib.suppress(discord.HTTPException, RuntimeError):
                await reply.update(
                    "❌ Something went wrong on Easel's side; the owner can find it in the log."
                )

    async def _run(
        self,
        reply: Reply,
        submit: Callable[[ProgressRelay], Awaitable[Submission]],
        user_id: int | None,
    ) -> None:
        title: list[str] = [""]

        def render(p: Progress) -> str:
            percent = int(100 * p.step / p.total) if p.total else 0
            return f"{title[0]} ({percent}%)" if p.step else f"{title[0]} (starting)"

        relay = ProgressRelay(reply, render, self.progress_interval)
        try:
            submission = await submit(relay)
        except EaselError as exc:
            await reply.update(f"❌ {exc}")
            return
        job = submission.job
        title[0] = prompt_line(job, user_id)
        # From here on the job exists: whatever Discord says to the status messages, it is
        # finished and recorded (or its failure is).
        if not submission.created:  # finish() below waits for the first press's result
            await self._status(reply, f"{title[0]}\nAlready on it: that press made job #{job.id}.")
        else:
            ahead = submission.position
            await self._status(
                reply, f"{title[0]} (queued, {ahead} ahead)" if ahead else f"{title[0]} (starting)"
            )
        await self._remember_message(job.id, reply)
        try:
            outcome = await self.service.finish(submission)
        except EaselError as exc:
            await relay.close()
            await reply.update(f"{title[0]}\n❌ {exc}", attachments=[])
            return
        finally:
            await relay.close()
        content, attachment, view = await self.render_job(outcome, reply.upload_limit, user_id)
        await reply.update(content, attachments=[attachment], view=view)
        await self._remember_message(job.id, reply)  # it may be a channel message by now

    @staticmethod
    async def _status(reply: Reply, text: str) -> None:
        try:
            await reply.update(text)
        except discord.HTTPException:
            log.warning("A status message failed; the job goes on", exc_info=True)

    async def _remember_message(self, job_id: int, reply: Reply) -> None:
        if reply.message_id is not None and reply.channel_id is not None:
            await self.service.attach_message(job_id, reply.channel_id, reply.message_id)

    def reply_for(self, interaction: discord.Interaction, *, private: bool = False) -> Reply:
        return Reply(
            self.bot,
            channel_id=interaction.channel_id,
            interaction=interaction,
            user_id=interaction.user.id,
            private=private,
        )

    # -- buttons -------------------------------------------------------------------------------

    async def on_button(
        self, interaction: discord.Interaction, action: str, job_id: int, index: int | None
    ) -> None:
        actor = actor_from(interaction)
        try:
            if action == "rx" or (action == "v" and await self._remix_mode(actor)):
                job = (await self.service.job(job_id))[0]
                assert index is not None
                await interaction.response.send_modal(RemixModal(self, job, index))
                return
        except EaselError as exc:
            await interaction.response.send_message(f"❌ {exc}", ephemeral=True)
            return
        await interaction.response.defer(thinking=True)
        if action == "u":
            assert index is not None
            await self._take(interaction, job_id, index)
            return
        message_id = interaction.message.id if interaction.message else 0
        key = f"{message_id}:{action}:{job_id}:{index}:{interaction.user.id}"
        service = self.service

        async def submit(relay: ProgressRelay) -> Submission:
            if action == "r":
                return await service.reroll(actor, job_id, request_key=key, on_progress=relay)
            assert index is not None
            if action == "up":
                return await service.upscale(
                    actor, job_id, index, request_key=key, on_progress=relay
                )
            strong = action in ("v", "vS")
            return await service.vary(
                actor, job_id, index, strong=strong, request_key=key, on_progress=relay
            )

        await self.run(self.reply_for(interaction), submit, interaction.user.id)

    async def _remix_mode(self, actor: Actor) -> bool:
        return (await self.service.settings(actor)).remix_mode

    async def _take(self, interaction: discord.Interaction, job_id: int, index: int) -> None:
        reply = self.reply_for(interaction)
        try:
            job, images = await self.service.job(job_id)
            image = next((i for i in images if i.index == index and not i.deleted), None)
            if image is None:
                raise NotFound(f"Job #{job_id} has no image {index + 1}.")
        except EaselError as exc:
            await reply.update(f"❌ {exc}")
            return
        content, attachment, view = await self.render_job(
            Outcome(job, [image]), reply.upload_limit, interaction.user.id
        )
        await reply.update(
            content.replace("\n", f" · Image #{index + 1}\n", 1),
            attachments=[attachment],
            view=view,
        )

    async def remix(
        self, interaction: discord.Interaction, job_id: int, index: int, prompt: str, strong: bool
    ) -> None:
        await interaction.response.defer(thinking=True)
        actor = actor_from(interaction)

        async def submit(relay: ProgressRelay) -> Submission:
            return await self.service.vary(
                actor, job_id, index, strong=strong, prompt=prompt, on_progress=relay
            )

        await self.run(self.reply_for(interaction), submit, interaction.user.id)

    # -- resuming after a restart ----------------------------------------------------------

    async def resume(self) -> None:
        """Jobs left queued or running by the last process: finish them and post the results
        to their channels (their interaction tokens are long gone)."""
        by_job: dict[int, Submission] = {}
        relays: dict[int, ProgressRelay] = {}

        def on_progress(p: Progress) -> None:
            relay = relays.get(p.job_id or -1)
            if relay is not None:
                relay(p)

        for submission in await self.service.resume(on_progress=on_progress):
            by_job[submission.job.id] = submission
        for job_id, submission in by_job.items():
            job = submission.job
            user = await self.service.store.get_user(job.user_id)
            reply = Reply(self.bot, channel_id=job.channel_id, user_id=user.discord_id)
            if job.channel_id is None:  # a CLI job: nobody to tell
                self.bot.spawn(self._quietly(self.service.finish(submission)))
                continue
            title = prompt_line(job, user.discord_id)
            relays[job_id] = ProgressRelay(
                reply,
                lambda p, title=title: f"{title} (resumed, {p.step}/{p.total} steps)",
                self.progress_interval,
            )
            self.bot.spawn(self._deliver_resumed(reply, submission, user.discord_id))

    async def _deliver_resumed(
        self, reply: Reply, submission: Submission, user_id: int | None
    ) -> None:
        async def already(_: ProgressRelay) -> Submission:
            return submission

        try:
            await self.run(reply, already, user_id)
        except discord.HTTPException:
            log.warning("Could not deliver resumed job #%s", submission.job.id, exc_info=True)

    @staticmethod
    async def _quietly(coro: Awaitable[Any]) -> None:
        with contextlib.suppress(EaselError):
            await coro


class ImagineCog(commands.Cog):
    def __init__(self, bot: EaselBot) -> None:
        self.bot = bot

    @app_commands.command(name="imagine", description="Make four images from a prompt")
    @app_commands.describe(
        prompt="What to draw, with parameters such as --ar 16:9 --seed 42 --no text",
        image="A start image (PNG, JPEG or WebP) to draw from",
        negative="Things to keep out of the image (like --no)",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 4000],
        image: discord.Attachment | None = None,
        negative: app_commands.Range[str, 1, 1000] | None = None,
    ) -> None:
        # Defer first: Discord allows 3 s for the first response, and nothing below is that fast.
        await interaction.response.defer(thinking=True)
        actor = actor_from(interaction)
        jobs: Jobs = self.bot.jobs
        service = self.bot.service
        private = interaction.guild_id is not None and (await service.settings(actor)).private
        reply = jobs.reply_for(interaction, private=private)

        async def submit(relay: ProgressRelay) -> Submission:
            upload = None
            if image is not None:
                # Size and type are checked before anything is downloaded, and the file's own
                # name is never used.
                check_upload_meta(
                    image.content_type, image.size, max_bytes=service.config.max_upload_bytes
                )
                try:
                    data = await image.read()
                except discord.HTTPException:
                    raise BadImage("Could not download the start image from Discord.") from None
                upload = Upload(data, image.content_type)
            return await service.imagine(
                actor, prompt, upload=upload, negative=negative, on_progress=relay
            )

        await jobs.run(reply, submit, interaction.user.id)

    @app_commands.command(name="show", description="Bring back a past job with live buttons")
    @app_commands.describe(job="The job number (from /history)")
    async def show(self, interaction: discord.Interaction, job: app_commands.Range[int, 1]) -> None:
        await interaction.response.defer(thinking=True)
        jobs: Jobs = self.bot.jobs
        reply = jobs.reply_for(interaction)
        actor = actor_from(interaction)
        try:
            found, images = await self.bot.service.job(job)
            user = await self.bot.service.user(actor)
            if found.user_id != user.id:
                # Someone else's job only where it was first shown (so an age-restricted
                # channel's images stay there), and never a private result.
                owner = await self.bot.service.store.get_user(found.user_id)
                if found.channel_id != interaction.channel_id or owner.settings.private:
                    raise NotFound(f"There is no job #{job} here.")
            if not [i for i in images if not i.deleted]:
                raise NotFound(f"Job #{job} has no images ({found.state}).")
        except EaselError as exc:
            await reply.update(f"❌ {exc}")
            return
        owner = (await self.bot.service.store.get_user(found.user_id)).discord_id
        content, attachment, view = await jobs.render_job(
            Outcome(found, images), reply.upload_limit, owner
        )
        await reply.update(content, attachments=[attachment], view=view)
