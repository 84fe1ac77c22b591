"""The use cases: imagine, vary, remix, upscale, reroll, cancel, history, settings, crash recovery.

A request becomes a recorded job: parse → policy → quota → job row → engine → image files and rows
→ result. Failures are recorded; the quota is charged only for delivered images. Both adapters
(Discord and the CLI) call these methods and show their results or their errors.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from PIL import Image as PILImage

from bot.core import moderation
from bot.core.errors import (
    Banned,
    Cancelled,
    CoolingDown,
    GenerationFailed,
    InvalidInput,
    NotAllowed,
    NotFound,
    PolicyRefusal,
    QueueFull,
    QuotaExceeded,
    Refused,
    TooManyJobs,
)
from bot.core.grammar import (
    DEFAULT_PARAMETERS,
    SEED_MAX,
    Defaults,
    GenerationSpec,
    Limits,
    check_default,
    check_preset_name,
    format_spec,
    image_seed,
    parse_preset,
    parse_prompt,
    resolve,
)
from bot.core.imaging import decode_upload
from bot.core.metadata import format_parameters
from bot.core.models import (
    GuildSettings,
    Image,
    Job,
    JobKind,
    JobState,
    Member,
    NewImage,
    NewJob,
    NsfwRule,
    User,
    UserSettings,
)
from bot.core.ports import Engine, ImageClassifier, ImageFiles, JobHandle, Store
from engine.requests import (
    EngineStopped,
    GenerationError,
    GenerationRequest,
    JobCancelled,
    Operation,
    OwnerQueueFull,
    Progress,
)
from engine.requests import QueueFull as EngineQueueFull

log = logging.getLogger(__name__)

# Denoising strengths. Subtle keeps the composition, strong keeps the idea (Midjourney's
# "Vary (Subtle)" / "Vary (Strong)"); 0.3 is the common "hires fix" strength for upscaling.
SUBTLE_STRENGTH = 0.35
STRONG_STRENGTH = 0.65
UPSCALE_STRENGTH = 0.3
IMAGE_PROMPT_STRENGTH = 0.6
VARIATIONS = 4
DOUBLE_CLICK_WINDOW = 10.0
_LIVE_OR_DONE = (
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.DONE,
)  # seconds in which a second identical button press is the same job


@dataclass(frozen=True)
class Actor:
    """Who asks, and where. The adapter fills it from Discord (or the CLI's --user)."""

    key: str  # "discord:<id>" or "local:<name>"
    name: str
    guild_id: int | None = None
    channel_id: int | None = None
    nsfw_channel: bool = False  # Discord marks the channel age-restricted
    is_admin: bool = False  # Manage Server, checked by the adapter from Discord's data
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str | None


@dataclass
class Submission:
    job: Job
    created: bool  # False: a double click found the job the first click made
    position: int | None  # place in the engine queue (0 = running next); None if not queued
    handle: JobHandle | None


@dataclass(frozen=True)
class Outcome:
    job: Job
    images: list[Image]


@dataclass(frozen=True)
class ServiceConfig:
    limits: Limits = Limits()  # noqa: RUF009 - frozen, immutable
    defaults: Defaults = Defaults()  # noqa: RUF009
    daily_images_per_user: int = 200
    max_queued_per_user: int = 3
    cooldown_seconds: float = 0.0
    max_upload_bytes: int = 10 * 1024 * 1024
    max_upscale_pixels: int = 2048 * 2048
    attempts: int = 2
    admin_role_ids: tuple[int, ...] = ()


ProgressHandler = Callable[[Progress], None]


def utc_midnight(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _until(now: datetime, then: datetime) -> str:
    minutes = max(1, int((then - now).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


class Service:
    def __init__(
        self,
        store: Store,
        files: ImageFiles,
        engine: Engine,
        config: ServiceConfig = ServiceConfig(),
        *,
        classifier: ImageClassifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.engine = engine
        self.config = config
        self.classifier = classifier
        self.now = clock
        self._rng = rng or random.Random()
        self._handles: dict[int, JobHandle] = {}
        # One outcome per job, for everyone waiting on it (a double click waits with the first).
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}
        self._last_request: dict[str, float] = {}
        # The "running" write of each started job, awaited before its result is recorded.
        self._started: dict[int, asyncio.Task[Any]] = {}
        # Quota and queue checks read, then write; one admission at a time keeps them honest.
        self._admission = asyncio.Lock()

    # -- context -------------------------------------------------------------------------------

    async def user(self, actor: Actor) -> User:
        return await self.store.get_or_create_user(actor.key, actor.name)

    async def guild(self, actor: Actor) -> GuildSettings:
        if actor.guild_id is None:
            return GuildSettings()
        return await self.store.get_guild_settings(actor.guild_id)

    def limits(self, guild: GuildSettings) -> Limits:
        limits = self.config.limits
        if guild.max_steps is not None:
            limits = replace(limits, max_steps=min(limits.max_steps, guild.max_steps))
        return limits

    async def member(self, actor: Actor, user: User) -> Member | None:
        if actor.guild_id is None:
            return None
        return await self.store.get_member(actor.guild_id, user.id)

    def daily_quota(self, user: User, guild: GuildSettings, member: Member | None = None) -> int:
        """The operator's override for this user, else this server's for this member, else
        the server's default, else the installation's. A server may lower the installation's
        quota but not raise it: its members' images are made on the operator's hardware."""
        if user.daily_quota is not None:
            return user.daily_quota
        ceiling = self.config.daily_images_per_user
        for value in (member.daily_quota if member else None, guild.daily_images_per_user):
            if value is not None:
                return min(value, ceiling)
        return ceiling

    async def images_used_today(self, user: User) -> int:
        since = utc_midnight(self.now())
        if user.quota_reset_at is not None and user.quota_reset_at > since:
            since = user.quota_reset_at
        return await self.store.images_charged_since(user.id, since)

    def nsfw_allowed(self, actor: Actor, guild: GuildSettings) -> bool:
        # In direct messages (no guild) the stricter rule holds.
        return (
            actor.guild_id is not None
            and guild.nsfw_rule is NsfwRule.AGE_RESTRICTED
            and actor.nsfw_channel
        )

    def is_admin(self, actor: Actor, guild: GuildSettings) -> bool:
        roles = set(self.config.admin_role_ids) | set(guild.admin_role_ids)
        return actor.is_admin or bool(roles & set(actor.role_ids))

    def require_admin(self, actor: Actor, guild: GuildSettings) -> None:
        if not self.is_admin(actor, guild):
            raise NotAllowed(
                "Only server admins (Manage Server, or an Easel admin role) may do that."
            )

    # -- admission -----------------------------------------------------------------------------

    async def _refuse(self, actor: Actor, reason: str, **detail: Any) -> None:
        await self.store.add_audit(
            actor=actor.key, action="refuse", reason=reason, guild_id=actor.guild_id, detail=detail
        )

    async def _admit(self, actor: Actor, user: User, guild: GuildSettings, images: int) -> None:
        """Raise Refused (and audit it) if this user may not start a job of ``images`` now."""
        now = self.now()
        try:
            if guild.allowed_channel_ids and actor.channel_id not in guild.allowed_channel_ids:
                channels = ", ".join(f"<#{c}>" for c in guild.allowed_channel_ids)
                raise Refused(f"Easel is not enabled in this channel. Try {channels}.")
            member = await self.member(actor, user)
            for ban, where in ((user, ""), (member, " on this server")):
                if ban is not None and ban.is_banned(now):
                    until = (
                        f" until {ban.banned_until:%Y-%m-%d %H:%M} UTC" if ban.banned_until else ""
                    )
                    reason = f": {ban.ban_reason}" if ban.ban_reason else "."
                    raise Banned(f"You are banned from using Easel{where}{until}{reason}")
            last = self._last_request.get(user.key)
            wait = (last + self.config.cooldown_seconds - time.monotonic()) if last else 0
            if wait > 0:
                raise CoolingDown(f"Slow down: wait {wait:.0f} s before your next request.")
            unfinished, pending = await self.store.pending(user.id)
            if unfinished >= self.config.max_queued_per_user:
                raise TooManyJobs(
                    f"You already have {unfinished} jobs waiting or running (the limit is "
                    f"{self.config.max_queued_per_user}). Wait for one or /cancel one."
                )
            quota = self.daily_quota(user, guild, member)
            used = await self.images_used_today(user)
            left = quota - used - pending
            if images > left:
                reset = utc_midnight(now) + timedelta(days=1)
                if quota == 0:
                    raise QuotaExceeded("Image generation is switched off for you.")
                raise QuotaExceeded(
                    f"This needs {images} images but you have {max(left, 0)} left today "
                    f"({quota} a day, {pending} reserved by running jobs). The quota resets at "
                    f"00:00 UTC, in {_until(now, reset)}."
                )
        except Refused as exc:
            await self._refuse(actor, str(exc), kind=type(exc).__name__)
            raise

    async def _check_prompt(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        spec: GenerationSpec,
        *,
        kind: JobKind,
        has_photo: bool,
    ) -> None:
        blocklist = [e.term for e in await self.store.list_block_terms(actor.guild_id)]
        verdict = moderation.check_prompt(
            spec.prompt,
            spec.negative,
            has_image=has_photo,
            nsfw_allowed=self.nsfw_allowed(actor, guild),
            blocklist=blocklist,
        )
        if verdict.allowed:
            return
        category = str(verdict.category)
        job, _ = await self.store.create_job(
            NewJob(
                user_id=user.id,
                kind=kind,
                spec=spec,
                model=self.engine.info.name,
                guild_id=actor.guild_id,
                channel_id=actor.channel_id,
                state=JobState.REFUSED,
                error=verdict.message,
            )
        )
        await self._refuse(
            actor,
            verdict.message,
            category=category,
            hard=verdict.hard,
            term=verdict.term,
            job_id=job.id,
            prompt=spec.prompt,
        )
        raise PolicyRefusal(verdict.message, category=category, hard=verdict.hard)

    # -- the use cases -------------------------------------------------------------------------

    async def imagine(
        self,
        actor: Actor,
        text: str,
        *,
        upload: Upload | None = None,
        negative: str | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        user = await self.user(actor)
        guild = await self.guild(actor)
        limits = self.limits(guild)
        if negative:
            text = f"{text} --no {negative}"
        parsed = parse_prompt(text, presets=user.settings.presets.get, limits=limits)
        if parsed.strength is not None and upload is None:
            raise InvalidInput("--strength applies only to an image prompt: attach a start image.")
        start = None
        if upload is not None:
            start = await asyncio.to_thread(
                decode_upload,
                upload.data,
                upload.content_type,
                max_bytes=self.config.max_upload_bytes,
            )
        spec = resolve(
            parsed,
            layers=[user.settings.defaults(), guild.defaults(), self.config.defaults],
            native_side=self.engine.info.native_side,
            limits=limits,
            rng=self._rng,
        )
        kind = JobKind.IMAGINE
        if start is not None:
            kind = JobKind.IMG2IMG
            spec = replace(spec, strength=spec.strength or IMAGE_PROMPT_STRENGTH)
            _check_denoising(spec)
        await self._check_prompt(actor, user, guild, spec, kind=kind, has_photo=start is not None)
        init_path = None
        if start is not None:
            init_path, _, _ = await asyncio.to_thread(
                self.files.save_png, start, None, folder="uploads"
            )
        try:
            return await self._submit(
                actor, user, guild, kind, spec, init_path=init_path, on_progress=on_progress
            )
        except Refused:
            if init_path is not None:  # a refused request leaves nothing behind
                for path in await self.store.unreferenced([init_path]):
                    await asyncio.to_thread(self.files.delete, path)
            raise

    async def vary(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        strong: bool = True,
        prompt: str | None = None,
        request_key: str | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Four variations of image ``index`` of job ``job_id``; with ``prompt``, a remix."""
        existing = await self._find_request(request_key)
        if existing is not None:
            return existing
        parent, image = await self._parent_image(job_id, index)
        user = await self.user(actor)
        guild = await self.guild(actor)
        limits = self.limits(guild)
        if image.width * image.height > limits.max_pixels:
            raise InvalidInput(
                f"This image is {image.width}×{image.height}, above the {limits.max_pixels:,} "
                "pixels a variation may have here; vary the image it was upscaled from."
            )
        spec = replace(
            parent.spec,
            seed=self._rng.randint(0, SEED_MAX),
            count=min(VARIATIONS, limits.max_count),
            strength=STRONG_STRENGTH if strong else SUBTLE_STRENGTH,
            width=image.width,
            height=image.height,
        )
        kind = JobKind.VARIATION
        if prompt is not None:
            kind = JobKind.REMIX
            parsed = parse_prompt(prompt, presets=user.settings.presets.get, limits=limits)
            spec = replace(
                spec,
                prompt=parsed.prompt,
                negative=parsed.negative if parsed.negative is not None else spec.negative,
            )
        _check_denoising(spec)
        await self._check_prompt(
            actor, user, guild, spec, kind=kind, has_photo=await self._from_upload(parent)
        )
        return await self._submit(
            actor,
            user,
            guild,
            kind,
            spec,
            parent=(parent, index),
            init_path=image.path,
            request_key=self._dedupe_key(request_key),
            on_progress=on_progress,
        )

    async def upscale(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        request_key: str | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Image ``index`` of job ``job_id`` at twice the size (resize, then a low-strength
        image-to-image pass with the same prompt and seed: the "hires fix")."""
        if request_key is not None:  # the result is deterministic: one job per presser, ever
            async with self._admission:  # a job found under the lock is fully registered
                existing = await self.store.find_job_by_request_key(request_key)
                if existing is not None and existing.state in _LIVE_OR_DONE:
                    return self._existing(existing)
            if existing is not None:  # it failed or was cancelled: pressing again retries
                request_key = f"{request_key}:retry{existing.id}"
        parent, image = await self._parent_image(job_id, index)
        width, height = image.width * 2, image.height * 2
        if width * height > self.config.max_upscale_pixels:
            raise InvalidInput(
                f"Upscaling this {image.width}×{image.height} image would make {width}×{height}, "
                f"above this server's limit of {self.config.max_upscale_pixels:,} pixels."
            )
        user = await self.user(actor)
        guild = await self.guild(actor)
        spec = replace(
            parent.spec,
            seed=image.seed,
            count=1,
            strength=UPSCALE_STRENGTH,
            width=width,
            height=height,
        )
        _check_denoising(spec)
        await self._check_prompt(
            actor,
            user,
            guild,
            spec,
            kind=JobKind.UPSCALE,
            has_photo=await self._from_upload(parent),
        )
        return await self._submit(
            actor,
            user,
            guild,
            JobKind.UPSCALE,
            spec,
            parent=(parent, index),
            init_path=image.path,
            request_key=request_key,
            on_progress=on_progress,
        )

    async def reroll(
        self,
        actor: Actor,
        job_id: int,
        *,
        request_key: str | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """The same request as job ``job_id`` with a new seed."""
        existing = await self._find_request(request_key)
        if existing is not None:
            return existing
        parent = await self.store.get_job(job_id)
        user = await self.user(actor)
        guild = await self.guild(actor)
        if parent.kind is JobKind.UPSCALE:
            raise InvalidInput("An upscale has nothing to reroll; upscale another image instead.")
        spec = replace(parent.spec, seed=self._rng.randint(0, SEED_MAX))
        await self._check_prompt(
            actor, user, guild, spec, kind=JobKind.REROLL, has_photo=await self._from_upload(parent)
        )
        return await self._submit(
            actor,
            user,
            guild,
            JobKind.REROLL,
            spec,
            parent=(parent, None),
            init_path=parent.init_image_path,
            request_key=self._dedupe_key(request_key),
            on_progress=on_progress,
        )

    # -- submitting and finishing --------------------------------------------------------------

    def _dedupe_key(self, base: str | None) -> str | None:
        # Non-deterministic buttons (V, 🔄) may be pressed again on purpose; only presses within
        # the same short window are one job.
        if base is None:
            return None
        return f"{base}:{int(time.time() // DOUBLE_CLICK_WINDOW)}"

    async def _find_request(self, base: str | None) -> Submission | None:
        if base is None:
            return None
        bucket = int(time.time() // DOUBLE_CLICK_WINDOW)
        # Under the lock that creating and queueing a job holds, so a job found here already
        # has its engine handle (a double click waits for the first click's result).
        async with self._admission:
            for b in (bucket, bucket - 1):
                job = await self.store.find_job_by_request_key(f"{base}:{b}")
                if job is not None:
                    return self._existing(job)
        return None

    def _existing(self, job: Job) -> Submission:
        handle = self._handles.get(job.id)
        position = self._position(job.id)
        return Submission(job=job, created=False, position=position, handle=handle)

    def _position(self, job_id: int) -> int | None:
        for entry in self.engine.snapshot():
            if entry.job_id == job_id:
                return entry.position
        return None

    async def _parent_image(self, job_id: int, index: int) -> tuple[Job, Image]:
        parent = await self.store.get_job(job_id)
        if parent.state is not JobState.DONE:
            raise InvalidInput(f"Job #{job_id} has no images yet (it is {parent.state}).")
        image = await self.store.get_image(job_id, index)
        if image.withheld:
            raise InvalidInput(f"Image {index + 1} of job #{job_id} was withheld.")
        return parent, image

    async def _from_upload(self, job: Job) -> bool:
        """Whether a job descends from an uploaded photo (the hard limit on undressing)."""
        for _ in range(20):
            if job.init_image_path and job.init_image_path.startswith("uploads/"):
                return True
            if job.parent_job_id is None:
                return False
            try:
                job = await self.store.get_job(job.parent_job_id)
            except NotFound:
                return False
        return True

    async def _submit(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        kind: JobKind,
        spec: GenerationSpec,
        *,
        parent: tuple[Job, int | None] | None = None,
        init_path: str | None = None,
        request_key: str | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        async with self._admission:
            await self._admit(actor, user, guild, spec.count)
            job, created = await self.store.create_job(
                NewJob(
                    user_id=user.id,
                    kind=kind,
                    spec=spec,
                    model=self.engine.info.name,
                    guild_id=actor.guild_id,
                    channel_id=actor.channel_id,
                    parent_job_id=parent[0].id if parent else None,
                    parent_index=parent[1] if parent else None,
                    init_image_path=init_path,
                    request_key=request_key,
                )
            )
            if not created:
                return self._existing(job)
            self._last_request[user.key] = time.monotonic()
            try:
                return await self._enqueue(job, user.key, on_progress)
            except Refused as exc:
                await self.store.finish_job(job.id, JobState.REFUSED, error=str(exc))
                await self._refuse(actor, str(exc), kind=type(exc).__name__, job_id=job.id)
                raise

    async def _enqueue(
        self, job: Job, owner: str, on_progress: ProgressHandler | None
    ) -> Submission:
        request = await self._request_for(job, owner)
        loop = asyncio.get_running_loop()

        def progress(p: Progress) -> None:
            if p.step == 0:
                self._started[job.id] = asyncio.ensure_future(self.store.mark_running(job.id))
            if on_progress is not None:
                on_progress(p)

        try:
            handle = self.engine.submit(request, on_progress=progress, loop=loop)
        except EngineQueueFull as exc:
            raise QueueFull(str(exc)) from None
        except OwnerQueueFull as exc:
            raise TooManyJobs(str(exc)) from None
        except GenerationError as exc:
            raise InvalidInput(str(exc)) from None
        self._handles[job.id] = handle
        self._outcomes[job.id] = loop.create_future()
        return Submission(job=job, created=True, position=handle.position, handle=handle)

    async def _request_for(self, job: Job, owner: str) -> GenerationRequest:
        spec = job.spec
        init: tuple[PILImage.Image, ...] = ()
        if job.init_image_path:
            try:
                init = (await asyncio.to_thread(self.files.open, job.init_image_path),)
            except OSError:
                raise InvalidInput(f"The start image of job #{job.id} is gone.") from None
        if job.kind is JobKind.UPSCALE:
            operation = Operation.UPSCALE
        elif init:
            operation = Operation.IMG2IMG
        else:
            operation = Operation.TXT2IMG
        return GenerationRequest(
            operation=operation,
            prompt=spec.prompt,
            negative=spec.negative,
            width=spec.width,
            height=spec.height,
            steps=spec.steps,
            guidance=spec.guidance,
            sampler=spec.sampler,
            seeds=tuple(image_seed(spec.seed, i) for i in range(spec.count)),
            strength=spec.strength if operation is not Operation.TXT2IMG else None,
            init_images=init,
            tile=spec.tile,
            owner=owner,
            job_id=job.id,
        )

    async def finish(self, submission: Submission) -> Outcome:
        """Wait for the engine, store the images, charge the quota; or record the failure."""
        job = submission.job
        pending = self._outcomes.get(job.id)
        if not submission.created or pending is None:
            if pending is not None:  # the first press is recording it: wait for that
                return await asyncio.shield(pending)
            job = await self.store.get_job(job.id)
            if job.state is JobState.DONE:
                return Outcome(job, await self.store.get_images(job.id))
            raise GenerationFailed(f"Job #{job.id} is {job.state}.")
        try:
            outcome = await self._finish(job)
        except asyncio.CancelledError:
            pending.cancel()
            raise
        except BaseException as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            pending.set_result(outcome)
            return outcome
        finally:
            self._outcomes.pop(job.id, None)

    async def _finish(self, job: Job) -> Outcome:
        handle = self._handles.pop(job.id)
        try:
            result = await handle.wait()
        except EngineStopped:
            raise GenerationFailed(
                f"Easel stopped before job #{job.id} finished; it will resume after the restart."
            ) from None
        except (JobCancelled, GenerationError) as exc:
            await self._started_written(job)
            if isinstance(exc, JobCancelled):
                await self.store.finish_job(job.id, JobState.CANCELLED)
                raise Cancelled(f"Job #{job.id} was cancelled; nothing was charged.") from None
            await self.store.finish_job(job.id, JobState.FAILED, error=str(exc))
            raise GenerationFailed(f"Job #{job.id} failed: {exc} Nothing was charged.") from None
        await self._started_written(job)
        return await self._record(job, result.images, result.repro)

    async def _started_written(self, job: Job) -> None:
        """Wait for this job's "running" write, so it never lands after the final state."""
        started = self._started.pop(job.id, None)
        if started is not None:
            await asyncio.gather(started, return_exceptions=True)

    async def _record(
        self, job: Job, images: tuple[PILImage.Image, ...], repro: dict[str, Any]
    ) -> Outcome:
        flags = [await self._flagged(image) for image in images]
        withheld = sum(flags)

        def save_all() -> list[NewImage]:  # one trip off the loop for all the encoding
            saved = []
            for index, (image, flagged) in enumerate(zip(images, flags, strict=True)):
                seed = image_seed(job.spec.seed, index)
                path, digest, _ = self.files.save_png(image, self._parameters(job, seed, image))
                saved.append(
                    NewImage(index, seed, image.width, image.height, path, digest, flagged)
                )
            return saved

        new_images = await asyncio.to_thread(save_all)
        job = await self.store.finish_job(job.id, JobState.DONE, repro=repro, images=new_images)
        if job.state is not JobState.DONE:  # cancelled or purged while the files were written
            unused = await self.store.unreferenced(i.path for i in new_images)
            for path in unused:
                await asyncio.to_thread(self.files.delete, path)
            raise Cancelled(f"Job #{job.id} was {job.state}; nothing was charged.")
        if withheld:
            await self.store.add_audit(
                actor="system",
                action="withhold",
                target=f"job:{job.id}",
                reason=f"{withheld} of {len(images)} images flagged by the image check",
                guild_id=job.guild_id,
            )
        return Outcome(job, await self.store.get_images(job.id))

    @staticmethod
    def _parameters(job: Job, seed: int, image: PILImage.Image) -> str:
        return format_parameters(
            prompt=job.spec.prompt,
            negative=job.spec.negative,
            steps=job.spec.steps,
            sampler=job.spec.sampler,
            guidance=job.spec.guidance,
            seed=seed,
            width=image.width,
            height=image.height,
            model=job.model,
            strength=job.spec.strength,
            tile=job.spec.tile,
        )

    async def _flagged(self, image: PILImage.Image) -> bool:
        if self.classifier is None:
            return False
        try:
            return bool(await asyncio.to_thread(self.classifier, image))
        except Exception:
            # A configured checker that fails must not let images through (fail closed).
            log.exception("The image check failed; withholding the image")
            return True

    # -- cancelling and recovering -------------------------------------------------------------

    async def cancel(self, actor: Actor, job_id: int | None = None) -> Job:
        """Cancel one of the actor's queued or running jobs (the latest when no id is given).
        Admins may cancel anyone's."""
        user = await self.user(actor)
        if job_id is None:
            mine = await self.store.list_jobs(
                user_id=user.id, states=[JobState.QUEUED, JobState.RUNNING], limit=1
            )
            if not mine:
                raise NotFound("You have no job waiting or running.")
            job = mine[0]
        else:
            job = await self.store.get_job(job_id)
            if job.user_id != user.id:
                guild = await self.guild(actor)
                # A server's admins act on their own server's jobs; the operator on all.
                here = actor.guild_id is None or job.guild_id == actor.guild_id
                if not (self.is_admin(actor, guild) and here):
                    raise NotFound(f"You have no job #{job_id}.")
                await self.store.add_audit(
                    actor=actor.key,
                    action="cancel",
                    target=f"job:{job_id}",
                    guild_id=actor.guild_id,
                )
        if job.state.finished:
            raise InvalidInput(f"Job #{job.id} has already {job.state}.")
        # Not in this engine (left queued by a crash, or run by another process), the row is
        # all there is to close; the process that runs it finds it cancelled when it finishes.
        self.engine.cancel(job.id)
        job = await self.store.finish_job(job.id, JobState.CANCELLED)
        if job.state is not JobState.CANCELLED:
            raise InvalidInput(f"Job #{job.id} has already {job.state}.")
        return job

    async def resume(self, on_progress: ProgressHandler | None = None) -> list[Submission]:
        """At start-up: put jobs left queued or running back in the engine, or give up on those
        that already used their attempts."""
        submissions: list[Submission] = []
        for job in await self.store.unfinished_jobs():
            if job.attempts >= self.config.attempts:
                await self.store.finish_job(
                    job.id,
                    JobState.FAILED,
                    error=f"Gave up after {job.attempts} attempts; nothing was charged.",
                )
                continue
            user = await self.store.get_user(job.user_id)
            await self.store.requeue(job.id)
            try:
                submissions.append(await self._enqueue(job, user.key, on_progress))
            except (Refused, InvalidInput) as exc:
                await self.store.finish_job(job.id, JobState.FAILED, error=str(exc))
        return submissions

    async def attach_message(self, job_id: int, channel_id: int, message_id: int) -> None:
        """Remember where a job is shown, so moderators can find and purge it."""
        await self.store.set_message(job_id, channel_id=channel_id, message_id=message_id)

    # -- reading -------------------------------------------------------------------------------

    async def job(self, job_id: int) -> tuple[Job, list[Image]]:
        job = await self.store.get_job(job_id)
        return job, await self.store.get_images(job_id)

    async def history(
        self, actor: Actor, *, search: str | None = None, page: int = 0, per_page: int = 5
    ) -> tuple[list[Job], int]:
        user = await self.user(actor)
        jobs = await self.store.list_jobs(
            user_id=user.id, search=search or None, limit=per_page, offset=page * per_page
        )
        return jobs, await self.store.count_jobs(user_id=user.id, search=search or None)

    async def info(self, actor: Actor) -> dict[str, Any]:
        user = await self.user(actor)
        guild = await self.guild(actor)
        quota = self.daily_quota(user, guild, await self.member(actor, user))
        used = await self.images_used_today(user)
        queue = self.engine.snapshot()
        mine = await self.store.list_jobs(
            user_id=user.id, states=[JobState.QUEUED, JobState.RUNNING], limit=100
        )
        positions = {e.job_id: e.position for e in queue}
        return {
            "quota": quota,
            "used_today": used,
            "left_today": max(quota - used, 0),
            "queue_length": len(queue),
            "my_jobs": [(j.id, j.state, positions.get(j.id)) for j in mine],
            "total_jobs": await self.store.count_jobs(user_id=user.id),
            "model": self.engine.info.name,
        }

    def image_bytes(self, image: Image) -> bytes:
        return self.files.read(image.path)

    def open_image(self, image: Image) -> PILImage.Image:
        return self.files.open(image.path)

    @staticmethod
    def remake_command(job: Job) -> str:
        """What remakes this job: the prompt text for a prompt-only job."""
        if job.kind in (JobKind.IMAGINE, JobKind.REROLL) and not job.init_image_path:
            return format_spec(job.spec)
        if job.kind is JobKind.IMG2IMG:
            return format_spec(job.spec) + "  (with the same start image)"
        what = {
            JobKind.UPSCALE: "upscale",
            JobKind.VARIATION: "vary",
            JobKind.REMIX: "remix",
            JobKind.REROLL: "reroll",
        }[job.kind]
        index = f" image {job.parent_index + 1}" if job.parent_index is not None else ""
        return f"{what} of job #{job.parent_job_id}{index}, seed {job.spec.seed}"

    # -- personal settings ---------------------------------------------------------------------

    async def settings(self, actor: Actor) -> UserSettings:
        return (await self.user(actor)).settings

    async def update_settings(self, actor: Actor, **changes: Any) -> UserSettings:
        """Change personal defaults; each value is checked with the grammar's own rules."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        limits = self.limits(guild)
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in {f.name for f in dataclasses.fields(UserSettings)} or name == "presets":
                raise InvalidInput(f"There is no setting called {name}.")
            if isinstance(value, str):
                value = value.strip() or None
            if value is not None and name in DEFAULT_PARAMETERS:
                value = check_default(name, value, limits)
            if name in ("negative", "suffix") and value and len(value) > 300:
                raise InvalidInput(f"The {name} setting is limited to 300 characters.")
            clean[name] = value
        updated = replace(user.settings, **clean)
        await self.store.save_user_settings(user.id, updated)
        return updated

    async def save_preset(self, actor: Actor, name: str, text: str) -> UserSettings:
        user = await self.user(actor)
        guild = await self.guild(actor)
        name = check_preset_name(name)
        presets = dict(user.settings.presets)
        if name not in presets and len(presets) >= 25:
            raise InvalidInput("You can keep 25 presets; delete one first.")
        presets[name] = parse_preset(text, limits=self.limits(guild))
        updated = replace(user.settings, presets=presets)
        await self.store.save_user_settings(user.id, updated)
        return updated

    async def delete_preset(self, actor: Actor, name: str) -> UserSettings:
        user = await self.user(actor)
        presets = dict(user.settings.presets)
        if presets.pop(name.strip().lower(), None) is None:
            raise NotFound(f"There is no preset called '{name}'.")
        updated = replace(user.settings, presets=presets)
        await self.store.save_user_settings(user.id, updated)
        return updated

    async def forget_me(self, actor: Actor) -> int:
        """Delete the caller's jobs, images, settings and files. Returns files deleted."""
        user = await self.store.find_user(actor.key)
        if user is None:
            return 0
        for job in await self.store.list_jobs(
            user_id=user.id, states=[JobState.QUEUED, JobState.RUNNING], limit=1000
        ):
            self.engine.cancel(job.id)
        paths = await self.store.forget_user(user.id)
        deleted = sum([await asyncio.to_thread(self.files.delete, p) for p in paths])
        await self.store.add_audit(
            actor=actor.key,
            action="forget_me",
            target=actor.key,
            guild_id=actor.guild_id,
            detail={"files": deleted},
        )
        return deleted


def _check_denoising(spec: GenerationSpec) -> None:
    if spec.strength is not None and int(spec.steps * spec.strength) < 1:
        raise InvalidInput(
            f"--strength {spec.strength:g} with {spec.steps} steps leaves no step to run; "
            "raise --steps or --strength."
        )
