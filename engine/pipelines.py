"""One pipeline call for a batch of compatible requests. Runs on the engine thread only.

Each image gets its own CPU ``torch.Generator`` seeded from its request, its prompt embedded on
its own (cached), and — with the measures in :mod:`engine.loading` — the same bits whether it runs
alone or batched with others, in every family (on a CPU; GPUs promise run-to-run determinism).

Every operation shares this path: text-to-image, image-to-image and Creative upscale here;
inpainting, ControlNet and image prompts add their pipeline and arguments from
:mod:`engine.ops` (all over the model's own modules); a Subtle upscale runs no diffusion and
goes to its upscaler.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import diffusers
import torch
from PIL import Image

from engine.adapters import Adapters
from engine.catalogue import AdapterFolder
from engine.loading import LoadedModel
from engine.ops import control, inpaint
from engine.ops.base import RunOutput, StepAborted, StepCallback
from engine.ops.companions import Companions
from engine.requests import GenerationRequest, NotAvailable, Operation
from engine.samplers import make_scheduler
from engine.weighting import CompelEncoder, Encoded, PipelineEncoder, make_encoder

__all__ = ["Prepared", "RunOutput", "Runner", "StepAborted", "StepCallback"]

EMBED_CACHE_SIZE = 64
Item = tuple[GenerationRequest, int, Encoded]  # a request, which of its images, its prompt


@dataclass
class Prepared:
    """A batch ready to run: request indices grouped by the shape of their embeddings (one
    pipeline call per group), each request's embeddings, and what the adapters recorded."""

    groups: list[list[int]]
    encoded: list[Encoded]
    loras: list[list[Any]]
    embeddings: list[list[str]]
    notes: list[str]


