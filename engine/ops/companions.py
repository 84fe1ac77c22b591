"""What one loaded model runs besides its text-to-image and image-to-image pipelines: its
inpainting pipeline or dedicated checkpoint, its ControlNets, its IP-Adapter, its preview
decoder, and (shared by every model of the pool) the Subtle upscaler. Each is made or loaded on
first use.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from engine.catalogue import ExtraModels, ModelEntry
from engine.loading import LoadedModel
from engine.ops.control import ControlNets, sources_for
from engine.ops.inpaint import Inpainting
from engine.ops.ip_adapter import ImagePrompts
from engine.ops.upscale import SubtleUpscale
from engine.preview import Previews

if TYPE_CHECKING:
    from engine.pipelines import Runner


class Companions:
    def __init__(
        self,
        model: LoadedModel,
        *,
        extras: ExtraModels | None = None,
        entry: ModelEntry | None = None,
        data_dir: Path = Path("."),
        load_inpaint: Callable[[], Runner | None] | None = None,
        upscale: SubtleUpscale | None = None,
    ) -> None:
        """``entry``: the catalogue entry whose companions these are (its own choices win over
        ``extras``); ``load_inpaint`` loads its dedicated inpainting checkpoint, if any."""
        extras = extras or ExtraModels()
        entry = entry or ModelEntry(model.info.name, model.info.source, model.info.family)
        self.inpainting = Inpainting(model, load_inpaint)
        controlnets = {**sources_for(extras.controlnets), **sources_for(entry.controlnets)}
        self.controls = ControlNets(model, controlnets, data_dir)
        self.image_prompts = ImagePrompts(
            model, extras.ip_adapter_of(entry), extras.ip_adapter_encoder, data_dir
        )
        self.upscale = upscale or SubtleUpscale(extras, data_dir=data_dir)
        self.previews = Previews(
            model.family,
            extras.preview_decoder_of(entry, model.family),
            device=model.device,
            dtype=model.dtype,
            data_dir=data_dir,
        )
