"""Settings from the environment and ``.env`` (pydantic-settings). Every name is ``EASEL_*``,
except the token, which is ``DISCORD_TOKEN`` as every Discord tutorial calls it.

:func:`load_settings` turns a wrong value into one :class:`ConfigError` line naming the setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.core.errors import ConfigError, EaselError
from bot.core.grammar import SAMPLERS, Defaults, Limits, check_default
from engine.catalogue import DEFAULT_CAPTIONER, DEFAULT_DEPTH_MODEL, DEFAULT_UPSCALE_TILE
from engine.families import FAMILIES

ENV_PREFIX = "EASEL_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    # Discord. SecretStr keeps the token out of reprs and logs.
    discord_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("DISCORD_TOKEN", "EASEL_DISCORD_TOKEN")
    )
    admin_role_ids: list[int] = Field(default_factory=list)
    # Development mode: register the slash commands in this one server only (see the README).
    command_guild: int | None = None

    # Model and hardware.
    model: str = "tiny"
    # A models.toml naming several models (see the README); without it, EASEL_MODEL is the one.
    models_file: Path | None = None
    # Bytes of model weights to keep loaded at once ("24GB", "8GiB" or a number); 0: no limit.
    model_memory: int = 0
    lora_dir: Path | None = None
    embeddings_dir: Path | None = None
    # Editing (Vary Region, Zoom Out, Pan, Make Square): a dedicated inpainting checkpoint, in
    # any form EASEL_MODEL takes (unset: inpainting shares the model's own weights), and the
    # CLIPSeg model that finds a region from words (loaded on first use).
    inpaint_model: str | None = None
    segment_model: str = "CIDAS/clipseg-rd64-refined"
    # One device ("auto", "cpu", "cuda", "cuda:1", "mps"), or several in one machine
    # ("cuda:0,cuda:1"): one engine thread per device, fed by the one fair queue.
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    compile: bool = False
    cpu_threads: int = Field(default=0, ge=0, le=1024)
    # Where batches run: "local" (this process, EASEL_DEVICE) or "ray" (Ray Serve replicas, one
    # per GPU of the Ray cluster at EASEL_RAY_ADDRESS: "auto" for the cluster this machine
    # belongs to, HOST:6379 for a head elsewhere; unset, a Ray of this machine alone).
    engine: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    # Replicas to run; unset: one per EASEL_RAY_GPUS_PER_REPLICA GPUs in the cluster (0: CPU
    # replicas, then set EASEL_RAY_REPLICAS).
    ray_replicas: int | None = Field(default=None, ge=1)
    ray_gpus_per_replica: float = Field(default=1.0, ge=0)
    # Fast real previews: a TAESD (tiny autoencoder) per model family, "sd1=madebyollin/taesd,
    # sdxl=madebyollin/taesdxl" (a models.toml entry may name its own, preview_decoder = "...").
    preview_decoders: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    safety_checker: str | None = None
    # Steering (README "Steering"): ControlNets per control type (Hub id, diffusers folder or
    # .safetensors file; "tiny" for the offline demo), the depth estimator behind depth maps,
    # the /describe captioner, the IP-Adapter (Hub repository/path of its weights file, or a
    # file) and its image encoder (default: image_encoder beside the weights), and the Upscale
    # (Subtle) model (an ESRGAN-family .pth/.safetensors) with its tile size in input pixels.
    controlnet_canny: str | None = None
    controlnet_depth: str | None = None
    controlnet_lineart: str | None = None
    controlnet_scribble: str | None = None
    controlnet_pose: str | None = None
    depth_model: str = DEFAULT_DEPTH_MODEL
    caption_model: str = DEFAULT_CAPTIONER
    ip_adapter: str | None = None
    ip_adapter_encoder: str | None = None
    upscaler_model: str | None = None
    upscale_tile: int = Field(default=DEFAULT_UPSCALE_TILE, ge=64, le=4096)
    # A multilingual sentence-embedding model (Hub id or folder): a learned second opinion on
    # prompts, which can only add refusals. Prompts scoring at or above the threshold (cosine
    # similarity to the policy's example sentences) are refused.
    text_classifier: str | None = None
    text_classifier_threshold: float = Field(default=0.7, gt=0, le=1)

    # Storage.
    data_dir: Path = Path("data")
    database_url: str | None = None

    # Limits.
    max_steps: int = Field(default=50, ge=1, le=500)
    max_pixels: int = Field(default=1024 * 1024, ge=64 * 64)
    max_upscale_pixels: int = Field(default=2048 * 2048, ge=64 * 64)
    max_prompt_length: int = Field(default=1000, ge=10, le=6000)
    queue_size: int = Field(default=100, ge=1)
    max_queued_per_user: int = Field(default=3, ge=1)
    daily_images_per_user: int = Field(default=200, ge=0)
    cooldown_seconds: float = Field(default=0.0, ge=0)
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)

    # Defaults for generation (a server's and a user's settings override them).
    default_aspect: str = "1:1"
    default_steps: int = Field(default=25, ge=1)
    default_guidance: float = Field(default=7.0, ge=0, le=30)
    default_sampler: str = "euler_a"
    default_negative: str = ""

    # Engine.
    batch_max_images: int = Field(default=8, ge=1, le=64)
    preview_interval: float = Field(default=1.0, ge=0)
    attempts: int = Field(default=2, ge=1, le=10)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator(
        "discord_token",
        "safety_checker",
        "text_classifier",
        "database_url",
        "command_guild",
        "models_file",
        "lora_dir",
        "embeddings_dir",
        "inpaint_model",
        "ray_address",
        "ray_replicas",
        "controlnet_canny",
        "controlnet_depth",
        "controlnet_lineart",
        "controlnet_scribble",
        "controlnet_pose",
        "ip_adapter",
        "ip_adapter_encoder",
        "upscaler_model",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `.env.example` lists optional settings as `NAME=`; an empty value means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("preview_decoders", mode="before")
    @classmethod
    def _family_pairs(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        pairs: dict[str, str] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            family, _, source = (x.strip() for x in item.partition("="))
            if family not in FAMILIES or not source:
                raise ValueError(
                    f"'{item}' is not FAMILY=SOURCE with a family of {', '.join(FAMILIES)}"
                )
            pairs[family] = source
        return pairs

    @field_validator("model_memory", mode="before")
    @classmethod
    def _size(cls, value: object) -> object:
        return parse_size(value) if isinstance(value, str) else value

    @field_validator("default_sampler")
    @classmethod
    def _known_sampler(cls, value: str) -> str:
        if value not in SAMPLERS:
            raise ValueError(f"must be one of {', '.join(SAMPLERS)}")
        return value

    @field_validator("default_aspect")
    @classmethod
    def _valid_aspect(cls, value: str) -> str:
        try:
            check_default("aspect", value)
        except EaselError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        value = value.strip().lower()
        base = value.split(":", 1)[0]
        if base not in {"auto", "cpu", "cuda", "mps", "xpu"}:
            raise ValueError("must be auto, cpu, cuda, cuda:N, mps or xpu")
        return value

    @property
    def controlnets(self) -> tuple[tuple[str, str], ...]:
        """(control type, source) for each EASEL_CONTROLNET_* that is set."""
        kinds = ("canny", "depth", "lineart", "scribble", "pose")
        chosen = ((kind, getattr(self, f"controlnet_{kind}")) for kind in kinds)
        return tuple((kind, source) for kind, source in chosen if source)

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'easel.db'}"

    @property
    def limits(self) -> Limits:
        return Limits(
            max_steps=self.max_steps,
            max_pixels=self.max_pixels,
            max_prompt_length=self.max_prompt_length,
        )

    @property
    def defaults(self) -> Defaults:
        return Defaults(
            aspect=self.default_aspect,
            steps=self.default_steps,
            guidance=self.default_guidance,
            sampler=self.default_sampler,
            negative=self.default_negative,
        )


_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_UNITS |= {"KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def parse_size(text: str) -> int:
    """ "24GB", "8 GiB", "1500000000" → bytes."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise ValueError("must be a size such as 24GB, 8GiB or a number of bytes")
    return int(float(match.group(1)) * _UNITS[unit])


def _env_name(loc: tuple[object, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    if field == "discord_token":
        return "DISCORD_TOKEN"
    return ENV_PREFIX + field.upper()


def load_settings(**overrides: object) -> Settings:
    """Read the settings; a wrong value raises one ConfigError line naming the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ").rstrip(".")
        name = _env_name(err.get("loc", ()))
        given = err.get("input")
        shown = (
            f" (got {str(given)[:60]!r})"
            if isinstance(given, str | int | float) and name != "DISCORD_TOKEN"
            else ""
        )
        raise ConfigError(f"Setting {name}: {msg}{shown}.") from None
