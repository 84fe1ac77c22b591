"""Domain records: what the store returns and the service works with (no ORM objects leak out)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

from bot.core.grammar import Defaults, GenerationSpec


class JobKind(StrEnum):
    IMAGINE = "imagine"
    VARIATION = "variation"
    UPSCALE = "upscale"
    REROLL = "reroll"
    REMIX = "remix"
    IMG2IMG = "img2img"
    BLEND = "blend"  # 2-5 uploaded images as image prompts (/blend)
    CONTROL = "control"  # text-to-image steered by a control map (/imagine control:)
    DESCRIBE = "describe"  # /describe: no images; its captions are in params, for its buttons
    # Edits of one image (inpainting): a region repainted, the canvas grown around it.
    REGION = "region"
    ZOOM = "zoom"
    PAN = "pan"
    SQUARE = "square"


# Where an edit's mask is stored (by content hash, named in the job's params["mask"]).
MASK_FOLDER = "masks"


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REFUSED = "refused"

    @property
    def finished(self) -> bool:
        return self not in (JobState.QUEUED, JobState.RUNNING)


class NsfwRule(StrEnum):
    BLOCK = "block"
    AGE_RESTRICTED = "age_restricted"  # allowed only in channels Discord marks age-restricted


def defaults_of(settings: object) -> Defaults:
    """The generation defaults a settings record holds (the fields it shares with Defaults)."""
    return Defaults(
        **{f.name: getattr(settings, f.name) for f in fields(Defaults) if hasattr(settings, f.name)}
    )


def _from_dict(cls: type, data: dict[str, Any] | None) -> Any:
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in (data or {}).items() if k in names})


@dataclass(frozen=True)
class UserSettings:
    """Personal defaults from /settings (stored as JSON on the user row)."""

    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    negative: str | None = None
    suffix: str | None = None
    presets: dict[str, str] = field(default_factory=dict)
    remix_mode: bool = False
    private: bool = False
    model: str | None = None  # a catalogue name

    def defaults(self) -> Defaults:
        return defaults_of(self)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> UserSettings:
        return _from_dict(cls, data)


@dataclass(frozen=True)
class GuildSettings:
    """A server's own rules, set by its admins (stored as JSON on the guild row)."""

    nsfw_rule: NsfwRule = NsfwRule.BLOCK
    allowed_channel_ids: tuple[int, ...] = ()  # empty: every channel
    admin_role_ids: tuple[int, ...] = ()
    daily_images_per_user: int | None = None
    max_steps: int | None = None
    blur_flagged: bool = False  # post flagged images blurred and spoilered instead of withholding
    allow_uploads: bool = True  # members may give start images (photos) to edit
    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    negative: str | None = None
    model: str | None = None  # the server's default model (a catalogue name)

    def defaults(self) -> Defaults:
        return defaults_of(self)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["nsfw_rule"] = str(self.nsfw_rule)
        data["allowed_channel_ids"] = list(self.allowed_channel_ids)
        data["admin_role_ids"] = list(self.admin_role_ids)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> GuildSettings:
        data = dict(data or {})
        if "nsfw_rule" in data:
            data["nsfw_rule"] = NsfwRule(data["nsfw_rule"])
        for key in ("allowed_channel_ids", "admin_role_ids"):
            if key in data:
                data[key] = tuple(int(x) for x in data[key])
        return _from_dict(cls, data)


@dataclass(frozen=True)
class User:
    id: int
    key: str  # "discord:<snowflake>" or "local:<name>"
    name: str
    banned: bool = False
    ban_reason: str | None = None
    banned_until: datetime | None = None
    daily_quota: int | None = None  # per-user override of the daily image quota
    quota_reset_at: datetime | None = None
    settings: UserSettings = field(default_factory=UserSettings)
    created_at: datetime | None = None

    def is_banned(self, now: datetime) -> bool:
        return self.banned and (self.banned_until is None or self.banned_until > now)

    @property
    def discord_id(self) -> int | None:
        kind, _, ident = self.key.partition(":")
        return int(ident) if kind == "discord" and ident.isdigit() else None


@dataclass(frozen=True)
class Member:
    """A user on one server: that server's own ban and quota override."""

    guild_id: int
    user_id: int
    banned: bool = False
    ban_reason: str | None = None
    banned_until: datetime | None = None
    daily_quota: int | None = None

    def is_banned(self, now: datetime) -> bool:
        return self.banned and (self.banned_until is None or self.banned_until > now)


def steering_files(params: dict[str, Any]) -> list[str]:
    """The uploaded images that steer a job (job.params): its control map, then its image
    prompts in order; paths under the data directory."""
    control = [params["control_image"]] if params.get("control_image") else []
    return control + list(params.get("image_prompts", ()))


def param_files(params: dict[str, Any]) -> list[str]:
    """Every file a job's params name: its steering images and an edit's mask."""
    mask = [params["mask"]] if params.get("mask") else []
    return steering_files(params) + mask


@dataclass(frozen=True)
class NewJob:
    """What the service asks the store to record before any work starts."""

    user_id: int
    kind: JobKind
    spec: GenerationSpec
    model: str
    guild_id: int | None = None
    channel_id: int | None = None
    parent_job_id: int | None = None
    parent_index: int | None = None
    init_image_path: str | None = None
    request_key: str | None = None
    state: JobState = JobState.QUEUED
    error: str | None = None
    from_photo: bool = False
    age_restricted: bool = False
    private: bool = False
    runner: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class NewImage:
    """An image file just written, for the store to record with its job."""

    index: int
    seed: int
    width: int
    height: int
    path: str
    sha256: str
    withheld: bool = False


@dataclass(frozen=True)
class Job:
    id: int
    user_id: int
    kind: JobKind
    state: JobState
    spec: GenerationSpec
    model: str
    guild_id: int | None
    channel_id: int | None
    message_id: int | None
    parent_job_id: int | None
    parent_index: int | None
    init_image_path: str | None
    error: str | None
    attempts: int
    repro: dict[str, Any]
    charged_images: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    request_key: str | None = None
    # Decided when the job was made, inherited from its parent (see bot.core.privacy).
    from_photo: bool = False  # derived from an uploaded photo: the photo hard limits hold
    age_restricted: bool = False  # made where age-restricted content was allowed
    private: bool = False  # shown to its owner only
    runner: str | None = None  # the process that runs it ("bot:…" or "cli:…")
    params: dict[str, Any] = field(default_factory=dict)
    delivery_error: str | None = None  # Discord refused every way of delivering it


@dataclass(frozen=True)
class Image:
    id: int
    job_id: int
    index: int
    seed: int
    width: int
    height: int
    path: str  # relative to the data directory
    sha256: str
    deleted: bool = False
    withheld: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True)
class AuditEvent:
    id: int
    created_at: datetime
    actor: str
    action: str
    target: str | None
    reason: str | None
    guild_id: int | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class BlocklistEntry:
    id: int
    guild_id: int | None
    term: str
    created_by: str
    created_at: datetime
