"""What goes into and comes out of the engine. No torch here, so the bot can import it cheaply."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image


class Operation(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"  # resize ×2, then a low-strength image-to-image pass ("hires fix")


# LoRA weights users may give. 1 is the trained strength; negative weights invert "slider"
# LoRAs. ComfyUI allows ±100, but beyond a few the output is noise whatever the LoRA.
LORA_WEIGHT_MAX = 4.0
# A few-step job's variation or upscale runs at least this many denoising steps (or the job's own
# count, if smaller): one step at low strength barely changes a turbo model's image.
MIN_DENOISING_STEPS = 2


def img2img_steps(steps: int, strength: float) -> int:
    """The ``steps`` to ask of an image-to-image pass at ``strength`` so that at least
    ``min(steps, MIN_DENOISING_STEPS)`` denoising steps actually run.

    Diffusers runs ``int(steps * strength)`` of the scheduled steps; a 2-step turbo job varied at
    0.35 would run none. Scaling the schedule up keeps the step size the model was distilled
    for near its last steps (the SDXL-Turbo model card asks for ``steps * strength >= 1``).
    Jobs with enough steps are left as they are."""
    if not 0 < strength <= 1 or steps < 1:
        return steps
    want = min(steps, MIN_DENOISING_STEPS)
    total = steps
    while int(total * strength) < want:
        total += 1
    return total


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
    model: str = ""  # a catalogue name (or source); "" is the catalogue's default model
    # (LoRA name, weight) pairs, applied in this order; embeddings are used by their token.
    loras: tuple[tuple[str, float], ...] = ()

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
                    f"raise --steps (to {img2img_steps(self.steps, self.strength)}) or --strength."
                )
        seen: set[str] = set()
        for name, weight in self.loras:
            if name.casefold() in seen:
                return f"LoRA '{name}' is given twice; keep one."
            seen.add(name.casefold())
            if not math.isfinite(weight) or abs(weight) > LORA_WEIGHT_MAX:
                return (
                    f"LoRA '{name}' has weight {weight:g}; weights go from "
                    f"-{LORA_WEIGHT_MAX:g} to {LORA_WEIGHT_MAX:g}."
                )
        return None

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call."""
        return (
            self.model.casefold(),
            self.loras,
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
    # What exact reproduction needs: model name and identity, LoRAs and embeddings with their
    # hashes, scheduler and its config, dtype, device, library versions.
    repro: dict[str, Any]
    seconds: float
    batch_images: int  # images in the pipeline call this job ran in (1 job or several)
    # Prompt tokens the text encoder could not take (after chunking), and their text: the
    # prompt was cut. 0 and "" when the whole prompt was used.
    dropped_tokens: int = 0
    dropped_text: str = ""
    # Sentences for the user about how the request was taken, e.g. that this model ignores
    # prompt weights or the negative prompt.
    notes: tuple[str, ...] = ()
    # Pipeline runs this job took: more than 1 when the worker running it was lost mid-job (a
    # Ray replica that died) and it ran again elsewhere, or an out-of-memory batch was split.
    attempts: int = 1


@dataclass(frozen=True)
class ModelInfo:
    name: str  # the catalogue name: what jobs record and users type (never a file path)
    family: str  # "sd1", "sd2", "sdxl", "sd3", "flux" (engine.families)
    native_side: int  # pixels per side the model was trained at
    identity: str  # Hub revision or file hash
    device: str
    dtype: str
    source: str = ""  # where the weights come from: Hub id, folder, file, or a tiny model
    size_bytes: int = 0  # the weights in memory, once loaded


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


class InvalidRequest(GenerationError):
    """The request cannot run as asked, whatever the load: an unknown model or LoRA, a sampler
    or operation this model's family does not have. Fix the command (the service's
    InvalidInput)."""


class UnknownModel(InvalidRequest):
    pass


class UnknownLora(InvalidRequest):
    pass


class NotAvailable(InvalidRequest):
    """A sampler, option or operation the model's family does not offer."""
