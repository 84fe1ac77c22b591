"""What every operation's runner shares with the engine thread that calls it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from engine.weighting import Encoded

# Called after each step: (step, total, latents of the batch); latents None when the operation
# has none (a Subtle upscale reports tiles). May raise StepAborted.
StepCallback = Callable[[int, int, torch.Tensor], None]


class StepAborted(Exception):
    """Raised from the step callback to stop a pipeline call at a step boundary."""


@dataclass
class RunOutput:
    """What a runner's ``run`` returns: each request's images, embeddings (with their notes and
    what the encoder dropped), the adapters' notes, and the batch's reproduction record."""

    images: list[list[Image.Image]]
    repro: dict[str, Any]
    encoded: list[Encoded] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
