"""What goes into and comes out of the engine. No torch here, so the bot can import it cheaply."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image


class Operation(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"  # resize ×2, then a low-strength image-to-image pass ("hires fix")


@dataclass(frozen=True)
class GenerationRequest:
    """One job: ``len(seeds)`` images of one prompt. Image *i* uses ``seeds[i]``."""

    operation: Operation
    prompt: str
    negative: str
    width: int
    height: int
    steps: int
    guidance: float
    sampler: str
    seeds: tuple[int, ...]
    strength: float | None = None
    # Start images for image-to-image and upscale: one per seed, or one shared by all.
    init_images: tuple[Image.Image, ...] = ()
    tile: bool = False
    owner: str = "local"  # whose turn it is in the fair queue
    job_id: int | None = None
    previews: bool = True

    @property
    def count(self) -> int:
        return len(self.seeds)

    def init_image(self, index: int) -> Image.Image:
        return self.init_images[index if len(self.init_images) > 1 else 0]

    def denoising_steps(self) -> int:
        """Steps the sampler actually runs: image-to-image skips the first (1 - strength)."""
        if self.operation is Operation.TXT2IMG:
            return self.steps
        return int(self.steps * (self.strength or 0.0))

    def problem(self) -> str | None:
        """Why this request cannot run, in words for users; None when it can."""
        if not self.seeds:
            return "No images requested."
        if self.width % 8 or self.height % 8 or self.width < 8 or self.height < 8:
            return f"Width and height must be multiples of 8, not {self.width}×{self.height}."
        if self.steps < 1:
            return "At least one step is needed."
        if self.operation is not Operation.TXT2IMG:
            if not self.init_images:
                return "Image-to-image needs a start image."
            if self.strength is None or not 0 < self.strength <= 1:
                return "Image-to-image needs a strength above 0 up to 1."
            if len(self.init_images) not in (1, self.count):
                return "Give one start image, or one per seed."
            if self.denoising_steps() < 1:
                return (
                    f"Strength {self.strength} with {self.steps} steps leaves no step to run; "
                    "raise --steps or --strength."
                )
        return None

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        return (
            self.operation,
            self.width,
            self.height,
            self.steps,
            self.guidance,
            self.sampler,
            self.strength,
            self.tile,
        )


@dataclass(frozen=True)
class Progress:
    job_id: int | None
    step: int
    total: int
    preview: Image.Image | None = None


@dataclass(frozen=True)
class GenerationResult:
    images: tuple[Image.Image, ...]
    # What exact reproduction needs: model identity, scheduler and its config, dtype, device,
    # library versions.
    repro: dict[str, Any]
    seconds: float
    batch_images: int  # images in the pipeline call this job ran in (1 job or several)


@dataclass(frozen=True)
class ModelInfo:
    name: str  # as configured: hub id, path, or "tiny"
    family: str  # "sd1", "sd2", "sdxl", "tiny"
    native_side: int  # pixels per side the model was trained at
    identity: str  # Hub revision or file hash
    device: str
    dtype: str


@dataclass(frozen=True)
class QueuedJob:
    job_id: int | None
    owner: str
    position: int  # jobs ahead of this one; 0 for the running ones and the next
    images: int


@dataclass
class EngineHealth:
    alive: bool
    model: ModelInfo | None
    queued: int
    running: int
    jobs_done: int = 0
    jobs_failed: int = 0
    out_of_memory: int = 0
    last_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class EngineError(Exception):
    """Base of what the engine raises to its callers; ``str()`` is fit for users."""


class QueueFull(EngineError):
    pass


class OwnerQueueFull(EngineError):
    pass


class JobCancelled(EngineError):
    pass


class EngineStopped(EngineError):
    pass


class GenerationError(EngineError):
    """The pipeline failed for this job (bad input, out of memory, an error in diffusers)."""

    def __init__(self, message: str, *, out_of_memory: bool = False) -> None:
        super().__init__(message)
        self.out_of_memory = out_of_memory
