"""Settings from the environment and ``.env`` (pydantic-settings). Every name is ``EASEL_*``,
except the token, which is ``DISCORD_TOKEN`` as every Discord tutorial calls it.

:func:`load_settings` turns a wrong value into one :class:`ConfigError` line naming the setting.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.core.errors import ConfigError, EaselError
from bot.core.grammar import SAMPLERS, Defaults, Limits, check_default

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
    device: str = "auto"
    dtype: Literal["auto", "float16", "bfloat16", "float32"] = "auto"
    compile: bool = False
    cpu_threads: int = Field(default=0, ge=0, le=1024)
    safety_checker: str | None = None
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
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `.env.example` lists optional settings as `NAME=`; an empty value means "not set".
        return None if isinstance(value, str) and not value.strip() else value

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
