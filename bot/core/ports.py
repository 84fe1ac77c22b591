"""The small interfaces the core talks through: storage, image files and the engine.

``bot.store`` and ``engine`` implement them; tests may too.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Protocol

from PIL import Image as PILImage

from bot.core.models import (
    AuditEvent,
    BlocklistEntry,
    GuildSettings,
    Image,
    Job,
    JobState,
    Member,
    NewImage,
    NewJob,
    User,
    UserSettings,
)
from engine.requests import (
    EngineHealth,
    GenerationRequest,
    GenerationResult,
    ModelInfo,
    QueuedJob,
)


class Store(Protocol):
    async def get_or_create_user(self, key: str, name: str) -> User: ...
    async def get_user(self, user_id: int) -> User: ...
    async def find_user(self, key: str) -> User | None: ...
    async def save_user_settings(self, user_id: int, settings: UserSettings) -> User: ...
    async def set_ban(
        self, user_id: int, *, banned: bool, reason: str | None, until: datetime | None
    ) -> User: ...
    async def set_quota(
        self, user_id: int, *, daily_quota: int | None, reset_usage: bool = False
    ) -> User: ...
    async def delete_user(self, user_id: int) -> list[str]: ...
    async def get_member(self, guild_id: int, user_id: int) -> Member: ...
    async def set_member_ban(
        self,
        guild_id: int,
        user_id: int,
        *,
        banned: bool,
        reason: str | None,
        until: datetime | None,
    ) -> Member: ...
    async def set_member_quota(
        self, guild_id: int, user_id: int, daily_quota: int | None
    ) -> Member: ...
    async def get_guild_settings(self, guild_id: int) -> GuildSettings: ...
    async def save_guild_settings(
        self, guild_id: int, settings: GuildSettings
    ) -> GuildSettings: ...
    async def create_job(self, new: NewJob) -> tuple[Job, bool]: ...
    async def find_job_by_request_key(self, key: str) -> Job | None: ...
    async def get_job(self, job_id: int) -> Job: ...
    async def mark_running(self, job_id: int) -> Job: ...
    async def finish_job(
        self,
        job_id: int,
        state: JobState,
        *,
        error: str | None = None,
        repro: dict[str, Any] | None = None,
        images: Sequence[NewImage] = (),
    ) -> Job: ...
    async def requeue(self, job_id: int) -> Job: ...
    async def set_message(self, job_id: int, *, channel_id: int | None, message_id: int) -> Job: ...
    async def list_jobs(
        self,
        *,
        user_id: int | None = None,
        guild_id: int | None = None,
        states: Sequence[JobState] | None = None,
        search: str | None = None,
        limit: int = 10,
        offset: int = 0,
        oldest_first: bool = False,
    ) -> list[Job]: ...
    async def count_jobs(self, *, user_id: int | None = None, search: str | None = None) -> int: ...
    async def unfinished_jobs(self) -> list[Job]: ...
    async def images_charged_since(self, user_id: int, since: datetime) -> int: ...
    async def pending(self, user_id: int) -> tuple[int, int]: ...
    async def job_stats(self, since: datetime, guild_id: int | None = None) -> dict[str, Any]: ...
    async def purge_job(self, job_id: int) -> list[str]: ...
    async def unreferenced(self, paths: Iterable[str]) -> list[str]: ...
    async def get_images(self, job_id: int) -> list[Image]: ...
    async def get_image(self, job_id: int, index: int) -> Image: ...
    async def add_block_term(self, guild_id: int | None, term: str, created_by: str) -> None: ...
    async def remove_block_term(self, guild_id: int | None, term: str) -> None: ...
    async def list_block_terms(self, guild_id: int | None) -> list[BlocklistEntry]: ...
    async def add_audit(
        self,
        *,
        actor: str,
        action: str,
        target: str | None = None,
        reason: str | None = None,
        guild_id: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> AuditEvent: ...
    async def list_audit(
        self, *, guild_id: int | None = None, limit: int = 20, action: str | None = None
    ) -> list[AuditEvent]: ...


class ImageFiles(Protocol):
    def save_png(
        self, image: PILImage.Image, parameters: str | None = None, *, folder: str = "images"
    ) -> tuple[str, str, bytes]: ...
    def read(self, relative: str) -> bytes: ...
    def open(self, relative: str) -> PILImage.Image: ...
    def delete(self, relative: str) -> bool: ...


class JobHandle(Protocol):
    position: int

    async def wait(self) -> GenerationResult: ...
    def cancel(self) -> bool: ...


class Engine(Protocol):
    @property
    def info(self) -> ModelInfo: ...
    def submit(
        self,
        request: GenerationRequest,
        *,
        on_progress: Callable[..., None] | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
    ) -> JobHandle: ...
    def cancel(self, job_id: int) -> bool: ...
    def snapshot(self) -> list[QueuedJob]: ...
    def health(self) -> EngineHealth: ...


ImageClassifier = Callable[[PILImage.Image], bool]
"""Image-side check: True when the image must be withheld (runs off the event loop)."""
