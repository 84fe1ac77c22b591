"""The use cases: imagine, vary, remix, upscale, reroll, take, show, cancel, history, settings,
crash recovery.

A request becomes a recorded job: gate (channel, bans, cooldown) → parse → policy → quota → job
row → engine → image files and rows → result. Enforcement and privacy are decided here, once,
for every adapter (Discord and the CLI call these methods and show their results or errors).
Failures are recorded; the quota is charged only for delivered images.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import shlex
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any, TypeVar

from PIL import Image as PILImage

from bot.core import moderation, privacy, quota
from bot.core.errors import (
    Banned,
    Cancelled,
    CoolingDown,
    EmptyPrompt,
    GenerationFailed,
    InvalidInput,
    NotAllowed,
    NotFound,
    PolicyRefusal,
    QueueFull,
    Refused,
    TooManyJobs,
)
from bot.core.grammar import (
    ASPECT_MAX,
    DEFAULT_PARAMETERS,
    SEED_MAX,
    Defaults,
    GenerationSpec,
    Limits,
    ParsedPrompt,
    check_default,
    check_preset_name,
    expand_permutations,
    find_model,
    format_parsed,
    format_spec,
    image_seed,
    parse_preset,
    parse_prompt,
    resolve,
    spec_to_parsed,
)
from bot.core.imaging import decode_upload
from bot.core.metadata import format_parameters
from bot.core.models import (
    MASK_FOLDER,
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
    param_files,
    steering_files,
)
from bot.core.ports import (
    EnginePort,
    HelpersPort,
    ImageClassifier,
    ImageFilesPort,
    JobHandlePort,
    StorePort,
    TextClassifier,
)
from bot.core.privacy import Place
from bot.core.quota import utc_midnight
from bot.core.text import clean_text, is_blank, model_label
from engine.ops.masks import cells_mask, check_mask
from engine.ops.outpaint import OUTPAINT_STRENGTH, REGION_STRENGTH, make_square, pan, zoom_out
from engine.requests import (
    IMAGE_PROMPTS_MAX,
    UPSCALE_FACTORS,
    EngineStopped,
    GenerationError,
    GenerationRequest,
    GenerationResult,
    InvalidRequest,
    JobCancelled,
    NothingFound,
    Operation,
    OwnerAtCapacity,
    Progress,
    QueueAtCapacity,
    aspect_problem,
    image_identity,
    img2img_steps,
)

__all__ = ["Actor", "Outcome", "Press", "Service", "ServiceConfig", "Submission", "utc_midnight"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Denoising strengths. Subtle keeps the composition, strong keeps the idea (Midjourney's
# "Vary (Subtle)" / "Vary (Strong)"); 0.3 is the common "hires fix" strength for upscaling.
SUBTLE_STRENGTH = 0.35
STRONG_STRENGTH = 0.65
UPSCALE_STRENGTH = 0.3
IMAGE_PROMPT_STRENGTH = 0.6
VARIATIONS = 4
# A second press of the same button within this many seconds of the first is a double click:
# it joins the first press's job. Later presses of V or 🔄 make new jobs, on purpose.
DOUBLE_CLICK_SECONDS = 10.0
_LIVE_OR_DONE = (JobState.QUEUED, JobState.RUNNING, JobState.DONE)
# Refusals are audited, but a flood of them (a banned member pressing on) must not push real
# entries out of the audit log: at most this many rows per user per minute; the rest are counted.
REFUSAL_AUDITS_PER_MINUTE = 5
# Upscale (Subtle) keeps the image (a super-resolution model); Creative repaints details with a
# low-strength image-to-image pass (Midjourney's "Upscale (Subtle)" / "Upscale (Creative)").
UPSCALE_MODES = ("subtle", "creative")
# /blend without text: the images alone decide (--iw 2 is IP-Adapter scale 1.0, "only
# conditioned on the image prompt" in diffusers' guide); with text, text and images balance.
BLEND_IMAGE_WEIGHT, BLEND_IMAGE_WEIGHT_WITH_TEXT = 2.0, 1.0
# /describe's aspect ratio for "Imagine this": the image's, as a ratio of small numbers.
DESCRIBE_ASPECT_DENOMINATOR = 16
# In-memory maps keyed by user are bounded (least recently used goes first).
MAX_TRACKED_USERS = 10_000
RECENT_JOBS = 2_000


@dataclass(frozen=True)
class Actor:
    """Who asks, and where. The adapter fills it from Discord (or the CLI's --user)."""

    key: str  # "discord:<id>" or "local:<name>"
    name: str
    guild_id: int | None = None
    channel_id: int | None = None
    parent_channel_id: int | None = None  # for a thread or forum post: its channel
    nsfw_channel: bool = False  # Discord marks the channel age-restricted
    is_admin: bool = False  # Manage Server, checked by the adapter from Discord's data
    role_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Press:
    """A button press: the message it was on and the button's own id. A double click is the
    same message and button pressed again by the same person."""

    message_id: int
    button: str


@dataclass(frozen=True)
class Upload:
    data: bytes
    content_type: str | None


@dataclass(frozen=True)
class Described:
    """/describe's answer: the recorded job (its buttons' state) and the prompts shown."""

    job: Job
    prompts: list[str]


@dataclass
class Submission:
    job: Job
    created: bool  # False: a double click found the job the first click made
    position: int | None  # place in the engine queue (0 = running next); None if not queued
    handle: JobHandlePort | None


@dataclass(frozen=True)
class Outcome:
    job: Job
    images: list[Image]


@dataclass(frozen=True)
class Catalogued:
    """What can be chosen: models, LoRAs, embeddings (engine catalogue entries)."""

    models: list[Any]
    default: str
    loras: list[Any]
    embeddings: list[Any]


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
    # This process ("bot:<host>:<pid>:<start>" or "cli:…"), recorded on the jobs it runs.
    runner: str | None = None
    # The learned second opinion refuses prompts scoring at or above this.
    text_classifier_threshold: float = 0.7


ProgressHandler = Callable[[Progress], None]


class _Bounded(OrderedDict[str, Any]):
    """A dict that forgets its least recently used keys beyond ``limit``."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def touch(self, key: str, value: Any) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.limit:
            self.popitem(last=False)


def _always_alive(runner: str) -> bool:
    return True


class Service:
    def __init__(
        self,
        store: StorePort,
        files: ImageFilesPort,
        engine: EnginePort,
        config: ServiceConfig = ServiceConfig(),
        *,
        classifier: ImageClassifier | None = None,
        text_classifier: TextClassifier | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        is_alive: Callable[[str], bool] = _always_alive,
        helpers: HelpersPort | None = None,
    ) -> None:
        self.store = store
        self.files = files
        self.engine = engine
        self.config = config
        self.classifier = classifier
        self.text_classifier = text_classifier
        self.now = clock
        self.is_alive = is_alive  # whether the process a job's runner names still runs
        self.helpers = helpers  # captioner, segmenter, control-map makers (engine.ops.helpers)
        self._rng = rng or random.Random()
        self._handles: dict[int, JobHandlePort] = {}
        # One outcome per job, for everyone waiting on it (a double click waits with the first).
        self._outcomes: dict[int, asyncio.Future[Outcome]] = {}
        self._last_request = _Bounded(MAX_TRACKED_USERS)  # user key → monotonic time
        self._refusals = _Bounded(MAX_TRACKED_USERS)  # user key → deque of audit times
        # Settings of every user who has any, read once (warm) and kept up to date by the
        # methods below that change them: answering a press never waits for the database.
        self._settings: dict[str, UserSettings] | None = None
        self._recent_jobs = _Bounded(RECENT_JOBS)  # str(job id) → Job, for the Remix modal
        # The "running" write of each started job, awaited before its result is recorded.
        self._started: dict[int, asyncio.Task[Any]] = {}
        # A job is recorded and queued in the engine under this lock, so a double click that
        # finds the job also finds its engine handle. (Admission itself is atomic in the store,
        # across processes too.)
        self._admission_lock = asyncio.Lock()

    # -- context -------------------------------------------------------------------------------

    async def warm(self) -> None:
        """Read what answering a press needs (everyone's settings) once, at start-up."""
        self._settings = await self.store.all_user_settings()

    async def user(self, actor: Actor) -> User:
        user = await self.store.get_or_create_user(actor.key, actor.name)
        if self._settings is not None and user.settings != UserSettings():
            self._settings[actor.key] = user.settings
        return user

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
        return quota.daily_quota(user, guild, member, self.config.daily_images_per_user)

    async def images_used_today(self, user: User) -> int:
        return await self.store.images_charged_since(
            user.id, quota.counting_since(user, self.now())
        )

    def nsfw_allowed(self, actor: Actor, guild: GuildSettings) -> bool:
        # In direct messages (no guild) the stricter rule holds.
        return (
            actor.guild_id is not None
            and guild.nsfw_rule is NsfwRule.AGE_RESTRICTED
            and actor.nsfw_channel
        )

    def place(self, actor: Actor, guild: GuildSettings) -> Place:
        return Place(actor.guild_id, actor.channel_id, self.nsfw_allowed(actor, guild))

    def is_admin(self, actor: Actor, guild: GuildSettings) -> bool:
        roles = set(self.config.admin_role_ids) | set(guild.admin_role_ids)
        return actor.is_admin or bool(roles & set(actor.role_ids))

    def require_admin(self, actor: Actor, guild: GuildSettings) -> None:
        if not self.is_admin(actor, guild):
            raise NotAllowed(
                "Only server admins (Manage Server, or an Easel admin role) may do that."
            )

    # -- answering before the first response ---------------------------------------------------

    def settings_now(self, actor: Actor) -> UserSettings | None:
        """The actor's settings without touching the database; None before ``warm``."""
        if self._settings is None:
            return None
        return self._settings.get(actor.key, UserSettings())

    def answers_privately(self, actor: Actor, *, on_private_message: bool = False) -> bool:
        """Whether to answer this actor ephemerally, decided before the first response: their
        results are private (in a server), or they pressed a button on a private result."""
        settings = self.settings_now(actor)
        private = settings.private if settings is not None else True  # unknown: stay private
        return on_private_message or (actor.guild_id is not None and private)

    def remix_mode_now(self, actor: Actor) -> bool:
        settings = self.settings_now(actor)
        return bool(settings and settings.remix_mode)

    def recent_job(self, job_id: int) -> Job | None:
        """A job this process made or showed lately, without the database (may be None)."""
        return self._recent_jobs.get(str(job_id))

    def _remember(self, job: Job) -> Job:
        self._recent_jobs.touch(str(job.id), job)
        return job

    # -- admission -----------------------------------------------------------------------------

    async def refuse(self, actor: Actor, reason: str, **detail: Any) -> None:
        """Audit a refusal, at most REFUSAL_AUDITS_PER_MINUTE rows per user per minute."""
        now = time.monotonic()
        times = self._refusals.get(actor.key) or deque()
        while times and now - times[0] > 60:
            times.popleft()
        self._refusals.touch(actor.key, times)
        if len(times) >= REFUSAL_AUDITS_PER_MINUTE:
            return
        times.append(now)
        await self.store.add_audit(
            actor=actor.key, action="refuse", reason=reason, guild_id=actor.guild_id, detail=detail
        )

    async def _gate(self, actor: Actor, user: User, guild: GuildSettings) -> None:
        """The checks that come before anything about the request is read or written: the
        channel, bans and the cooldown."""
        now = self.now()
        try:
            allowed = guild.allowed_channel_ids
            if allowed and not {actor.channel_id, actor.parent_channel_id} & set(allowed):
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
        except Refused as exc:
            await self.refuse(actor, str(exc), kind=type(exc).__name__)
            raise

    async def _admission(
        self, actor: Actor, user: User, guild: GuildSettings, images: int
    ) -> Callable[[int, int, int], None]:
        """The admission rule for one more job of ``images``: run by the store, atomically, with
        the user's unfinished jobs, the images they reserve and today's usage."""
        daily = self.daily_quota(user, guild, await self.member(actor, user))
        now = self.now()
        cap = self.config.max_queued_per_user

        def admit(unfinished: int, reserved: int, used: int) -> None:
            if unfinished >= cap:
                raise TooManyJobs(
                    f"You already have {unfinished} jobs waiting or running (the limit is "
                    f"{cap}). Wait for one or /cancel one."
                )
            quota.check(images=images, quota=daily, used=used, reserved=reserved, now=now)

        return admit

    async def _check_prompt(
        self, actor: Actor, guild: GuildSettings, spec: GenerationSpec, *, photo: bool
    ) -> None:
        verdict = await self._verdict(actor, guild, spec.prompt, spec.negative, photo=photo)
        if verdict.allowed:
            return
        category = str(verdict.category)
        await self.refuse(
            actor,
            verdict.message,
            category=category,
            hard=verdict.hard,
            term=verdict.term,
            score=verdict.score,
            prompt=spec.prompt,
        )
        raise PolicyRefusal(verdict.message, category=category, hard=verdict.hard)

    async def _verdict(
        self, actor: Actor, guild: GuildSettings, prompt: str, negative: str, *, photo: bool
    ) -> moderation.Verdict:
        """The policy's verdict on a prompt here: the rules, then the learned second opinion."""
        blocklist = [e.term for e in await self.store.list_block_terms(actor.guild_id)]
        nsfw_allowed = self.nsfw_allowed(actor, guild)
        verdict = moderation.check_prompt(
            prompt,
            negative,
            has_image=photo,
            nsfw_allowed=nsfw_allowed,
            blocklist=blocklist,
        )
        if self.text_classifier is not None and not verdict.hard:
            scores = await asyncio.to_thread(
                moderation.classifier_scores, self.text_classifier, prompt
            )
            verdict = moderation.second_opinion(
                verdict,
                scores,
                threshold=self.config.text_classifier_threshold,
                photo=photo,
                nsfw_allowed=nsfw_allowed,
            )
            if verdict.allowed and scores:  # to tune the threshold by: how close it came
                log.debug("Prompt allowed; classifier's top score %.3f", max(scores.values()))
        return verdict

    def _resolve(
        self, actor: Actor, user: User, guild: GuildSettings, parsed: Any, limits: Limits
    ) -> GenerationSpec:
        """The spec of a prompt: its model from the catalogue (--model, the user's, the server's
        or the default), the model's own defaults, then the user's, the server's, the
        installation's; LoRAs checked against those installed."""
        spec = resolve(
            parsed,
            layers=[user.settings.defaults(), guild.defaults(), self.config.defaults],
            native_side=self.engine.info.native_side,
            limits=limits,
            rng=self._rng,
            models=self.engine.catalogue,
            loras=[entry.name for entry in self.engine.loras()],
        )
        model = find_model(self.engine.catalogue, spec.model)
        if model.nsfw_only and not self.nsfw_allowed(actor, guild):
            raise Refused(
                f"Model '{model.name}' is for age-restricted channels only, where this server "
                "allows them."
            )
        return spec

    async def permutations(self, actor: Actor, text: str) -> list[str]:
        """``a {red, blue} car`` → one prompt per combination, each a job of its own and each
        charged. Checked before any is made: every prompt parses, and the user has room for all
        of them (job slots and today's images). One prompt for text without braces."""
        prompts = expand_permutations(clean_text(text), self.config.limits.max_permutations)
        if len(prompts) == 1:
            return prompts
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        limits = self.limits(guild)
        parsed = [self._parse(p, user, limits) for p in prompts]
        images = sum(p.count or min(4, limits.max_count) for p in parsed)
        unfinished, reserved = await self.store.pending(user.id)
        slots = self.config.max_queued_per_user - unfinished
        if len(prompts) > slots:
            raise TooManyJobs(
                f"The {{…}} options make {len(prompts)} jobs, but you may have "
                f"{self.config.max_queued_per_user} waiting at once ({unfinished} now)."
            )
        quota.check(
            images=images,
            quota=self.daily_quota(user, guild, await self.member(actor, user)),
            used=await self.images_used_today(user),
            reserved=reserved,
            now=self.now(),
        )
        return prompts

    def _parse(self, text: str, user: User, limits: Limits) -> Any:
        parsed = parse_prompt(clean_text(text), presets=user.settings.presets.get, limits=limits)
        if is_blank(parsed.prompt):
            raise EmptyPrompt("The prompt is empty: describe what to draw before any --parameters.")
        return parsed

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
        await self._gate(actor, user, guild)
        limits = self.limits(guild)
        if negative:
            text = f"{text} --no {negative}"
        parsed = self._parse(text, user, limits)
        if parsed.steers:  # --control / --iw / --sref: the image steers, it is no start image
            return await self._steered(actor, user, guild, parsed, upload, on_progress)
        if parsed.strength is not None and upload is None:
            raise InvalidInput("--strength applies only to an image prompt: attach a start image.")
        if upload is not None and not guild.allow_uploads:
            raise Refused("This server does not allow start images; ask its admins.")
        start = None
        if upload is not None:
            start = await asyncio.to_thread(
                decode_upload,
                upload.data,
                upload.content_type,
                max_bytes=self.config.max_upload_bytes,
            )
        spec = self._resolve(actor, user, guild, parsed, limits)
        kind = JobKind.IMAGINE
        if start is not None:
            kind = JobKind.IMG2IMG
            spec = replace(spec, strength=spec.strength or IMAGE_PROMPT_STRENGTH)
            _check_denoising(spec)
        await self._check_prompt(actor, guild, spec, photo=start is not None)
        visibility = privacy.derive(
            None,
            private_setting=user.settings.private,
            place=self.place(actor, guild),
            photo=start is not None,
        )
        init_path = None
        if start is not None:
            init_path, _, _ = await asyncio.to_thread(
                self.files.save_png, start, None, folder="uploads"
            )
        try:
            return await self._submit(
                actor,
                user,
                guild,
                kind,
                spec,
                visibility,
                init_path=init_path,
                on_progress=on_progress,
            )
        except (Refused, InvalidInput):
            await self._discard([init_path])  # a refused request leaves nothing behind
            raise

    # -- steering with images: control maps, image prompts, /blend, /describe ------------------

    async def _steered(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        parsed: ParsedPrompt,
        upload: Upload | None,
        on_progress: ProgressHandler | None,
    ) -> Submission:
        """/imagine whose attached image is a control map's source (--control) or an image
        prompt (--iw, --sref), or both."""
        if upload is None:
            raise InvalidInput(
                "--control, --iw and --sref steer the picture with an image: attach one."
            )
        if parsed.strength is not None:
            raise InvalidInput(
                "--strength is for a start image; with --control or --iw the image steers the "
                "picture instead. Leave out one or the other."
            )
        if parsed.control is None and (parsed.raw_control or parsed.control_weight is not None):
            raise InvalidInput(
                "--cw and --raw-control go with a control map: add --control with its type "
                "(canny, depth, lineart, scribble, pose)."
            )
        self._check_uploads_allowed(guild)
        what = "The control image" if parsed.control else "The image prompt"
        (image,) = await self._decode([upload], [what])
        spec = self._resolve(actor, user, guild, parsed, self.limits(guild))
        params: dict[str, Any] = {}
        control_map = None
        if parsed.control is not None:
            problem = aspect_problem("control image", image.size, spec.width, spec.height)
            if problem is not None:
                raise InvalidInput(problem)
            control_map = image if parsed.raw_control else await self._control_map(parsed, image)
            weight = parsed.control_weight if parsed.control_weight is not None else 1.0
            params.update(
                control=parsed.control, control_weight=weight, raw_control=bool(parsed.raw_control)
            )
        prompts = []
        if parsed.image_weight is not None or parsed.style_only:
            prompts = [image]
            weight = parsed.image_weight if parsed.image_weight is not None else 1.0
            params.update(image_weight=weight, style_only=bool(parsed.style_only))
        kind = JobKind.CONTROL if control_map is not None else JobKind.IMAGINE
        return await self._submit_steered(
            actor, user, guild, kind, spec, params, control_map, prompts, on_progress
        )

    async def blend(
        self,
        actor: Actor,
        images: Sequence[Upload],
        text: str | None = None,
        *,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """/blend: a grid from 2 to 5 images as image prompts, in the order given, with optional
        text (words and/or parameters such as --ar, --iw, --sref)."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        if not 2 <= len(images) <= IMAGE_PROMPTS_MAX:
            raise InvalidInput(
                f"/blend takes 2 to {IMAGE_PROMPTS_MAX} images; {len(images)} "
                f"{'was' if len(images) == 1 else 'were'} given."
            )
        limits = self.limits(guild)
        parsed = parse_prompt(
            clean_text(text or ""),
            presets=user.settings.presets.get,
            limits=limits,
            allow_empty=True,
        )
        if parsed.control is not None or parsed.strength is not None or parsed.raw_control:
            raise InvalidInput(
                "/blend mixes its images as image prompts; --control, --raw-control and "
                "--strength go with /imagine and one image."
            )
        self._check_uploads_allowed(guild)
        decoded = await self._decode(
            images, [f"Image {i + 1} of the blend" for i in range(len(images))]
        )
        spec = self._resolve(actor, user, guild, parsed, limits)
        weight = parsed.image_weight
        if weight is None:
            weight = BLEND_IMAGE_WEIGHT_WITH_TEXT if parsed.prompt else BLEND_IMAGE_WEIGHT
        params = {"image_weight": weight, "style_only": bool(parsed.style_only)}
        return await self._submit_steered(
            actor, user, guild, JobKind.BLEND, spec, params, None, decoded, on_progress
        )

    async def describe(self, actor: Actor, image: Upload) -> Described:
        """/describe: up to four prompts for an uploaded image, each one that the policy allows
        here (the image is an upload: the photo hard limits hold). Recorded as a job without
        images, whose prompts and aspect ratio its "Imagine this" buttons use. The image itself
        is not kept."""
        if self.helpers is None:
            raise InvalidInput("Describing images is not available here (no captioning model).")
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        self._check_uploads_allowed(guild)
        (picture,) = await self._decode([image], ["The image to describe"])
        captions = await self._helper(self.helpers.describe(picture))
        prompts = []
        for caption in captions:
            verdict = await self._verdict(actor, guild, caption, "", photo=True)
            if verdict.allowed:
                prompts.append(caption)
            else:  # never shown; audited without the caption's text
                await self.refuse(actor, "description withheld", category=str(verdict.category))
        if not prompts:
            raise PolicyRefusal(
                "None of the descriptions of this image may be shown here.", category="describe"
            )
        ratio = _aspect_of(picture.width, picture.height)
        spec = GenerationSpec(
            prompt=prompts[0],
            negative="",
            width=picture.width,
            height=picture.height,
            aspect=ratio,
            seed=0,
            steps=0,
            guidance=0.0,
            sampler="",
            count=0,
        )
        visibility = privacy.derive(
            None, private_setting=user.settings.private, place=self.place(actor, guild), photo=True
        )
        job, _ = await self.store.create_job(
            NewJob(
                user_id=user.id,
                kind=JobKind.DESCRIBE,
                spec=spec,
                model=model_label(self.engine.info.name),
                guild_id=actor.guild_id,
                channel_id=actor.channel_id,
                state=JobState.DONE,
                from_photo=visibility.from_photo,
                age_restricted=visibility.age_restricted,
                private=visibility.private,
                runner=self.config.runner,
                params={
                    "prompts": prompts,
                    "aspect": f"{ratio[0]}:{ratio[1]}",
                    "inputs": [image_identity(picture)],
                },
            )
        )
        return Described(self._remember(job), prompts)

    async def imagine_described(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """ "Imagine this" under /describe: /imagine with prompt ``index`` of the description and
        the described image's aspect ratio. It derives from the uploaded image: its privacy
        and the photo hard limits hold."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        parent = await self._visible_job(actor, user, guild, job_id, press)
        prompts = parent.params.get("prompts", [])
        if parent.kind is not JobKind.DESCRIBE or not 0 <= index < len(prompts):
            raise NotFound(f"Job #{job_id} has no description {index + 1}.")
        existing, key = await self._press_key(user, press, repeatable=True)
        if existing is not None:
            return existing
        limits = self.limits(guild)
        parsed = self._parse(f"{prompts[index]} --ar {parent.params['aspect']}", user, limits)
        spec = self._resolve(actor, user, guild, parsed, limits)
        return await self._derived(
            actor, user, guild, JobKind.IMAGINE, spec, parent, index, None, key, on_progress
        )

    def _check_uploads_allowed(self, guild: GuildSettings) -> None:
        if not guild.allow_uploads:
            raise Refused("This server does not allow uploaded images; ask its admins.")

    async def _decode(
        self, uploads: Sequence[Upload], names: Sequence[str]
    ) -> list[PILImage.Image]:
        """Every upload checked like a start image (type, size, decoding), named in errors."""
        return [
            await asyncio.to_thread(
                decode_upload,
                upload.data,
                upload.content_type,
                max_bytes=self.config.max_upload_bytes,
                what=name,
            )
            for upload, name in zip(uploads, names, strict=True)
        ]

    async def _helper(self, work: Any) -> Any:
        """Await a helper model's work; its complaints about the input become InvalidInput
        (NothingFound passes through, for the caller to say what was not found)."""
        try:
            return await work
        except NothingFound:
            raise
        except InvalidRequest as exc:
            raise InvalidInput(str(exc)) from None
        except GenerationError as exc:
            raise GenerationFailed(f"{exc} Nothing was charged.") from None
        except Exception as exc:  # engine.loading.ModelLoadError: says what to configure
            log.exception("A helper model failed")
            raise GenerationFailed(f"{str(exc)[:300]} Nothing was charged.") from None

    async def _control_map(self, parsed: ParsedPrompt, image: PILImage.Image) -> PILImage.Image:
        if self.helpers is None:
            raise InvalidInput(
                "Control maps cannot be made here; upload a ready-made map with --raw-control."
            )
        assert parsed.control is not None
        return await self._helper(self.helpers.control_map(parsed.control, image))

    def control_map_bytes(self, job: Job) -> bytes | None:
        """The PNG of the control map a job followed (shown with its result), or None."""
        path = job.params.get("control_image") if job.kind is JobKind.CONTROL else None
        try:
            return self.files.read(path) if path else None
        except OSError:  # deleted with its owner's uploads
            return None

    async def _submit_steered(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        kind: JobKind,
        spec: GenerationSpec,
        params: dict[str, Any],
        control_map: PILImage.Image | None,
        prompts: Sequence[PILImage.Image],
        on_progress: ProgressHandler | None,
    ) -> Submission:
        """A job steered by uploaded images: each is an upload (checked, kept under uploads/,
        its content hash recorded in order); the job derives from a photo."""
        await self._check_prompt(actor, guild, spec, photo=True)
        visibility = privacy.derive(
            None, private_setting=user.settings.private, place=self.place(actor, guild), photo=True
        )

        def save(image: PILImage.Image) -> tuple[str, str]:
            path, digest, _ = self.files.save_png(image, None, folder="uploads")
            return path, digest

        params = dict(params)
        if control_map is not None:
            path, digest = await asyncio.to_thread(save, control_map)
            params.update(control_image=path, control_input=digest)
        if prompts:
            pairs = [await asyncio.to_thread(save, image) for image in prompts]
            params.update(image_prompts=[path for path, _ in pairs], inputs=[d for _, d in pairs])
        try:
            return await self._submit(
                actor, user, guild, kind, spec, visibility, params=params, on_progress=on_progress
            )
        except (Refused, InvalidInput):
            await self._discard(param_files(params))  # a refused request leaves nothing behind
            raise

    async def _discard(self, paths: Iterable[str | None]) -> None:
        """Delete the files of a refused request that no job uses (another may share them)."""
        for path in await self.store.unreferenced(p for p in paths if p):
            await asyncio.to_thread(self.files.delete, path)

    async def _steering(self, job: Job) -> dict[str, Any]:
        """The request fields of a job's steering images (read from the files), or {}."""
        params = job.params
        files = steering_files(params)
        if not files:
            return {}

        def load() -> list[PILImage.Image]:
            return [self.files.open(path) for path in files]

        try:
            images = await asyncio.to_thread(load)
        except OSError:
            raise InvalidInput(
                f"The images that steer job #{job.id} are gone (deleted by their owner or an "
                "admin); nothing was charged."
            ) from None
        fields: dict[str, Any] = {}
        if params.get("control_image"):
            control, *images = images
            fields.update(
                control_images=(control,),
                control=params["control"],
                control_weight=params["control_weight"],
            )
        if images:
            fields.update(
                image_prompts=tuple(images),
                image_weight=params["image_weight"],
                style_only=params.get("style_only", False),
            )
        return fields

    async def vary(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        strong: bool = True,
        prompt: str | None = None,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Four variations of image ``index`` of job ``job_id``; with ``prompt``, a remix."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        parent, image = await self._source(actor, user, guild, job_id, index, press)
        existing, key = await self._press_key(user, press, repeatable=True)
        if existing is not None:
            return existing
        limits = self.limits(guild)
        if image.width * image.height > limits.max_pixels:
            raise InvalidInput(
                f"This image is {image.width}×{image.height}, above the {limits.max_pixels:,} "
                "pixels a variation may have here; vary the image it was upscaled from."
            )
        strength = STRONG_STRENGTH if strong else SUBTLE_STRENGTH
        spec = replace(
            parent.spec,
            seed=self._rng.randint(0, SEED_MAX),
            count=min(VARIATIONS, limits.max_count),
            strength=strength,
            # A few-step (turbo) job gets enough steps that some actually run at this strength.
            steps=img2img_steps(parent.spec.steps, strength),
            width=image.width,
            height=image.height,
        )
        kind = JobKind.VARIATION
        if prompt is not None:
            kind = JobKind.REMIX
            parsed = self._parse(prompt, user, limits)
            spec = replace(
                spec,
                prompt=parsed.prompt,
                negative=parsed.negative if parsed.negative is not None else spec.negative,
            )
        _check_denoising(spec)
        return await self._derived(
            actor, user, guild, kind, spec, parent, index, image.path, key, on_progress
        )

    async def upscale(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        mode: str = "creative",
        factor: int = 2,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Image ``index`` of job ``job_id`` at ``factor`` (2 or 4) times the size. Creative:
        resize, then a low-strength image-to-image pass with the same prompt and seed (the
        "hires fix"). Subtle: the upscaler model alone, which keeps the image as it is."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        if mode not in UPSCALE_MODES:
            raise InvalidInput(f"Upscale mode '{mode}' is not one of {', '.join(UPSCALE_MODES)}.")
        if factor not in UPSCALE_FACTORS:
            raise InvalidInput(
                f"Upscales are ×{' or ×'.join(map(str, UPSCALE_FACTORS))}, not ×{factor}."
            )
        parent, image = await self._source(actor, user, guild, job_id, index, press)
        # The result is deterministic: one job per press of this button, ever (unless it failed).
        existing, key = await self._press_key(user, press, repeatable=False)
        if existing is not None:
            return existing
        width, height = image.width * factor, image.height * factor
        if width * height > self.config.max_upscale_pixels:
            raise InvalidInput(
                f"Upscaling this {image.width}×{image.height} image would make {width}×{height}, "
                f"above this server's limit of {self.config.max_upscale_pixels:,} pixels."
            )
        spec = replace(
            parent.spec,
            seed=image.seed,
            count=1,
            strength=UPSCALE_STRENGTH,
            steps=img2img_steps(parent.spec.steps, UPSCALE_STRENGTH),
            width=width,
            height=height,
        )
        params: dict[str, Any] = {}
        if mode == "subtle":  # no diffusion: no strength, no steps to run
            spec = replace(spec, strength=None, steps=parent.spec.steps)
            params = {"mode": mode, "factor": factor}
        else:
            _check_denoising(spec)
            if factor != 2:
                params = {"mode": mode, "factor": factor}
        return await self._derived(
            actor,
            user,
            guild,
            JobKind.UPSCALE,
            spec,
            parent,
            index,
            image.path,
            key,
            on_progress,
            params=params,
        )

    async def reroll(
        self,
        actor: Actor,
        job_id: int,
        *,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """The same request as job ``job_id`` with a new seed."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        parent = await self._visible_job(actor, user, guild, job_id, press)
        existing, key = await self._press_key(user, press, repeatable=True)
        if existing is not None:
            return existing
        if parent.kind is JobKind.UPSCALE:
            raise InvalidInput("An upscale has nothing to reroll; upscale another image instead.")
        if parent.kind is JobKind.DESCRIBE:
            raise InvalidInput("A description has nothing to reroll; imagine one of its prompts.")
        spec = replace(parent.spec, seed=self._rng.randint(0, SEED_MAX))
        return await self._derived(
            actor,
            user,
            guild,
            JobKind.REROLL,
            spec,
            parent,
            None,
            parent.init_image_path,
            key,
            on_progress,
            params=dict(parent.params),  # its steering images, an edit's mask: the same
        )

    async def _derived(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        kind: JobKind,
        spec: GenerationSpec,
        parent: Job,
        index: int | None,
        init_path: str | None,
        request_key: str | None,
        on_progress: ProgressHandler | None,
        *,
        params: dict[str, Any] | None = None,
    ) -> Submission:
        """A job made from another job's images: it inherits the parent's visibility and photo
        provenance, and the photo hard limits hold for it whoever presses."""
        await self._check_prompt(actor, guild, spec, photo=parent.from_photo)
        visibility = privacy.derive(
            parent, private_setting=user.settings.private, place=self.place(actor, guild)
        )
        return await self._submit(
            actor,
            user,
            guild,
            kind,
            spec,
            visibility,
            parent=(parent, index),
            init_path=init_path,
            request_key=request_key,
            on_progress=on_progress,
            params=params,
        )

    # -- editing one image: Vary (Region), Zoom Out, Pan, Make Square --------------------------

    async def region(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        prompt: str,
        area: str | None = None,
        cells: Sequence[int] | None = None,
        mask: Upload | None = None,
        seed: int | None = None,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Vary (Region): four edits of image ``index`` of job ``job_id`` that repaint one part
        of it with ``prompt`` and keep every other pixel. The part is said one way: described
        (``area``, found by the segmenter), as cells of a 3×3 grid, or as an uploaded mask
        (white = change)."""
        area = clean_text(area).strip() if area else None
        given = [way for way in (area, cells, mask) if way]
        if len(given) != 1:
            raise InvalidInput(
                "Say where to change in exactly one way: describe it, pick cells of the 3×3 "
                "grid, or upload a mask."
            )

        async def where(
            parent: Job, guild: GuildSettings, spec: GenerationSpec, picture: PILImage.Image
        ) -> tuple[PILImage.Image, PILImage.Image, dict[str, Any]]:
            width, height = picture.size
            if cells:
                chosen = await asyncio.to_thread(_engine_input, cells_mask, width, height, cells)
                return picture, chosen, {"cells": sorted(set(cells))}
            if mask is not None:

                def checked(upload: Upload) -> PILImage.Image:  # off the loop: up to 4096²
                    uploaded = decode_upload(
                        upload.data,
                        upload.content_type,
                        max_bytes=self.config.max_upload_bytes,
                        what="The mask",
                        mode="RGBA",  # transparent counts as black (engine.ops.masks.check_mask)
                    )
                    return _engine_input(check_mask, uploaded, width, height)

                return picture, await asyncio.to_thread(checked, mask), {}
            assert area is not None
            # The words say what becomes of the picture as much as the prompt does ("her dress"
            # + "bare skin"): both are checked together, under the photo hard limits.
            said = replace(spec, prompt=f"{area}, {spec.prompt}")
            await self._check_prompt(actor, guild, said, photo=parent.from_photo)
            return picture, await self._segment(picture, area), {"area": area}

        return await self._edit(
            actor, job_id, index, JobKind.REGION, prompt, seed, press, on_progress, where
        )

    async def zoom(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        factor: float,
        prompt: str | None = None,
        seed: int | None = None,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Zoom Out: image ``index`` at the centre of a canvas ``factor`` (1.1 to 2.0) times its
        size, the new border painted in; four of them."""
        return await self._outpaint(
            actor, job_id, index, JobKind.ZOOM, prompt, seed, press, on_progress, factor=factor
        )

    async def pan(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        direction: str,
        prompt: str | None = None,
        seed: int | None = None,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Pan: the canvas grows by half the picture towards ``direction`` (left, right, up,
        down), the picture keeps to the opposite side; four of them."""
        return await self._outpaint(
            actor, job_id, index, JobKind.PAN, prompt, seed, press, on_progress, direction=direction
        )

    async def square(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        *,
        seed: int | None = None,
        press: Press | None = None,
        on_progress: ProgressHandler | None = None,
    ) -> Submission:
        """Make Square: a non-square image at the centre of a square canvas; four of them."""
        return await self._outpaint(
            actor, job_id, index, JobKind.SQUARE, None, seed, press, on_progress
        )

    async def _outpaint(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        kind: JobKind,
        prompt: str | None,
        seed: int | None,
        press: Press | None,
        on_progress: ProgressHandler | None,
        **asked: Any,
    ) -> Submission:
        async def where(
            parent: Job, guild: GuildSettings, spec: GenerationSpec, picture: PILImage.Image
        ) -> tuple[PILImage.Image, PILImage.Image, dict[str, Any]]:
            model = find_model(self.engine.catalogue, parent.spec.model or parent.model)
            make = {JobKind.ZOOM: zoom_out, JobKind.PAN: pan, JobKind.SQUARE: make_square}[kind]
            canvas = await asyncio.to_thread(
                _engine_input,
                make,
                picture,
                native_side=model.native_side,
                max_pixels=self.limits(guild).max_pixels,
                multiple=model.size_multiple,
                **asked,
            )
            return canvas.image, canvas.mask, canvas.record

        return await self._edit(actor, job_id, index, kind, prompt, seed, press, on_progress, where)

    async def _edit(
        self,
        actor: Actor,
        job_id: int,
        index: int,
        kind: JobKind,
        prompt: str | None,
        seed: int | None,
        press: Press | None,
        on_progress: ProgressHandler | None,
        where: Callable[
            [Job, GuildSettings, GenerationSpec, PILImage.Image],
            Awaitable[tuple[PILImage.Image, PILImage.Image, dict[str, Any]]],
        ],
    ) -> Submission:
        """An inpainting job from image ``index`` of job ``job_id``: ``where`` gives the start
        image (the picture, or a canvas around it), the mask and what to record. Checked and
        recorded like a variation; the start image and mask are stored by content hash."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        await self._gate(actor, user, guild)
        parent, image = await self._source(actor, user, guild, job_id, index, press)
        existing, key = await self._press_key(user, press, repeatable=True)
        if existing is not None:
            return existing
        limits = self.limits(guild)
        # A canvas scales the picture down to fit; a region is repainted at the picture's size.
        if kind is JobKind.REGION and image.width * image.height > limits.max_pixels:
            raise InvalidInput(
                f"This image is {image.width}×{image.height}, above the {limits.max_pixels:,} "
                "pixels an edit may have here; edit the image it was upscaled from."
            )
        if seed is not None and not 0 <= seed <= SEED_MAX:
            raise InvalidInput(f"--seed must be from 0 to {SEED_MAX}; {seed} is not.")
        spec = replace(
            parent.spec,
            seed=self._rng.randint(0, SEED_MAX) if seed is None else seed,
            count=min(VARIATIONS, limits.max_count),
        )
        params: dict[str, Any] = {}
        if prompt is not None:
            parsed = self._parse(prompt, user, limits)
            negative = parsed.negative if parsed.negative is not None else spec.negative
            spec = replace(spec, prompt=parsed.prompt, negative=negative)
            params["prompt"] = clean_text(prompt).strip()
        picture = await asyncio.to_thread(self.files.open, image.path)
        start, mask, recorded = await where(parent, guild, spec, picture)
        strength = REGION_STRENGTH if kind is JobKind.REGION else OUTPAINT_STRENGTH
        spec = replace(
            spec,
            strength=strength,
            steps=img2img_steps(parent.spec.steps, strength),
            width=start.width,
            height=start.height,
        )
        _check_denoising(spec)
        init_path = image.path
        if start is not picture:
            init_path, _, _ = await asyncio.to_thread(
                self.files.save_png, start, None, folder="edits"
            )
        mask_path, digest, _ = await asyncio.to_thread(
            self.files.save_png, mask, None, folder=MASK_FOLDER
        )
        params.update(recorded, mask=mask_path, mask_sha256=digest)
        try:
            return await self._derived(
                actor,
                user,
                guild,
                kind,
                spec,
                parent,
                index,
                init_path,
                key,
                on_progress,
                params=params,
            )
        except (Refused, InvalidInput):
            await self._discard([init_path, mask_path])  # its canvas, its mask
            raise

    async def _segment(self, picture: PILImage.Image, area: str) -> PILImage.Image:
        if self.helpers is None:
            raise InvalidInput(
                "Finding a region from words is not set up here; pick cells or upload a mask."
            )
        try:
            return await self._helper(self.helpers.segment(picture, area))
        except NothingFound:
            raise InvalidInput(
                f"Nothing matched '{area}' in this image; pick cells or upload a mask instead."
            ) from None

    async def _edit_masks(self, job: Job, *, started: bool) -> tuple[PILImage.Image, ...]:
        """An edit's mask (white = repaint), or () for a job that is no edit. ``started``:
        whether its start image is still there."""
        path = job.params.get("mask")
        if not path:
            return ()
        if not started:
            raise InvalidInput(
                f"The image job #{job.id} edits was deleted by its owner; nothing was charged."
            )
        try:
            return (await asyncio.to_thread(self.files.open, path),)
        except OSError:
            raise InvalidInput(f"The mask of job #{job.id} is gone; nothing was charged.") from None

    async def take(
        self, actor: Actor, job_id: int, index: int, *, press: Press | None = None
    ) -> Outcome:
        """U1–U4: image ``index`` of a job on its own (no new job; nothing charged)."""
        user = await self.user(actor)
        guild = await self.guild(actor)
        job, image = await self._source(actor, user, guild, job_id, index, press)
        return Outcome(job, [image])

    async def show(self, actor: Actor, job_id: int) -> Outcome:
        """/show: a past job brought back, under the same rules as any press."""
        return await self._shown(actor, job_id, None)

    async def copy_to_dm(
        self, actor: Actor, job_id: int, index: int | None, *, press: Press | None = None
    ) -> Outcome:
        """✉️: a copy for the presser's direct messages, of what they can see where they pressed;
        never an age-restricted image (a DM is no age-restricted channel)."""
        outcome = (
            await self.take(actor, job_id, index, press=press)
            if index is not None
            else await self._shown(actor, job_id, press)
        )
        privacy.check_age(outcome.job, Place(None, None, nsfw_allowed=False))
        await self.store.add_audit(
            actor=actor.key, action="dm", target=f"job:{job_id}", guild_id=actor.guild_id
        )
        return outcome

    async def delete_result(self, actor: Actor, job_id: int) -> list[tuple[int, int]]:
        """❌: the owner deletes a result: its images and files, and (for the adapter) every
        message it was posted in, returned as (channel id, message id)."""
        user = await self.user(actor)
        try:
            job = await self.store.get_job(job_id)
        except NotFound:
            raise NotFound("This image was deleted.") from None
        if job.user_id != user.id:
            raise NotAllowed("Only the person who made these images can delete them.")
        files, messages = await self.purge(job)
        await self.store.add_audit(
            actor=actor.key,
            action="delete",
            target=f"job:{job_id}",
            guild_id=actor.guild_id,
            detail={"files": files, "messages": len(messages)},
        )
        return messages

    async def purge(self, job: Job) -> tuple[int, list[tuple[int, int]]]:
        """Stop the job, delete its images' files (unless another job holds the same bytes) and
        mark them deleted. Returns the files deleted and the messages that showed them."""
        if not job.state.finished:
            self.engine.cancel(job.id)
        paths = await self.store.purge_job(job.id)
        deleted = sum([await asyncio.to_thread(self.files.delete, p) for p in paths])
        self._recent_jobs.pop(str(job.id), None)
        return deleted, await self.store.job_messages(job.id)

    async def discord_id_of(self, user_id: int) -> int | None:
        return (await self.store.get_user(user_id)).discord_id

    async def _shown(self, actor: Actor, job_id: int, press: Press | None) -> Outcome:
        user = await self.user(actor)
        guild = await self.guild(actor)
        job = await self._visible_job(actor, user, guild, job_id, press)
        images = [i for i in await self.store.get_images(job_id) if not i.deleted]
        if not images:
            raise NotFound(f"Job #{job_id} has no images ({job.state}).")
        return Outcome(job, images)

    async def may_show_here(self, actor: Actor, job_id: int) -> bool:
        """Whether an answer about ``job_id`` may be public here (for /show, before deferring):
        False for a private job, or when in doubt."""
        job = self.recent_job(job_id)
        if job is None:
            try:
                job = await asyncio.wait_for(self.store.get_job(job_id), timeout=1.0)
            except (TimeoutError, NotFound):
                return False
        return not job.private

    # -- what a press acts on ------------------------------------------------------------------

    async def _visible_job(
        self, actor: Actor, user: User, guild: GuildSettings, job_id: int, press: Press | None
    ) -> Job:
        try:
            job = await self.store.get_job(job_id)
        except NotFound:
            if press is not None:
                raise NotFound("This image was deleted.") from None
            raise
        on_its_message = (
            press is not None and await self.store.job_of_message(press.message_id) == job.id
        )
        privacy.check_may_show(
            job, viewer_id=user.id, place=self.place(actor, guild), on_its_message=on_its_message
        )
        return self._remember(job)

    async def _source(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        job_id: int,
        index: int,
        press: Press | None,
    ) -> tuple[Job, Image]:
        job = await self._visible_job(actor, user, guild, job_id, press)
        if job.state is not JobState.DONE:
            raise InvalidInput(f"Job #{job_id} has no images yet (it is {job.state}).")
        try:
            image = await self.store.get_image(job_id, index)
        except NotFound:
            raise NotFound(f"Image {index + 1} of job #{job_id} was deleted.") from None
        if image.withheld:
            raise InvalidInput(f"Image {index + 1} of job #{job_id} was withheld.")
        return job, image

    async def _press_key(
        self, user: User, press: Press | None, *, repeatable: bool
    ) -> tuple[Submission | None, str | None]:
        """A double click of ``press`` joins the first click's job: returns (that job, None), or
        (None, the key the new job records). A repeatable button (V, 🔄) pressed again after
        DOUBLE_CLICK_SECONDS makes a new job; an upscale never does, unless the last one failed.
        """
        if press is None:
            return None, None
        base = f"{press.message_id}:{press.button}:{user.key}"
        # Under the lock that creating and queueing a job holds, so a job found here already
        # has its engine handle (a double click waits for the first click's result).
        async with self._admission_lock:
            latest, count = await self.store.latest_request(base)
        if latest is not None and latest.state in _LIVE_OR_DONE:
            age = (self.now() - latest.created_at).total_seconds()
            if not repeatable or age < DOUBLE_CLICK_SECONDS:
                return self._existing(latest), None
        return None, f"{base}#{count}"

    # -- submitting and finishing --------------------------------------------------------------

    def _existing(self, job: Job) -> Submission:
        handle = self._handles.get(job.id)
        position = self._position(job.id)
        return Submission(job=job, created=False, position=position, handle=handle)

    def _position(self, job_id: int) -> int | None:
        for entry in self.engine.snapshot():
            if entry.job_id == job_id:
                return entry.position
        return None

    async def _submit(
        self,
        actor: Actor,
        user: User,
        guild: GuildSettings,
        kind: JobKind,
        spec: GenerationSpec,
        visibility: privacy.Visibility,
        *,
        parent: tuple[Job, int | None] | None = None,
        init_path: str | None = None,
        request_key: str | None = None,
        on_progress: ProgressHandler | None = None,
        params: dict[str, Any] | None = None,
    ) -> Submission:
        admit = await self._admission(actor, user, guild, spec.count)
        async with self._admission_lock:
            try:
                job, created = await self.store.create_job(
                    NewJob(
                        user_id=user.id,
                        kind=kind,
                        spec=spec,
                        model=spec.model or model_label(self.engine.info.name),
                        guild_id=actor.guild_id,
                        channel_id=actor.channel_id,
                        parent_job_id=parent[0].id if parent else None,
                        parent_index=parent[1] if parent else None,
                        init_image_path=init_path,
                        request_key=request_key,
                        from_photo=visibility.from_photo,
                        age_restricted=visibility.age_restricted,
                        private=visibility.private,
                        runner=self.config.runner,
                        params=params or {},
                    ),
                    admit=admit,
                    since=quota.counting_since(user, self.now()),
                )
            except Refused as exc:
                await self.refuse(actor, str(exc), kind=type(exc).__name__)
                raise
            if not created:
                return self._existing(job)
            self._remember(job)
            self._last_request.touch(user.key, time.monotonic())
            try:
                return await self._enqueue(job, user.key, on_progress)
            except Refused as exc:
                await self.store.finish_job(job.id, JobState.REFUSED, error=str(exc))
                await self.refuse(actor, str(exc), kind=type(exc).__name__, job_id=job.id)
                raise
            except InvalidInput as exc:  # e.g. its start image is gone: never left queued
                await self.store.finish_job(job.id, JobState.FAILED, error=str(exc))
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
        except QueueAtCapacity as exc:
            raise QueueFull(str(exc)) from None
        except OwnerAtCapacity as exc:
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
                raise InvalidInput(
                    f"The start image of job #{job.id} is gone (deleted by its owner or an "
                    "admin); nothing was charged."
                ) from None
        elif job.kind in (JobKind.VARIATION, JobKind.REMIX, JobKind.UPSCALE, JobKind.IMG2IMG):
            raise InvalidInput(
                f"The start image of job #{job.id} was deleted by its owner; nothing was charged."
            )
        masks = await self._edit_masks(job, started=bool(init))
        if job.kind is JobKind.UPSCALE:
            operation = Operation.UPSCALE
        elif masks:
            operation = Operation.INPAINT
        elif init:
            operation = Operation.IMG2IMG
        else:
            operation = Operation.TXT2IMG
        steering = await self._steering(job)
        if steering.get("control_images"):
            operation = Operation.CONTROL
        elif job.kind is JobKind.UPSCALE and job.params.get("mode") == "subtle":
            operation = Operation.UPSCALE_SUBTLE
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
            strength=spec.strength if operation.starts_from_image else None,
            init_images=init,
            tile=spec.tile,
            owner=owner,
            job_id=job.id,
            # With an image check configured, nothing unchecked is shown: no previews.
            previews=self.classifier is None,
            model=spec.model or job.model,
            loras=spec.loras,
            masks=masks,
            **steering,
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
        return await self._record(job, result.images, {**result.repro, "notes": _notes(result)})

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
                text = self._parameters(job, seed, image, repro.get("loras", ()))
                path, digest, _ = self.files.save_png(image, text)
                saved.append(
                    NewImage(index, seed, image.width, image.height, path, digest, flagged)
                )
            return saved

        new_images = await asyncio.to_thread(save_all)
        job = await self.store.finish_job(
            job.id,
            JobState.DONE,
            repro=repro,
            images=new_images,
            charged=quota.charge(new_images),
        )
        if job.state is not JobState.DONE:  # cancelled or purged while the files were written
            unused = await self.store.unreferenced(i.path for i in new_images)
            for path in unused:
                await asyncio.to_thread(self.files.delete, path)
            raise Cancelled(f"Job #{job.id} was {job.state}; nothing was charged.")
        self._remember(job)
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
    def _parameters(
        job: Job, seed: int, image: PILImage.Image, loras: Sequence[Sequence[Any]] = ()
    ) -> str:
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
            loras=loras,
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

    async def blur_flagged(self, job: Job) -> bool:
        """Whether flagged images of this job are shown blurred behind a spoiler (the server's
        choice) rather than withheld. Never for a job derived from an uploaded photo: a flagged
        edit of a real person's photo is withheld everywhere."""
        if job.from_photo or job.guild_id is None:
            return False
        return (await self.store.get_guild_settings(job.guild_id)).blur_flagged

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

    async def recover(self) -> list[Job]:
        """Close the jobs of command-line processes that died (killed, crashed): marked failed,
        nothing charged, so they stop holding their user's job slots. Run by every process at
        start; a job whose process still runs is left to it."""
        closed = []
        for job in await self.store.unfinished_jobs():
            if _runs_at_the_command_line(job) and not (job.runner and self.is_alive(job.runner)):
                closed.append(
                    await self.store.finish_job(
                        job.id,
                        JobState.FAILED,
                        error="The easel command running it stopped; nothing was charged.",
                    )
                )
        return closed

    async def resume(self, on_progress: ProgressHandler | None = None) -> list[Submission]:
        """At the bot's start-up: put its jobs left queued or running back in the engine, or give
        up on those that already used their attempts. Command-line jobs are never rerun here
        (their results belong in a terminal, not a channel); those of dead processes are closed.
        """
        await self.recover()
        submissions: list[Submission] = []
        for job in await self.store.unfinished_jobs():
            if _runs_at_the_command_line(job):
                continue
            if job.attempts >= self.config.attempts:
                await self.store.finish_job(
                    job.id,
                    JobState.FAILED,
                    error=f"Gave up after {job.attempts} attempts; nothing was charged.",
                )
                continue
            user = await self.store.get_user(job.user_id)
            await self.store.requeue(job.id, runner=self.config.runner)
            try:
                submissions.append(await self._enqueue(self._remember(job), user.key, on_progress))
            except (Refused, InvalidInput) as exc:
                await self.store.finish_job(job.id, JobState.FAILED, error=str(exc))
        return submissions

    async def record_message(self, job_id: int, channel_id: int, message_id: int) -> None:
        """Remember a message the job's images were posted in, so a purge can delete it."""
        await self.store.add_message(job_id, channel_id=channel_id, message_id=message_id)

    async def attach_message(self, job_id: int, channel_id: int, message_id: int) -> None:
        """The message that shows the job's progress and result (edited in place later)."""
        await self.store.set_message(job_id, channel_id=channel_id, message_id=message_id)

    async def delivery_failed(self, job_id: int, error: str) -> None:
        """Discord refused every way of delivering the job: stop trying, and say why."""
        await self.store.set_delivery_error(job_id, error[:500])

    # -- reading -------------------------------------------------------------------------------

    async def job(self, job_id: int) -> tuple[Job, list[Image]]:
        """A job and its images, for the operator (the CLI); users go through ``show``."""
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
        daily = self.daily_quota(user, guild, await self.member(actor, user))
        used = await self.images_used_today(user)
        queue = self.engine.snapshot()
        mine = await self.store.list_jobs(
            user_id=user.id, states=[JobState.QUEUED, JobState.RUNNING], limit=100
        )
        positions = {e.job_id: e.position for e in queue}
        return {
            "quota": daily,
            "used_today": used,
            "left_today": max(daily - used, 0),
            "queue_length": len(queue),
            "my_jobs": [(j.id, j.state, positions.get(j.id)) for j in mine],
            "total_jobs": await self.store.count_jobs(user_id=user.id),
            "model": model_label(self.engine.info.name),
        }

    def image_bytes(self, image: Image) -> bytes:
        return self.files.read(image.path)

    def open_image(self, image: Image) -> PILImage.Image:
        return self.files.open(image.path)

    @staticmethod
    def remake_command(job: Job) -> str:
        """What remakes this job: the prompt text for a prompt-only job."""
        if job.kind in EDITS:
            return edit_command(job)
        steered = _steered_command(job)
        if steered is not None:
            return steered
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

    def models(self, actor: Actor, guild: GuildSettings) -> Catalogued:
        """What /models lists here: the models (those for age-restricted channels only where
        such content is allowed), the LoRAs and the embeddings installed."""
        nsfw = self.nsfw_allowed(actor, guild)
        default = find_model(self.engine.catalogue, guild.model or "").name
        return Catalogued(
            models=[m for m in self.engine.models() if nsfw or not m.nsfw_only],
            default=default,
            loras=list(self.engine.loras()),
            embeddings=list(self.engine.embeddings()),
        )

    # -- personal settings ---------------------------------------------------------------------

    async def settings(self, actor: Actor) -> UserSettings:
        return (await self.user(actor)).settings

    async def _save_settings(self, actor: Actor, user: User, settings: UserSettings) -> None:
        await self.store.save_user_settings(user.id, settings)
        if self._settings is not None:
            self._settings[actor.key] = settings

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
                value = clean_text(value).strip() or None
            if value is not None and name == "model":
                value = find_model(self.engine.catalogue, value).name
            elif value is not None and name in DEFAULT_PARAMETERS:
                value = check_default(name, value, limits)
            if name in ("negative", "suffix") and value and len(value) > 300:
                raise InvalidInput(f"The {name} setting is limited to 300 characters.")
            clean[name] = value
        updated = replace(user.settings, **clean)
        await self._save_settings(actor, user, updated)
        return updated

    async def save_preset(self, actor: Actor, name: str, text: str) -> UserSettings:
        user = await self.user(actor)
        guild = await self.guild(actor)
        name = check_preset_name(name)
        presets = dict(user.settings.presets)
        if name not in presets and len(presets) >= 25:
            raise InvalidInput("You can keep 25 presets; delete one first.")
        presets[name] = parse_preset(clean_text(text), limits=self.limits(guild))
        updated = replace(user.settings, presets=presets)
        await self._save_settings(actor, user, updated)
        return updated

    async def delete_preset(self, actor: Actor, name: str) -> UserSettings:
        user = await self.user(actor)
        presets = dict(user.settings.presets)
        if presets.pop(name.strip().lower(), None) is None:
            raise NotFound(f"There is no preset called '{name}'.")
        updated = replace(user.settings, presets=presets)
        await self._save_settings(actor, user, updated)
        return updated

    async def forget_me(self, actor: Actor) -> int:
        """Delete what Easel keeps about the caller that is personal (jobs, prompts, images,
        settings, name); keep what enforcement needs (bans, quota overrides, today's usage,
        the audit trail without prompts). Returns the number of files deleted."""
        user = await self.store.find_user(actor.key)
        if user is None:
            return 0
        for job in await self.store.list_jobs(
            user_id=user.id, states=[JobState.QUEUED, JobState.RUNNING], limit=1000
        ):
            self.engine.cancel(job.id)
        paths = await self.store.forget_user(user.id)
        deleted = sum([await asyncio.to_thread(self.files.delete, p) for p in paths])
        if self._settings is not None:
            self._settings.pop(actor.key, None)
        for key, job in list(self._recent_jobs.items()):
            if job.user_id == user.id:
                del self._recent_jobs[key]
        await self.store.add_audit(
            actor=actor.key,
            action="forget_me",
            target=actor.key,
            guild_id=actor.guild_id,
            detail={"files": deleted},
        )
        return deleted


def _notes(result: GenerationResult) -> list[str]:
    """What the user should know about how their request was taken."""
    notes = list(result.notes)
    if result.dropped_tokens:
        notes.append(
            f"The prompt was too long for this model: the last {result.dropped_tokens} tokens "
            f'were left out ("{result.dropped_text[:120]}").'
        )
    return notes


def _runs_at_the_command_line(job: Job) -> bool:
    # Jobs from before runners were recorded: the CLI's have no channel.
    if job.runner is None:
        return job.channel_id is None
    return job.runner.startswith("cli:")


def _check_denoising(spec: GenerationSpec) -> None:
    if spec.strength is not None and int(spec.steps * spec.strength) < 1:
        raise InvalidInput(
            f"--strength {spec.strength:g} with {spec.steps} steps leaves no step to run; "
            "raise --steps or --strength."
        )


def _aspect_of(width: int, height: int) -> tuple[int, int]:
    """An image's aspect as a ratio of small numbers (1024×683 → 3:2), within 1:4 to 4:1."""
    ratio = Fraction(width, height).limit_denominator(DESCRIBE_ASPECT_DENOMINATOR)
    ratio = min(max(ratio, Fraction(1) / Fraction(ASPECT_MAX)), Fraction(ASPECT_MAX))
    return ratio.numerator, ratio.denominator


def _steered_command(job: Job) -> str | None:
    """The easel command that remakes a job steered by images (their files are under the data
    directory), or None for other jobs."""
    params = job.params
    if job.kind is JobKind.DESCRIBE:
        return "easel describe FILE  (the described image is not kept)"
    if job.kind is JobKind.UPSCALE and params.get("mode"):
        index = (job.parent_index or 0) + 1
        return (
            f"easel upscale {job.parent_job_id} {index} --mode {params['mode']} "
            f"--factor {params['factor']}"
        )
    files = steering_files(params)
    if not files:
        return None
    parsed = replace(
        spec_to_parsed(job.spec),
        control=params.get("control"),
        control_weight=params.get("control_weight"),
        raw_control=True if params.get("control_image") else None,
        image_weight=params.get("image_weight"),
        style_only=params.get("style_only") or None,
    )
    text = shlex.quote(format_parsed(parsed).strip())
    if job.kind is JobKind.BLEND or len(params.get("image_prompts", ())) > 1:  # or its reroll
        return f"easel blend {' '.join(files)} --prompt={text}"
    # With both --control and --iw, the image prompt was the upload the map was made from; the
    # command gives the map for both.
    return f"easel imagine {text} --image {files[0]}"


# The kinds of job that edit one image (inpainting), and the easel command that makes each.
EDITS = {
    JobKind.REGION: "region",
    JobKind.ZOOM: "zoom",
    JobKind.PAN: "pan",
    JobKind.SQUARE: "square",
}


def edit_command(job: Job) -> str:
    """The easel command that remakes an edit: the same image, the same way, the same seed."""
    params = job.params
    index = (job.parent_index or 0) + 1
    words = ["easel", EDITS[job.kind], str(job.parent_job_id), str(index)]
    if job.kind is JobKind.ZOOM:
        words += ["--factor", f"{params.get('factor', 2.0):g}"]
    elif job.kind is JobKind.PAN:
        words += ["--direction", str(params.get("direction"))]
    if "prompt" in params:
        words += ["--prompt", params["prompt"]]
    if params.get("area"):
        words += ["--area", params["area"]]
    elif params.get("cells"):
        words += ["--cells", ",".join(str(c) for c in params["cells"])]
    elif job.kind is JobKind.REGION:  # an uploaded mask, kept under the data directory
        words += ["--mask", f"{params.get('mask')}"]
    words += ["--seed", str(job.spec.seed)]
    return shlex.join(words)


def _engine_input(make: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``make``'s result; the engine's word on bad input (a mask, a canvas) as InvalidInput."""
    try:
        return make(*args, **kwargs)
    except InvalidRequest as exc:
        raise InvalidInput(str(exc)) from None
