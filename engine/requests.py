"""What goes into and comes out of the engine. No torch here, so the bot can import it cheaply."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from PIL import Image


class Operation(StrEnum):
    TXT2IMG = "txt2img"
    IMG2IMG = "img2img"
    UPSCALE = "upscale"  # resize ×2, then a low-strength image-to-image pass ("hires fix")
    # Repaint the white part of a mask and keep the rest exactly: Vary (Region), and Zoom Out,
    # Pan and Make Square on a canvas from engine.ops.outpaint.
    INPAINT = "inpaint"
    CONTROL = "control"  # text-to-image steered by a control map through a ControlNet
    # Upscale (Subtle): a super-resolution model, ×2 or ×4, no diffusion; UPSCALE is Creative.
    UPSCALE_SUBTLE = "upscale_subtle"

    @property
    def uses_model(self) -> bool:
        """Whether the operation runs the diffusion model (a Subtle upscale does not)."""
        return self is not Operation.UPSCALE_SUBTLE

    @property
    def starts_from_image(self) -> bool:
        """Whether the operation denoises a start image (``init_images`` and ``strength``)."""
        return self in (Operation.IMG2IMG, Operation.UPSCALE, Operation.INPAINT)


class ControlKind(StrEnum):
    """What a control map shows, and so which ControlNet follows it."""

    CANNY = "canny"
    DEPTH = "depth"
    LINEART = "lineart"
    SCRIBBLE = "scribble"
    POSE = "pose"


# LoRA weights users may give. 1 is the trained strength; negative weights invert "slider"
# LoRAs. ComfyUI allows ±100, but beyond a few the output is noise whatever the LoRA.
LORA_WEIGHT_MAX = 4.0
# A few-step job's variation or upscale runs at least this many denoising steps (or the job's own
# count, if smaller): one step at low strength barely changes a turbo model's image.
MIN_DENOISING_STEPS = 2
# ControlNet weight (--cw): the ControlNet extension for A1111 offers 0-2; 0 is no control.
CONTROL_WEIGHT_MAX = 2.0
# Image weight (--iw). The IP-Adapter scale is half of it: diffusers' IP-Adapter guide calls
# scale 0.5 "balanced between the text and image prompt" (Midjourney's default --iw 1) and 1.0
# "only conditioned on the image prompt", which is --iw 2 here.
IMAGE_WEIGHT_MAX = 2.0
IMAGE_PROMPTS_MAX = 5  # Midjourney's /blend takes 2 to 5 images
UPSCALE_FACTORS = (2, 4)
FEATHER_MAX = 256  # pixels of blended border around an inpainting mask
# Sizes are rounded to multiples of 8, so two sizes of one aspect ratio differ a little.
ASPECT_TOLERANCE = 0.05


def aspect_problem(what: str, size: tuple[int, int], width: int, height: int) -> str | None:
    """Why an image of ``size`` cannot steer a ``width``×``height`` picture (a different shape
    would stretch it), or None; sizes of one aspect ratio may differ by rounding."""
    have, want = size[0] / size[1], width / height
    if abs(have / want - 1) <= ASPECT_TOLERANCE:
        return None
    return (
        f"The {what} is {size[0]}×{size[1]} (aspect {have:.2f}), but the picture is "
        f"{width}×{height} ({want:.2f}); use an image of the same shape or set --ar to match it."
    )


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


def image_identity(image: Image.Image) -> str:
    """sha256 of an image's mode, size and pixels (not of a file encoding, which Pillow may
    change between versions): what a record needs to tell an input again."""
    digest = hashlib.sha256(f"{image.mode}:{image.width}x{image.height}:".encode())
    digest.update(image.tobytes())
    return "sha256:" + digest.hexdigest()[:16]


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
    # INPAINT: white = repaint, black = keep; one mask per start image or one shared, each the
    # picture's size. The engine repaints the mask grown by ``feather`` pixels and blends the
    # original back across that border; beyond it every pixel of the original is kept exactly.
    masks: tuple[Image.Image, ...] = ()
    feather: int | None = None  # None: engine.ops.masks.feather_radius(width, height)
    # CONTROL: a ready control map per seed or one shared (engine.control_maps makes them from
    # an upload, or the user uploads one), what it shows, and its weight (--cw; 0 = no control).
    control_images: tuple[Image.Image, ...] = ()
    control: str = ""
    control_weight: float = 1.0
    # Image prompts (IP-Adapter) for TXT2IMG and CONTROL, in order: /imagine with --iw, /blend.
    # Each image adds its own tokens, in this order; the weight is --iw (0 = no image prompt).
    image_prompts: tuple[Image.Image, ...] = ()
    image_weight: float = 1.0
    style_only: bool = False  # --sref: the adapter's style layer alone (InstantStyle; SDXL)

    @property
    def count(self) -> int:
        return len(self.seeds)

    def init_image(self, index: int) -> Image.Image:
        return self.init_images[index if len(self.init_images) > 1 else 0]

    def mask(self, index: int) -> Image.Image:
        return self.masks[index if len(self.masks) > 1 else 0]

    def control_image(self, index: int) -> Image.Image:
        return self.control_images[index if len(self.control_images) > 1 else 0]

    @property
    def upscale_factor(self) -> int:
        """UPSCALE_SUBTLE: how many times the start image's size the result is."""
        return self.width // self.init_images[0].width if self.init_images else 0

    def denoising_steps(self) -> int:
        """Steps the sampler actually runs: image-to-image skips the first (1 - strength). A
        Subtle upscale reports its tiles instead, counted as it runs; 1 until then."""
        if self.operation is Operation.UPSCALE_SUBTLE:
            return 1
        if not self.operation.starts_from_image:
            return self.steps
        return int(self.steps * (self.strength or 0.0))

    def problem(self) -> str | None:
        """Why this request cannot run, in words for users; None when it can."""
        if not self.seeds:
            return "No images requested."
        if self.operation is Operation.UPSCALE_SUBTLE:
            return self._subtle_upscale_problem()
        if self.width % 8 or self.height % 8 or self.width < 8 or self.height < 8:
            return f"Width and height must be multiples of 8, not {self.width}×{self.height}."
        if self.steps < 1:
            return "At least one step is needed."
        if self.operation.starts_from_image:
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
        problem = self._inpaint_problem() or self._control_problem() or self._image_prompt_problem()
        if problem is not None:
            return problem
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

    def _inpaint_problem(self) -> str | None:
        if self.operation is not Operation.INPAINT:
            return "Only an inpainting request takes a mask." if self.masks else None
        if not self.masks:
            return "Inpainting needs a mask (white where the picture should change)."
        if len(self.masks) not in (1, self.count):
            return "Give one mask, or one per seed."
        size = (self.width, self.height)
        for image in self.init_images:
            if image.size != size:
                return (
                    f"The image to edit is {image.width}×{image.height}, but the request is "
                    f"{self.width}×{self.height}; they must be the same size."
                )
        for mask in self.masks:
            if mask.size != size:
                return (
                    f"The mask is {mask.width}×{mask.height}; the picture is "
                    f"{self.width}×{self.height}."
                )
            if mask.mode not in ("L", "1"):
                return f"The mask must be a grayscale image (mode L), not mode {mask.mode}."
        if self.feather is not None and not 0 <= self.feather <= FEATHER_MAX:
            return f"The mask's feathering goes from 0 to {FEATHER_MAX} pixels, not {self.feather}."
        return None

    def _control_problem(self) -> str | None:
        if self.operation is not Operation.CONTROL:
            if self.control_images or self.control:
                return "Only a ControlNet request takes a control image."
            return None
        kinds = ", ".join(k.value for k in ControlKind)
        if self.control not in set(ControlKind):
            return f"Unknown control type {self.control!r}; choose one of {kinds}."
        if not self.control_images:
            return "ControlNet needs a control image."
        if len(self.control_images) not in (1, self.count):
            return "Give one control image, or one per seed."
        if not (
            math.isfinite(self.control_weight) and 0 <= self.control_weight <= CONTROL_WEIGHT_MAX
        ):
            return (
                f"The control weight (--cw) goes from 0 to {CONTROL_WEIGHT_MAX:g}, "
                f"not {self.control_weight:g}."
            )
        for image in self.control_images:
            problem = aspect_problem("control image", image.size, self.width, self.height)
            if problem is not None:
                return problem
        return None

    def _image_prompt_problem(self) -> str | None:
        if not self.image_prompts:
            return "--sref needs an image to take the style from." if self.style_only else None
        if self.operation not in (Operation.TXT2IMG, Operation.CONTROL):
            return "Image prompts go with a new picture (/imagine or /blend), not with an edit."
        if len(self.image_prompts) > IMAGE_PROMPTS_MAX:
            return (
                f"{len(self.image_prompts)} image prompts; at most {IMAGE_PROMPTS_MAX} can "
                "steer one picture."
            )
        if not (math.isfinite(self.image_weight) and 0 <= self.image_weight <= IMAGE_WEIGHT_MAX):
            return (
                f"The image weight (--iw) goes from 0 to {IMAGE_WEIGHT_MAX:g}, "
                f"not {self.image_weight:g}."
            )
        return None

    def _subtle_upscale_problem(self) -> str | None:
        if len(self.init_images) != 1:
            return "Upscale (Subtle) needs one image."
        if self.count != 1:
            return "Upscale (Subtle) makes one image; it does not use seeds."
        source = self.init_images[0]
        factor = self.upscale_factor
        if factor not in UPSCALE_FACTORS or (self.width, self.height) != (
            source.width * factor,
            source.height * factor,
        ):
            return (
                f"Upscale (Subtle) makes exactly ×2 or ×4 of the {source.width}×{source.height} "
                f"image, not {self.width}×{self.height}."
            )
        return None

    def batch_key(self) -> tuple[Any, ...]:
        """Requests with equal keys can share one pipeline call. Requests that share a call
        share its reproduction record, so their masks, control maps and image prompts must be
        the same images: the same objects (hashing large uploads here would hold up the event
        loop, and requests that share inputs share the objects: a grid's jobs, a retry)."""
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
            # Per call: which ControlNet, how strongly; the image prompts' strength and inputs.
            self.control,
            self.control_weight,
            self.image_weight,
            self.style_only,
            self.feather,
            tuple(map(id, self.masks)),
            tuple(map(id, self.control_images)),
            tuple(map(id, self.image_prompts)),
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


class QueueAtCapacity(EngineError):
    pass


class OwnerAtCapacity(EngineError):
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


class InvalidImage(InvalidRequest):
    """An image given with a request that cannot be used as it is: a mask of the wrong size or
    kind, an all-black mask, an unreadable or mismatched control image."""


class NothingFound(InvalidImage):
    """Segmentation found nothing matching the words (Vary Region by text)."""


def first_line(exc: BaseException, limit: int | None = 300) -> str:
    """An exception's first line (its type's name when it says nothing), at most ``limit``
    characters: what a one-line message about a failure quotes."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line[:limit] if limit is not None else line
