"""ControlNet: text-to-image steered by a control map. Engine thread only.

A model's ControlNets are loaded on first use, one per control kind (``EASEL_CONTROLNET_CANNY``
... or the catalogue's ``controlnets``), and each makes the family's ControlNet pipeline with
``AutoPipelineForText2Image.from_pipe(model, controlnet=...)``: the same U-Net, VAE and text
encoders as the model (no second copy), plus the ControlNet's own weights (about a third of an
SD 1.5 or SDXL U-Net: 361 M parameters for SD 1.5, 1.25 G for SDXL's full ControlNets).

Sources: a Hub id (``lllyasviel/control_v11p_sd15_canny``, ``diffusers/controlnet-canny-sdxl-
1.0``), a diffusers folder, a single ``.safetensors``/``.pth`` file (``ControlNetModel.
from_single_file``), or ``tiny`` (a random ControlNet for the tiny models).

The control weight is diffusers' ``controlnet_conditioning_scale``: the ControlNet's residuals
are multiplied by it, so 0 adds exact zeros and gives the picture no control would.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from diffusers import AutoPipelineForText2Image, ControlNetModel

from engine.catalogue import SINGLE_FILE_SUFFIXES, TINY_SOURCES
from engine.control_maps import prepare_control_image
from engine.loading import LoadedModel, ModelLoadError, batch_invariant, file_identity
from engine.ops.hub import hub_identity
from engine.requests import ControlKind, GenerationRequest, NotAvailable, first_line, image_identity

log = logging.getLogger(__name__)

SETTING = "EASEL_CONTROLNET_{}"


class ControlNets:
    """The ControlNets of one loaded model, by kind, each with its pipeline."""

    def __init__(self, model: LoadedModel, sources: dict[str, str], data_dir: Path) -> None:
        self.model = model
        self.sources = sources  # control kind → source
        self.data_dir = Path(data_dir)
        self._loaded: dict[str, tuple[Any, dict[str, Any]]] = {}

    def pipeline(self, kind: str) -> tuple[Any, dict[str, Any]]:
        """The ControlNet pipeline for ``kind`` and its record. Raises NotAvailable (none
        configured) or ModelLoadError."""
        if kind not in self._loaded:
            self._loaded[kind] = self._load(kind)
        return self._loaded[kind]

    def _load(self, kind: str) -> tuple[Any, dict[str, Any]]:
        source = self.sources.get(kind)
        info = self.model.info
        if not source:
            raise NotAvailable(
                f"No {kind} ControlNet is configured for model '{info.name}' (set "
                f"{SETTING.format(kind.upper())}, or controlnets in the model catalogue)."
            )
        controlnet, identity = _load_controlnet(source, self.model, self.data_dir)
        unet = self.model.txt2img.unet
        wants = (unet.config.cross_attention_dim, unet.config.addition_embed_type)
        has = (controlnet.config.cross_attention_dim, controlnet.config.addition_embed_type)
        if wants != has:
            raise ModelLoadError(
                f"The {kind} ControlNet {source} does not fit model '{info.name}': it was made "
                f"for another model family (text width {has[0]}, this model's is {wants[0]})."
            )
        controlnet.to(self.model.device).eval()  # loaded in the model's dtype
        batch_invariant(controlnet)
        pipe = AutoPipelineForText2Image.from_pipe(self.model.txt2img, controlnet=controlnet)
        pipe.set_progress_bar_config(disable=True)
        size = sum(p.numel() * p.element_size() for p in controlnet.parameters())
        self.model.size_bytes += size  # the pool's memory budget counts it with the model
        log.info("%s ControlNet %s loaded for %s (%.2f GB).", kind, source, info.name, size / 1e9)
        return pipe, {"controlnet": source, "controlnet_identity": identity}

    def kwargs(self, items: list[tuple[GenerationRequest, int, Any]]) -> dict[str, Any]:
        first = items[0][0]
        return {
            "image": [
                prepare_control_image(r.control_image(i), first.width, first.height)
                for r, i, _ in items
            ],
            "controlnet_conditioning_scale": first.control_weight,
            "width": first.width,
            "height": first.height,
        }


def record(request: GenerationRequest) -> dict[str, Any]:
    return {
        "control": request.control,
        "control_weight": request.control_weight,
        "control_images": [image_identity(i) for i in request.control_images],
    }


def _load_controlnet(source: str, model: LoadedModel, data_dir: Path) -> tuple[Any, str]:
    """A ControlNetModel from ``source`` and its identity. Raises ModelLoadError."""
    kwargs = {"torch_dtype": model.dtype}
    path = Path(source).expanduser()
    try:
        if source == "tiny":
            from engine.tiny_extras import build_tiny_controlnet

            base = model.info.source
            if base not in TINY_SOURCES or TINY_SOURCES[base] not in ("sd1", "sdxl"):
                raise ModelLoadError(
                    f"The tiny ControlNet fits the tiny U-Net models only, not '{model.info.name}'."
                )
            folder = build_tiny_controlnet(data_dir / "models", data_dir=data_dir, model=base)
            files = [p for p in folder.iterdir() if p.is_file()]
            return ControlNetModel.from_pretrained(folder, **kwargs), file_identity(files, data_dir)
        if path.is_file() and path.suffix in (*SINGLE_FILE_SUFFIXES, ".pth"):
            controlnet = ControlNetModel.from_single_file(str(path), **kwargs)
            return controlnet, file_identity([path], data_dir)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return ControlNetModel.from_pretrained(path, **kwargs), file_identity(files, data_dir)
        if source.startswith(("/", "./", "../", "~")):
            raise ModelLoadError(f"ControlNet {source}: no such file or folder.")
        controlnet = ControlNetModel.from_pretrained(source, **kwargs)  # the Hub, cached
        return controlnet, hub_identity(source, "config.json")
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers and the hub raise many kinds; the user needs one line
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        first = first_line(exc)
        raise ModelLoadError(f"Could not load the ControlNet {source}{offline}: {first}") from exc


def sources_for(controlnets: tuple[tuple[str, str], ...]) -> dict[str, str]:
    """(kind, source) pairs as a mapping, the kinds checked."""
    kinds = {k.value for k in ControlKind}
    return {kind: source for kind, source in controlnets if kind in kinds}