@dataclass
class Call:
    """One operation's part of a pipeline call: the pipeline, its own arguments, what the
    result records, and what to do with the images afterwards (inpainting's paste-back)."""

    pipe: Any
    kwargs: dict[str, Any]
    repro: dict[str, Any]
    finish: Callable[[list[Image.Image]], list[Image.Image]] | None = None


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
        for part in (model.denoiser, model.txt2img.vae)
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
    def __init__(
        self,
        model: LoadedModel,
        adapters: Adapters | None = None,
        companions: Companions | None = None,
    ) -> None:
        """``companions``: the model's inpainting, ControlNets and IP-Adapter (none configured
        when not given: inpainting shares the weights, the others say what to set)."""
        self.model = model
        self.adapters = adapters or Adapters(
            model, AdapterFolder(None, "lora"), AdapterFolder(None, "embedding")
        )
        self.companions = companions or Companions(model)
        self._encoder: CompelEncoder | PipelineEncoder | None = None
        self._embeddings: OrderedDict[tuple[Any, ...], Encoded] = OrderedDict()

    def _encode(self, request: GenerationRequest, cfg: bool, adapters_key: Any) -> Encoded:
        # LoRAs may change the text encoders, and embeddings the tokens: both are in the key.
        key = (request.prompt, request.negative, cfg, adapters_key)
        cached = self._embeddings.get(key)
        if cached is not None:
            self._embeddings.move_to_end(key)
            return cached
        if self._encoder is None:
            self._encoder = make_encoder(self.model)
        with torch.inference_mode():
            encoded = self._encoder.encode(request.prompt, request.negative, cfg)
        self._embeddings[key] = encoded
        if len(self._embeddings) > EMBED_CACHE_SIZE:
            self._embeddings.popitem(last=False)
        return encoded

    def prepare(self, requests: list[GenerationRequest]) -> Prepared:
        """Check the requests against the model's family; switch on the batch's LoRAs (its
        requests share one set) and load the embeddings its prompts use; encode each prompt.
        Raises NotAvailable / UnknownLora."""
        first = requests[0]
        if not first.operation.uses_model:  # a Subtle upscale: no prompt, one call
            nothing = [Encoded({}) for _ in requests]
            return Prepared([list(range(len(requests)))], nothing, [], [], [])
        if first.operation is Operation.INPAINT:
            dedicated = self.companions.inpainting.dedicated()
            if dedicated is not None:
                return dedicated.prepare(requests)
        family = self.model.family_info
        for request in requests:
            problem = family.request_problem(
                self.model.info.name,
                sampler=request.sampler,
                width=request.width,
                height=request.height,
                tile=request.tile,
            ) or family.operation_problem(
                self.model.info.name,
                request.operation.value,
                image_prompts=bool(request.image_prompts),
                style_only=request.style_only,
            )
            if problem is not None:
                raise NotAvailable(problem)
        # Companion weights load here, under the worker's load lock, never mid-run.
        if first.control:
            self.companions.controls.pipeline(first.control)
        if first.image_prompts:
            self.companions.image_prompts.load()
        self.companions.previews.load()
        loras = self.adapters.apply(requests[0].loras)
        texts = [t for r in requests for t in (r.prompt, r.negative)]
        embeddings, notes = self.adapters.embeddings_in(texts)
        adapters_key = (requests[0].loras, tuple(t for t, _ in embeddings))
        cfg = _cfg(requests[0], self.model)
        encoded = [self._encode(r, cfg, adapters_key) for r in requests]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for i, e in enumerate(encoded):
            groups.setdefault(e.shape_key(), []).append(i)
        return Prepared(list(groups.values()), encoded, loras, embeddings, notes)

    def run(self, requests: list[GenerationRequest], on_step: StepCallback) -> RunOutput:
        """Run compatible ``requests`` as one call; return each request's images and the
        reproduction record. Their embeddings must have one shape (one group of
        :meth:`prepare`)."""
        first = requests[0]
        if not first.operation.uses_model:
            output = self.companions.upscale.run(requests, on_step)
            output.repro["operation"] = first.operation.value
            return output
        if first.operation is Operation.INPAINT:
            dedicated = self.companions.inpainting.dedicated()
            if dedicated is not None:
                output = dedicated.run(requests, on_step)
                info = dedicated.model.info
                output.repro.update(
                    inpaint_model=info.source,
                    inpaint_model_identity=info.identity,
                    model=self.model.info.name,
                    model_identity=self.model.info.identity,
                    model_source=self.model.info.source,
                )
                return output
        model = self.model
        cfg = _cfg(first, model)
        prepared = self.prepare(requests)
        if len(prepared.groups) > 1:
            raise ValueError("requests whose embeddings differ in length cannot share a call")
        items = [
            (r, i, e)
            for r, e in zip(requests, prepared.encoded, strict=True)
            for i in range(r.count)
        ]
        # A batch of one would run the convolutions with batch size 1, which picks different
        # CPU kernels than any larger batch: pad with a copy so results never depend on it.
        # Not on a GPU, where it would double a turbo model's single image for nothing: GPU
        # kernels may differ by batch size anyway (benchmarks/gpu_bench.py measures whether a
        # batched image equals its lone one there).
        padded = len(items) == 1 and not cfg and model.device.type == "cpu"
        if padded:
            items = items * 2

        kwargs: dict[str, Any] = {
            name: torch.cat([e.tensors[name] for _, _, e in items]) for name in items[0][2].tensors
        }
        kwargs.update(
            num_inference_steps=first.steps,
            # For FLUX, guidance is an input of the guidance-distilled model (dev), not
            # classifier-free guidance; schnell ignores it.
            guidance_scale=first.guidance,
            generator=[torch.Generator("cpu").manual_seed(r.seeds[i]) for r, i, _ in items],
            output_type="pil",
        )
        call = self._operation(first, items)
        kwargs.update(call.kwargs)
        pipe = call.pipe
        if first.image_prompts:
            call.repro.update(self.companions.image_prompts.activate(first))
            kwargs["ip_adapter_image_embeds"] = [self.companions.image_prompts.embeds(items, cfg)]
        else:
            self.companions.image_prompts.deactivate()

        scheduler = make_scheduler(first.sampler, model.scheduler_config, model.family)
        pipe.scheduler = scheduler

        def callback(p: Any, step: int, timestep: Any, tensors: dict[str, Any]) -> dict[str, Any]:
            total = getattr(p, "num_timesteps", None) or first.steps
            latents = tensors["latents"]
            if model.family == "flux":  # packed 2×2 patches: back to (channels, h, w)
                latents = p._unpack_latents(latents, first.height, first.width, p.vae_scale_factor)
            on_step(step + 1, int(total), latents)
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
        if call.finish is not None:
            images = call.finish(images)
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
            "model_source": model.info.source,
            "family": model.family,
            "loras": prepared.loras,
            "embeddings": prepared.embeddings,
            "scheduler": type(scheduler).__name__,
            "scheduler_config": _json_safe(scheduler.config),
            "dtype": model.info.dtype,
            "device": model.info.device,
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "vae_tiling": bool(big and first.operation is Operation.UPSCALE),
            "operation": first.operation.value,
            **call.repro,
        }
        return RunOutput(out, repro, prepared.encoded, prepared.notes)

    def _operation(self, first: GenerationRequest, items: list[Item]) -> Call:
        """The pipeline and the arguments of ``first``'s operation (the batch shares it)."""
        model = self.model
        size = {"width": first.width, "height": first.height}
        operation = first.operation
        if operation is Operation.TXT2IMG:
            return Call(model.txt2img, size, {})
        if operation is Operation.CONTROL:
            pipe, record = self.companions.controls.pipeline(first.control)
            kwargs = self.companions.controls.kwargs(items)
            return Call(pipe, kwargs, {**record, **control.record(first)})
        if operation is Operation.INPAINT:
            inpainting = self.companions.inpainting
            kwargs, plans = inpainting.kwargs(items)
            return Call(
                inpainting.pipeline(),
                kwargs,
                inpaint.record(first, inpainting.pipeline_name()),
                lambda images: inpaint.finish(images, plans),
            )
        kwargs = {
            "image": [_prepare(r.init_image(i), (first.width, first.height)) for r, i, _ in items],
            "strength": first.strength,
        }
        if model.family in ("sd3", "flux"):
            # SD3's and FLUX's image-to-image pipelines do not take the size from the image.
            kwargs.update(size)
        return Call(model.img2img, kwargs, {"strength": first.strength})


def _cfg(request: GenerationRequest, model: LoadedModel) -> bool:
    """Whether the call runs classifier-free guidance, doubling its batch: diffusers skips the
    unconditional pass at guidance <= 1, and FLUX's guidance is no CFG at all."""
    return request.guidance > 1.0 and model.family_info.negative


def _prepare(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    image = image.convert("RGB")
    if image.size != size:
        image = image.resize(size, Image.Resampling.LANCZOS)
    return image
