"""Delivering a job to Discord: the message that shows it, edited in place from "queued" through
the previews to the result.

While the interaction token lives (15 minutes) the message is edited through it, keeping the
visibility chosen when the command or button was first answered. After that, a public message is
edited with the bot's own token (a bot may edit its own messages), and a private result goes to
the owner's direct messages (an ephemeral message cannot be reached without the token). Discord's
error codes decide what comes next: an expired token (401, code 50027) changes the route; a deleted
message (404, code 10008) means a moderator removed it, so nothing is posted again; a refusal
(403: 50001, 50013, 50007) is recorded on the job once and delivery stops, since every failed
request counts toward Discord's invalid-request limit (10,000 per 10 minutes).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image as PILImage
from PIL import ImageFilter

from bot.cogs.imagine.buttons import grid_view, single_view
from bot.core.errors import EaselError
from bot.core.imaging import compose_grid, fit_for_upload
from bot.core.models import Image, Job
from bot.core.service import Outcome, Service, Submission
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
# Discord's JSON error codes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
INVALID_WEBHOOK_TOKEN = 50027
REFUSED = {50001: "no access to the channel", 50013: "missing permissions", 50007: "DMs closed"}
_URL = re.compile(r"https?://\S+")
_BACKTICK_RUN = re.compile(r"`(?=`)")
ZERO_WIDTH_BREAK = "`\u200b"


def _png(image: PILImage.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def prompt_line(job: Job, user_id: int | None) -> str:
    """The prompt in bold and who asked. Links are shown in angle brackets, which keeps
    Discord from unfurling them under the bot's name (edits through an interaction token cannot
    set the suppress-embeds flag)."""
    prompt = job.spec.prompt
    if len(prompt) > PROMPT_SHOWN:
        prompt = prompt[: PROMPT_SHOWN - 1] + "…"
    shown = discord.utils.escape_markdown(prompt)
    shown = _URL.sub(lambda m: f"<{m.group(0).replace('>', '')}>", shown)
    who = f" — <@{user_id}>" if user_id else ""
    return f"**{shown}**{who}"


def code_span(text: str) -> str:
    """``text`` as inline code that copies back exactly: nothing escaped inside (Discord shows
    backslashes there), and fenced with more backticks than it holds, padded where it starts
    or ends with one (CommonMark code spans; Discord renders single and double fences)."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    if longest == 0:
        return f"`{text}`"
    if longest == 1:
        return f"`` {text} ``"
    # Runs of two or more cannot be fenced inline on Discord: break them with an invisible
    # character, which the prompt grammar drops again when the text is pasted back.
    return f"`` {_BACKTICK_RUN.sub(ZERO_WIDTH_BREAK, text)} ``"


class Gone(Exception):
    """The message was deleted (by a moderator, or its owner): do not post it again."""


class Undeliverable(Exception):
    """Discord refuses every way of showing this job (permissions, closed DMs)."""


