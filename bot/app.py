"""Wiring, in one place, at start-up: settings → database → store → engine → service → adapters.

Nothing here runs at import time; the CLI and the Discord bot call :func:`open_app`.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

from bot.core import moderation
from bot.core.errors import ConfigError
from bot.core.service import Service, ServiceConfig
from bot.processes import is_alive, this_process
from bot.settings import Settings, load_settings
from bot.store.db import (
    current_revision,
    make_db_engine,
    make_sessionmaker,
    safe_url,
    upgrade,
    url_password,
)
from bot.store.files import ImageFiles
from bot.store.repos import Store
from engine.requests import EngineHealth, EngineStopped, ModelInfo, QueuedJob

log = logging.getLogger(__name__)

# Libraries that talk too much at INFO (progress bars, deprecation chatter, weight loading).
QUIET_LOGGERS = ("transformers", "diffusers", "accelerate", "urllib3", "httpx", "filelock")


def settings(**overrides: object) -> Settings:
    return load_settings(**overrides)


def configure_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True
    )
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    # transformers warns at import time that torchvision is absent; it is not needed here.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def db_password(settings: Settings) -> str:
    """The database password, to keep out of the logs ("" when there is none)."""
    return url_password(settings.db_url)


def printable_db_url(settings: Settings) -> str:
    """The database URL without its password (for messages and logs)."""
    return safe_url(settings.db_url)


async def upgrade_database(settings: Settings) -> str | None:
    db = make_db_engine(settings.db_url)
    try:
        await upgrade(db)
        return await current_revision(db)
    finally:
        await db.dispose()


@dataclass
class App:
    settings: Settings
    store: Store
    files: ImageFiles
    engine: Any  # engine.worker.Engine
    service: Service


def service_config(settings: Settings, runner: str | None = None) -> ServiceConfig:
    return ServiceConfig(
        limits=settings.limits,
        defaults=settings.defaults,
        daily_images_per_user=settings.daily_images_per_user,
        max_queued_per_user=settings.max_queued_per_user,
        cooldown_seconds=settings.cooldown_seconds,
        max_upload_bytes=settings.max_upload_bytes,
        max_upscale_pixels=settings.max_upscale_pixels,
        attempts=settings.attempts,
        admin_role_ids=tuple(settings.admin_role_ids),
        runner=runner,
        text_classifier_threshold=settings.text_classifier_threshold,
    )


class NoEngine:
    """For commands that only read the records (history, show, cancel, models): loading a model
    to list jobs would cost seconds to minutes. Anything that needs the engine says so."""

    def __init__(self, settings: Settings) -> None:
        from engine.catalogue import AdapterFolder

        self.catalogue = catalogue(settings)
        default = self.catalogue.default
        self.info = ModelInfo(
            default.name,
            default.family or "unknown",
            default.native_side,
            "",
            settings.device,
            settings.dtype,
        )
        self._loras = AdapterFolder(settings.lora_dir, "lora")
        self._embeddings = AdapterFolder(settings.embeddings_dir, "embedding")

    def models(self) -> tuple[Any, ...]:
        return self.catalogue.entries()

    def loras(self) -> tuple[Any, ...]:
        return self._loras.entries()

    def embeddings(self) -> tuple[Any, ...]:
        return self._embeddings.entries()

    def submit(self, request: object, **_: object) -> NoReturn:
        raise EngineStopped("This command runs without the engine.")

    def cancel(self, job_id: int) -> bool:
        return False

    def snapshot(self) -> list[QueuedJob]:
        return []

    def health(self) -> EngineHealth:
        return EngineHealth(alive=False, model=None, queued=0, running=0)


def extra_models(settings: Settings) -> Any:
    """The companion models from the settings (engine.catalogue.ExtraModels): the inpainting
    checkpoint, the segmenter, ControlNets, IP-Adapter, upscaler, captioner, depth estimator and
    preview decoders, each loaded on first use."""
    from engine.catalogue import ExtraModels

    return ExtraModels(
        inpaint=settings.inpaint_model,
        segmenter=settings.segment_model,
        controlnets=settings.controlnets,
        ip_adapter=settings.ip_adapter,
        ip_adapter_encoder=settings.ip_adapter_encoder,
        upscaler=settings.upscaler_model,
        captioner=settings.caption_model,
        depth=settings.depth_model,
        max_upscale_pixels=settings.max_upscale_pixels,
        upscale_tile=settings.upscale_tile,
        preview_decoders=tuple(settings.preview_decoders.items()),
    )


def catalogue(settings: Settings) -> Any:
    """The model catalogue: EASEL_MODELS_FILE, or EASEL_MODEL as a catalogue of one."""
    from engine.catalogue import CatalogueError, load_catalogue

    try:
        return load_catalogue(settings.models_file, settings.model)
    except CatalogueError as exc:
        name = "EASEL_MODELS_FILE" if settings.models_file else "EASEL_MODEL"
        raise ConfigError(f"Setting {name}: {exc}") from None


@asynccontextmanager
async def open_app(
    settings: Settings, *, with_engine: bool = True, runner: str = "cli"
) -> AsyncIterator[App]:
    """The whole stack, ready; stopped and closed on exit. Without the engine for commands
    that only read or change records. ``runner`` is "bot" or "cli": what this process is, for
    the jobs it runs."""
    from engine.loading import ModelLoadError
    from engine.ops.helpers import Helpers
    from engine.pool import ModelPool
    from engine.safety import load_safety_checker
    from engine.text_safety import load_text_classifier
    from engine.worker import Engine, PoolSpec, split_devices

    try:
        devices = split_devices(settings.device)
    except ValueError as exc:
        raise ConfigError(f"Setting EASEL_DEVICE {exc}.") from None
    db = make_db_engine(settings.db_url)
    engine = None
    extras = extra_models(settings)
    # The captioner and control-map makers run on their own thread, loaded on first use: even
    # commands without the engine (easel describe) have them.
    helpers = Helpers(extras, data_dir=settings.data_dir, device=devices[0])
    try:
        await upgrade(db)
        store = Store(make_sessionmaker(db))
        files = ImageFiles(settings.data_dir)
        config = service_config(settings, this_process(runner))
        if not with_engine:
            service = Service(
                store, files, NoEngine(settings), config, is_alive=is_alive, helpers=helpers
            )
            await service.recover()
            yield App(settings, store, files, None, service)
            return
        pool = ModelPool(
            catalogue(settings),
            data_dir=settings.data_dir,
            device=devices[0],
            dtype=settings.dtype,
            memory_budget=settings.model_memory or None,
            compile_unet=settings.compile,
            cpu_threads=settings.cpu_threads,
            lora_dir=settings.lora_dir,
            embeddings_dir=settings.embeddings_dir,
            extras=extras,
        )
        # With EASEL_COMPILE, each device compiles and warms a model up for the batch sizes it
        # will run as soon as it loads it, not in a user's first job.
        warm_up = settings.batch_max_images if settings.compile else 0
        executors = []
        if settings.engine == "ray":
            from engine.serve import RayExecutor

            # The weights live on the replicas; the bot only keeps the catalogue.
            executors.append(
                RayExecutor(
                    PoolSpec.of(pool),
                    address=settings.ray_address,
                    replicas=settings.ray_replicas,
                    gpus_per_replica=settings.ray_gpus_per_replica,
                    attempts=settings.attempts,
                    warm_up=warm_up,
                )
            )
        else:
            try:
                await asyncio.to_thread(pool.preload)  # the default model, before the first job
            except ModelLoadError as exc:
                name = "EASEL_MODELS_FILE" if settings.models_file else "EASEL_MODEL"
                raise ConfigError(f"Setting {name}: {exc}") from None
        engine = Engine(
            pool,
            queue_size=settings.queue_size,
            max_per_owner=settings.max_queued_per_user,
            batch_max_images=settings.batch_max_images,
            preview_interval=settings.preview_interval,
            devices=devices,
            executors=executors,
            warm_up=warm_up,
        )
        # The term lists, read now rather than during the first prompt check on the event loop.
        await asyncio.to_thread(moderation.lexicons)
        text_classifier = None
        if settings.text_classifier:
            try:
                text_classifier = await asyncio.to_thread(
                    load_text_classifier, settings.text_classifier, device=devices[0]
                )
            except ModelLoadError as exc:
                raise ConfigError(f"Setting EASEL_TEXT_CLASSIFIER: {exc}") from None
        classifier = None
        if settings.safety_checker:
            try:
                classifier = await asyncio.to_thread(
                    load_safety_checker,
                    settings.safety_checker,
                    model=engine.info.source,
                    device=devices[0],
                )
            except ModelLoadError as exc:
                raise ConfigError(f"Setting EASEL_SAFETY_CHECKER: {exc}") from None
        engine.start()
        service = Service(
            store,
            files,
            engine,
            config,
            classifier=classifier,
            text_classifier=text_classifier,
            is_alive=is_alive,
            helpers=helpers,
        )
        await service.recover()  # jobs of easel commands that were killed hold no slots
        yield App(settings, store, files, engine, service)
    finally:
        if engine is not None:
            await asyncio.to_thread(engine.stop)
        await asyncio.to_thread(helpers.close)
        await db.dispose()
