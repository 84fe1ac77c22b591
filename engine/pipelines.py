"""One pipeline call for a batch of compatible requests. Runs on the engine thread only.

Each image gets its own CPU ``torch.Generator`` seeded from its request, its prompt embedded on
its own (cached), and — with the measures in :mod:`engine.loading` — the same bits whether it runs
alone or batched with others.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import diffusers
import torch
from PIL import Image

from engine.loading import LoadedModel
from engine.requests import GenerationRequest, Operation
from engine.samplers import make_scheduler

EMBED_CACHE_SIZE = 64

StepCallback = Callable[[int, int, torch.Tensor], None]


class StepAborted(Exception):
    """Raised from the step callback to stop a pipeline call at a step boundary."""


def _json_safe(config: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dict(config), default=str))


@contextmanager
def _circular_padding(model: LoadedModel, enabled: bool) -> Iterator[None]:
    """Seamless tiling: convolutions wrap around the edges instead of padding with zeros."""
    if not enabled:
        yield
        return
    convs = [
        m
        for part in (model.txt2img.unet, model.txt2img.vae)
        for m in part.modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    before = [m.padding_mode for m in convs]
    for m in convs:
        m.padding_mode = "circular"
    try:
        yield
    finally:
        for m, mode in zip(convs, before, strict=True):
            m.padding_mode = mode


@contextmanager
def _vae_tiling(model: LoadedModel, enabled: bool) -> Iterator[None]:
    """Above the native size, decode in tiles so memory stays flat."""
    if not enabled:
        yield
        return
    model.txt2img.vae.enable_tiling()
    try:
        yield
    finally:
        model.txt2img.vae.disable_tiling()


class Runner:
    def __init__(self, model: LoadedModel) -> None:
        self.model = model
        self._embeddings: OrderedDict[tuple[str, str, bool], tuple[Any, ...]] = OrderedDict()

    def _embed(self, prompt: str, negative: str, cfg: bool) -> tuple[Any, ...]:
        key = (prompt, negative, cfg)
        cached = self._embeddings.get(key)
        if cached is not None:
            self._embeddings.move_to_end(key)
            return cached
        pipe = self.model.txt2img
        with torch.inference_mode():
            out = pipe.encode_prompt(
                prompt=prompt,
                device=self.model.device,
                num_images_per_prompt=1,
                do_classifier_free_guidance=cfg,
                negative_prompt=negative or None,
            )
        self._embeddings[key] = tuple(out)
        if len(self._embeddings) > EMBED_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return self._embeddings[key]

    def run(
        self, requests: list[GenerationRequest], on_step: StepCallback
    ) -> tuple[list[list[Image.Image]], dict[str, Any]]:
        """Run compatible ``requests`` as one call; return each request's images and the
        reproduction record."""
        first = requests[0]
        model = self.model
        cfg = first.guidance > 1.0  # diffusers skips the unconditional pass at guidance <= 1
        items = [(r, i) for r in requests for i in range(r.count)]
        # A batch of one would run the convolutions with batch size 1, which picks different
        # CPU kernels than any larger batch: pad with a copy so results never depend on it.
        padded = len(items) == 1 and not cfg
        if padded:
            items = items * 2

        embeds = [self._embed(r.prompt, r.negative, cfg) for r, _ in items]
        kwargs: dict[str, Any] = {
            "prompt_embeds": torch.cat([e[0] for e in embeds]),
            "num_inference_steps": first.steps,
            "guidance_scale": first.guidance,
            "generator": [torch.Generator("cpu").manual_seed(r.seeds[i]) for r, i in items],
            "output_type": "pil",
        }
        if cfg:
            kwargs["negative_prompt_embeds"] = torch.cat([e[1] for e in embeds])
        if model.family == "sdxl":
            kwargs["pooled_prompt_embeds"] = torch.cat([e[2] for e in embeds])
            if cfg:
                kwargs["negative_pooled_prompt_embeds"] = torch.cat([e[3] for e in embeds])

        if first.operation is Operation.TXT2IMG:
            pipe = model.txt2img
            kwargs.update(width=first.width, height=first.height)
        else:
            pipe = model.img2img
            size = (first.width, first.height)
            kwargs["image"] = [_prepare(r.init_image(i), size) for r, i in items]
            kwargs["strength"] = first.strength

        scheduler = make_scheduler(first.sampler, model.scheduler_config)
        pipe.scheduler = scheduler

        def callback(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = getattr(p, "num_timesteps", None) or first.steps
            on_step(step + 1, int(total), tensors["latents"])
            return tensors

        kwargs["callback_on_step_end"] = callback
        native = model.info.native_side
        big = first.width * first.height > native * native * 1.5
        with (
            torch.inference_mode(),
            _circular_padding(model, first.tile),
            _vae_tiling(model, big and first.operation is Operation.UPSCALE),
        ):
            images = pipe(**kwargs).images
        if padded:
            images = images[:1]

        out: list[list[Image.Image]] = []
        offset = 0
        for r in requests:
            out.append(list(images[offset : offset + r.count]))
            offset += r.count
        repro = {
            "model": model.info.name,
            "model_identity": model.info.identity,
            "family": model.family,
            "scheduler": type(scheduler).__name__,
            "scheduler_config": _json_safe(scheduler.config),
            "dtype": model.info.dtype,
            "device": model.info.device,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "vae_tiling": bool(big and first.operation is Operation.UPSCALE),
        }
        return out, repro


def _prepare(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image