def _token_expired(exc: discord.HTTPException) -> bool:
    return exc.status == 401 or exc.code in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK)


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
        user_id: int | None,
        private: bool,
        interaction: discord.Interaction | None = None,
        message_id: int | None = None,
        followup: bool = False,
    ) -> None:
        self.bot = bot
        self.channel_id = channel_id
        self.interaction = interaction
        # A message of its own after the interaction's first one (one of several jobs one
        # command made): sent as a follow-up, then edited through the same token.
        self.followup = followup
        self.webhook_message: discord.WebhookMessage | None = None
        self.user_id = user_id
        self.private = private
        self.started = time.monotonic()
        self.message_id = message_id  # the public message to edit with the bot's token
        self.dm: discord.Message | None = None
        self.ended: str | None = None  # why nothing more is sent (deleted, refused)

    @property
    def upload_limit(self) -> int:
        if self.interaction is not None:
            return self.interaction.filesize_limit or DEFAULT_UPLOAD_LIMIT
        return DEFAULT_UPLOAD_LIMIT

    @property
    def is_channel_message(self) -> bool:
        """Whether the message is a public one in ``channel_id`` (recorded for purges)."""
        return not self.private and self.dm is None and self.channel_id is not None

    async def update(
        self,
        content: str,
        *,
        attachments: list[Attachment] | None = None,
        view: discord.ui.View | None = None,
    ) -> None:
        """Show ``content``. Raises Gone or Undeliverable once; afterwards does nothing."""
        if self.ended is not None:
            return
        try:
            await self._update(content[:2000], attachments, view)
        except discord.HTTPException as exc:
            if exc.status == 404 and exc.code == UNKNOWN_MESSAGE:
                self.ended = "its message was deleted"
                raise Gone(self.ended) from None
            if exc.status == 403 and exc.code in REFUSED:
                self.ended = f"Discord refused it ({REFUSED[exc.code]})"
                raise Undeliverable(self.ended) from None
            raise

    async def _update(
        self, content: str, attachments: list[Attachment] | None, view: discord.ui.View | None
    ) -> None:
        kwargs: dict[str, Any] = {"content": content}
        if view is not None:
            kwargs["view"] = view
        if attachments is not None:
            kwargs["attachments"] = [a.file() for a in attachments]
        if self.interaction is not None and time.monotonic() - self.started < TOKEN_LIFETIME:
            try:
                message = await self._edit_through_token(kwargs)
                if not self.private:
                    self.message_id = message.id
                return
            except discord.HTTPException as exc:
                if not _token_expired(exc):
                    raise
                log.info("Interaction token expired; editing with the bot's token instead")
            if attachments is not None:  # the files were read: make them again
                kwargs["attachments"] = [a.file() for a in attachments]
        self.interaction = None
        if self.private:  # ephemeral messages cannot be reached any more: the owner's DMs
            await self._to_dm(kwargs)
        elif self.message_id is not None and self.channel_id is not None:
            channel = self.bot.get_partial_messageable(self.channel_id)
            await channel.get_partial_message(self.message_id).edit(**kwargs)
        elif self.channel_id is not None:
            kwargs["files"] = kwargs.pop("attachments", [])
            channel = self.bot.get_partial_messageable(self.channel_id)
            message = await channel.send(suppress_embeds=True, **kwargs)
            self.message_id = message.id

    async def _edit_through_token(self, kwargs: dict[str, Any]) -> discord.Message:
        assert self.interaction is not None
        if not self.followup:
            return await self.interaction.edit_original_response(**kwargs)
        if self.webhook_message is not None:
            self.webhook_message = await self.webhook_message.edit(**kwargs)
            return self.webhook_message
        kwargs = dict(kwargs)
        kwargs["files"] = kwargs.pop("attachments", [])
        self.webhook_message = await self.interaction.followup.send(
            ephemeral=self.private, wait=True, **kwargs
        )
        return self.webhook_message

    async def _to_dm(self, kwargs: dict[str, Any]) -> None:
        if self.user_id is None:
            self.ended = "nobody to send it to"
            return
        if self.dm is not None:
            self.dm = await self.dm.edit(**kwargs)
            return
        kwargs["files"] = kwargs.pop("attachments", [])
        user = self.bot.get_user(self.user_id) or await self.bot.fetch_user(self.user_id)
        self.dm = await user.send(suppress_embeds=True, **kwargs)


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
        if self.closed or self.reply.ended is not None:
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
        except (Gone, Undeliverable):
            self.closed = True  # the job goes on; its end is recorded by Delivery
        except discord.HTTPException:
            log.warning("A progress edit failed", exc_info=True)

    async def close(self) -> None:
        self.closed = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


Submit = Callable[[ProgressRelay], Awaitable[Submission]]


