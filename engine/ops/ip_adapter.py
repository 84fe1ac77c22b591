"""Image prompts through an IP-Adapter (diffusers' ``load_ip_adapter``). Engine thread only.

The adapter's weights and its CLIP image encoder are read on first use (``EASEL_IP_ADAPTER``,
``EASEL_IP_ADAPTER_ENCODER``, or the catalogue's ``ip_adapter``) and kept in memory; the
adapter is switched onto the U-Net's attention for a batch with image prompts and off again
for the next batch without (diffusers' ``unload_ip_adapter`` restores the plain attention
processors), so a job without image prompts is the job it would have been had no adapter ever
been loaded.

Several images (/blend): each image is encoded alone and given its own image tokens, in the
order given; the U-Net's added cross-attention attends to all of them at once (ComfyUI's
IPAdapter calls this "concat", its default). Attention does not care where a token sits, so
swapping two images changes the picture no more than rounding does; the order is still
recorded, as a remake needs the same tokens in the same order to be byte-identical.

The image weight (--iw) sets diffusers' ``set_ip_adapter_scale`` to half of it (see
:data:`engine.requests.IMAGE_WEIGHT_MAX`); 0 skips the adapter's attention altogether. --sref
(style only) is InstantStyle: the adapter acts in SDXL's style layer (up_blocks.0.attentions.1)
alone, as diffusers' ``set_ip_adapter_scale`` documents.

Sources: a weights file inside a Hub repository (``h94/IP-Adapter/models/ip-adapter_sd15.
safetensors``: repository, then the path in it), a local ``.safetensors``/``.bin`` file, or
``tiny``. The image encoder is the folder ``image_encoder`` beside the weights unless given.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers.models.embeddings import ImageProjection
from PIL import Image

from engine.catalogue import TINY_SOURCES
from engine.loading import LoadedModel, ModelLoadError, batch_invariant, file_identity
from engine.ops.hub import hub_file, is_hub_file
from engine.requests import GenerationRequest, NotAvailable, first_line, image_identity

log = logging.getLogger(__name__)

WEIGHT_TO_SCALE = 0.5  # --iw 1 is IP-Adapter scale 0.5, "balanced" (diffusers' guide)
STYLE_BLOCK, STYLE_LAYER = "block_0", 1  # InstantStyle: SDXL's up_blocks.0.attentions.1
ENCODER_FOLDER = "image_encoder"
_ON_UNET = "_easel_ip_adapter"  # the U-Net's attribute naming the adapter switched on


class ImagePrompts:
    """One loaded model's IP-Adapter: loaded on first use, switched on per batch."""

    def __init__(
        self, model: LoadedModel, source: str | None, encoder: str | None, data_dir: Path
    ) -> None:
        self.model = model
        self.source = source
        self.encoder_source = encoder
        self.data_dir = Path(data_dir)
        self._state: dict[str, Any] | None = None  # the adapter's weights, kept in memory
        self._encoder: Any = None
        self._processor: Any = None
        self._record: dict[str, Any] = {}

    # -- switching ---------------------------------------------------------------------------

    def load(self) -> None:
        """Load the adapter now (the engine does, under its load lock) unless it is loaded."""
        if self._state is None:
            self._load()

    def activate(self, request: GenerationRequest) -> dict[str, Any]:
        """Switch the adapter on at this request's weight; return its record."""
        self.load()
        pipe = self.model.txt2img
        if getattr(pipe.unet, _ON_UNET, None) is not self._state:
            self.deactivate()  # another runner's adapter on the same weights (tests share them)
            with _quiet():
                _switch_on(pipe, self._encoder, self._state)
            batch_invariant(pipe.unet)  # its new image projection sees (images, width) rows
            setattr(pipe.unet, _ON_UNET, self._state)
        scale = request.image_weight * WEIGHT_TO_SCALE
        if request.style_only:
            layers = [0.0] * len(pipe.unet.up_blocks[0].attentions)
            layers[STYLE_LAYER] = scale
            pipe.set_ip_adapter_scale({"up": {STYLE_BLOCK: layers}})
        else:
            pipe.set_ip_adapter_scale(scale)
        return {
            **self._record,
            "image_prompts": [image_identity(i) for i in request.image_prompts],
            "image_weight": request.image_weight,
            "ip_adapter_scale": scale,
            "style_only": request.style_only,
        }

    def deactivate(self) -> None:
        """Back to the plain U-Net (nothing to do if no adapter is on). The U-Net itself says
        whether one is, so any runner over the same weights switches it off."""
        pipe = self.model.txt2img
        unet = getattr(pipe, "unet", None)  # SD3 and FLUX have none, and no adapter
        if unet is not None and getattr(unet, _ON_UNET, None) is not None:
            with _quiet():
                pipe.unload_ip_adapter()
            setattr(unet, _ON_UNET, None)

    # -- embeddings --------------------------------------------------------------------------

    def embeds(self, items: list[tuple[GenerationRequest, int, Any]], cfg: bool) -> torch.Tensor:
        """``ip_adapter_image_embeds`` for a call over ``items``: per row, its request's images
        (rows, images, ...), the unconditional rows first when the call runs classifier-free
        guidance (as diffusers' ``prepare_ip_adapter_image_embeds`` expects them)."""
        unet = self.model.txt2img.unet
        hidden = not isinstance(unet.encoder_hid_proj.image_projection_layers[0], ImageProjection)
        per_request: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        rows, negatives = [], []
        for request, _, _ in items:
            key = id(request)
            if key not in per_request:
                encoded = [self._encode(image, hidden) for image in request.image_prompts]
                per_request[key] = (
                    torch.stack([e for e, _ in encoded], dim=1),
                    torch.stack([n for _, n in encoded], dim=1),
                )
            positive, negative = per_request[key]
            rows.append(positive)
            negatives.append(negative)
        embeds = torch.cat(rows)
        return torch.cat([torch.cat(negatives), embeds]) if cfg else embeds

    def _encode(self, image: Image.Image, hidden: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embedding and its unconditional counterpart, as diffusers'
        ``encode_image`` makes them (one image at a time, so no batch changes a bit)."""
        encoder = self._encoder
        pixels = self._processor(images=image.convert("RGB"), return_tensors="pt").pixel_values
        pixels = pixels.to(encoder.device, encoder.dtype)
        with torch.inference_mode():
            if hidden:  # IP-Adapter Plus: the encoder's penultimate hidden states
                embed = encoder(pixels, output_hidden_states=True).hidden_states[-2]
                blank = encoder(torch.zeros_like(pixels), output_hidden_states=True)
                return embed, blank.hidden_states[-2]
            embed = encoder(pixels).image_embeds
            return embed, torch.zeros_like(embed)

    # -- loading -----------------------------------------------------------------------------

    def _load(self) -> None:
        info = self.model.info
        if not self.source:
            raise NotAvailable(
                f"Image prompts need an IP-Adapter, and none is configured for model "
                f"'{info.name}' (set EASEL_IP_ADAPTER, or ip_adapter in the model catalogue)."
            )
        weights, encoder_source, identity = self._locate()
        try:
            self._state = _read_state(weights)
            from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

            encoder = CLIPVisionModelWithProjection.from_pretrained(
                encoder_source, dtype=self.model.dtype
            )
            size = encoder.config.image_size
            # What diffusers' load_ip_adapter makes when the pipeline has none.
            self._processor = CLIPImageProcessor(size=size, crop_size=size)
        except Exception as exc:
            offline = " (offline)" if os.environ.get("HF_HUB_OFFLINE") else ""
            first = first_line(exc)
            raise ModelLoadError(
                f"Could not load the IP-Adapter {self.source}{offline}: {first}"
            ) from exc
        self._encoder = encoder.to(self.model.device).eval()
        pipe = self.model.txt2img
        try:  # into the U-Net and out again: a file of another family fails now, not mid-job
            with _quiet():
                _switch_on(pipe, self._encoder, self._state)
                pipe.unload_ip_adapter()
        except Exception as exc:
            self._state = None
            with contextlib.suppress(Exception):  # put the plain attention back
                pipe.unload_ip_adapter()
            first = first_line(exc)
            raise ModelLoadError(
                f"The IP-Adapter {self.source} does not fit model '{info.name}' ({first})."
            ) from exc
        tensors = [*self._encoder.parameters()]
        tensors += [t for part in self._state.values() for t in part.values()]
        size_bytes = sum(t.numel() * t.element_size() for t in tensors)
        self.model.size_bytes += size_bytes
        self._record = {"ip_adapter": self.source, "ip_adapter_identity": identity}
        log.info("IP-Adapter %s loaded for %s (%.2f GB).", self.source, info.name, size_bytes / 1e9)

    def _locate(self) -> tuple[Path | str, str, str]:
        """The weights file, the image encoder's source, and the weights' identity."""
        source = str(self.source)
        if source == "tiny":
            from engine.tiny_extras import (
                IP_ADAPTER_SUBFOLDER,
                IP_ADAPTER_WEIGHT_NAME,
                build_tiny_ip_adapter,
            )

            base = self.model.info.source
            if base not in TINY_SOURCES or TINY_SOURCES[base] not in ("sd1", "sdxl"):
                raise ModelLoadError(
                    f"The tiny IP-Adapter fits the tiny U-Net models only, not "
                    f"'{self.model.info.name}'."
                )
            folder = build_tiny_ip_adapter(
                self.data_dir / "models", data_dir=self.data_dir, model=base
            )
            weights = folder / IP_ADAPTER_SUBFOLDER / IP_ADAPTER_WEIGHT_NAME
            encoder = self.encoder_source or str(weights.parent / ENCODER_FOLDER)
            return weights, encoder, file_identity([weights], self.data_dir)
        path = Path(source).expanduser()
        if path.is_file():
            encoder = self.encoder_source or str(path.parent / ENCODER_FOLDER)
            return path, encoder, file_identity([path], self.data_dir)
        if not is_hub_file(source):
            raise ModelLoadError(
                f"IP-Adapter {source}: no such file; give a weights file, e.g. "
                "h94/IP-Adapter/models/ip-adapter_sd15.safetensors or a local path."
            )
        weights, identity = hub_file(source, "the IP-Adapter")
        encoder = self.encoder_source
        if encoder is None:
            # The repository's encoder folder beside the weights (h94: models/image_encoder).
            from huggingface_hub import snapshot_download

            repo, inner = "/".join(source.split("/")[:2]), source.split("/", 2)[2]
            folder = f"{Path(inner).parent / ENCODER_FOLDER}"
            patterns = [f"{folder}/*.json", f"{folder}/*.safetensors"]
            snapshot = Path(snapshot_download(repo, allow_patterns=patterns))
            if not list((snapshot / folder).glob("*.safetensors")):  # older repositories
                snapshot = Path(snapshot_download(repo, allow_patterns=[f"{folder}/*"]))
            encoder = str(snapshot / folder)
        return weights, encoder, identity


def _switch_on(pipe: Any, encoder: Any, state: dict[str, Any]) -> None:
    # The encoder is registered first, so that diffusers does not go looking for one.
    pipe.register_modules(image_encoder=encoder)
    pipe.load_ip_adapter(state, subfolder="", weight_name="", image_encoder_folder=None)


@contextmanager
def _quiet() -> Iterator[None]:
    """diffusers warns on every switch that no module must stay float32 (an empty list)."""
    level = diffusers.utils.logging.get_verbosity()
    diffusers.utils.logging.set_verbosity_error()
    try:
        yield
    finally:
        diffusers.utils.logging.set_verbosity(level)


def _read_state(path: Path | str) -> dict[str, dict[str, torch.Tensor]]:
    """An IP-Adapter file as diffusers' loader splits it: ``image_proj`` and ``ip_adapter``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: dict[str, dict[str, torch.Tensor]] = {"image_proj": {}, "ip_adapter": {}}
        for key, tensor in load_file(str(path)).items():
            part, _, rest = key.partition(".")
            if part in state:
                state[part][rest] = tensor
        return state
    return torch.load(path, map_location="cpu", weights_only=True)