class Delivery:
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

    async def render(
        self, outcome: Outcome, limit: int, user_id: int | None
    ) -> tuple[str, Attachment, discord.ui.View]:
        job, images = outcome.job, [i for i in outcome.images if not i.deleted]
        blur = await self.service.blur_flagged(job)
        single = len(images) == 1
        data, filename = await asyncio.to_thread(
            self._picture_file, images, blur, limit, f"easel_{job.id}"
        )
        withheld = [i.index + 1 for i in images if i.withheld]
        if withheld and blur:
            filename = "SPOILER_" + filename
        seeds = f"seed {images[0].seed}" if single else f"seeds {images[0].seed}–{images[-1].seed}"
        what = f" · Image #{images[0].index + 1}" if single and job.spec.count > 1 else ""
        lines = [
            prompt_line(job, user_id) + what,
            f"Job #{job.id} · {job.kind} · {job.spec.width}×{job.spec.height} · {seeds} · "
            f"{job.spec.sampler}, {job.spec.steps} steps",
            code_span(self.service.remake_command(job)[:900]),
        ]
        if withheld:
            kept = "blurred" if blur else "withheld"
            lines.append(f"Image {', '.join(map(str, withheld))} {kept} by the image check.")
        view = single_view(job, images[0].index) if single else grid_view(job, images)
        return "\n".join(lines), Attachment(data, filename), view

    async def show(self, reply: Reply, outcome: Outcome, user_id: int | None) -> None:
        """Post a finished job (a U copy, /show, a DM) and remember where it was posted."""
        content, attachment, view = await self.render(outcome, reply.upload_limit, user_id)
        # A ControlNet result shows the control map it followed beside it.
        control = await asyncio.to_thread(self.service.control_map_bytes, outcome.job)
        extra = [Attachment(control, f"easel_{outcome.job.id}_control.png")] if control else []
        await reply.update(content, attachments=[attachment, *extra], view=view)
        await self._record(outcome.job.id, reply)

    # -- running a job -------------------------------------------------------------------------

    async def run(self, reply: Reply, submit: Submit, user_id: int | None) -> None:
        """Submit, show the queue position and progress, then the result (or the error)."""
        self.bot.track(asyncio.current_task())  # so closing the bot stops the delivery
        job_id: list[int] = []
        try:
            await self._run(reply, submit, user_id, job_id)
        except (Gone, Undeliverable):
            pass  # recorded below, whichever edit met it first (a progress edit, say)
        except discord.HTTPException:
            log.warning("Discord refused a message for a job", exc_info=True)
        except Exception:
            log.exception("A job's delivery failed")
            # RuntimeError: the client is closing and its HTTP session is gone.
            with contextlib.suppress(discord.HTTPException, RuntimeError, Gone, Undeliverable):
                await reply.update(
                    "❌ Something went wrong on Easel's side; the owner can find it in the log."
                )
        if reply.ended is not None and job_id:
            log.info("Stopped delivering job %s: %s", job_id[0], reply.ended)
            await self.service.delivery_failed(job_id[0], reply.ended)

    async def _run(
        self, reply: Reply, submit: Submit, user_id: int | None, job_id: list[int]
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
        job_id.append(job.id)
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
        await self._record(job.id, reply, main=True)
        try:
            outcome = await self.service.finish(submission)
        except EaselError as exc:
            await relay.close()
            await reply.update(f"{title[0]}\n❌ {exc}", attachments=[])
            return
        finally:
            await relay.close()
        await self.show(reply, outcome, user_id)
        await self._record(job.id, reply, main=True)  # it may be another message by now

    @staticmethod
    async def _status(reply: Reply, text: str) -> None:
        try:
            await reply.update(text)
        except discord.HTTPException:
            log.warning("A status message failed; the job goes on", exc_info=True)

    async def _record(self, job_id: int, reply: Reply, *, main: bool = False) -> None:
        if reply.is_channel_message and reply.message_id is not None:
            assert reply.channel_id is not None
            if main:
                await self.service.attach_message(job_id, reply.channel_id, reply.message_id)
            else:
                await self.service.record_message(job_id, reply.channel_id, reply.message_id)
        elif reply.dm is not None:
            await self.service.record_message(job_id, reply.dm.channel.id, reply.dm.id)

    # -- resuming after a restart --------------------------------------------------------------

    async def resume(self) -> None:
        """Jobs left queued or running by the last process: finish them and show the results
        in the messages already posted for them (their interaction tokens are long gone);
        private ones in their owner's DMs."""
        relays: dict[int, ProgressRelay] = {}

        def on_progress(p: Progress) -> None:
            relay = relays.get(p.job_id or -1)
            if relay is not None:
                relay(p)

        for submission in await self.service.resume(on_progress=on_progress):
            job = submission.job
            user_id = await self.service.discord_id_of(job.user_id)
            reply = Reply(
                self.bot,
                channel_id=job.channel_id,
                user_id=user_id,
                private=job.private,
                message_id=job.message_id,
            )
            title = prompt_line(job, user_id)
            relays[job.id] = ProgressRelay(
                reply,
                lambda p, title=title: f"{title} (resumed, {p.step}/{p.total} steps)",
                self.progress_interval,
            )
            self.bot.spawn(self.run(reply, _already(submission), user_id))


def _already(submission: Submission) -> Submit:
    async def submit(_: ProgressRelay) -> Submission:
        return submission

    return submit
