"""The catalogue's models on one device: loaded on demand, the most recently used kept within a
memory budget (``EASEL_MODEL_MEMORY``), the least recently used idle ones unloaded to make
room.

:meth:`ModelPool.acquire` loads and runs on the engine thread only (one batch at a time, so
every other model is idle while it loads). The listing methods are cheap and safe anywhere,
the event loop included: they never load weights.

Each loaded model carries its companions (engine.ops.companions: inpainting, ControlNets, an
IP-Adapter, loaded on first use from the catalogue entry or the pool's :class:`ExtraModels`),
counted in its size; the Subtle upscaler is one for the pool.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from engine.adapters import Adapters, unknown_lora
from engine.catalogue import (
    AdapterEntry,
    AdapterFolder,
    Catalogue,
    ExtraModels,
    ModelEntry,
    detect_family,
)
from engine.families import FAMILIES
from engine.loading import LoadedModel, ModelLoadError, is_out_of_memory, load_entry
from engine.ops.companions import Companions
from engine.ops.upscale import SubtleUpscale, pixel_problem
from engine.pipelines import Runner
from engine.requests import (
    GenerationRequest,
    InvalidRequest,
    ModelInfo,
    NotAvailable,
    UnknownModel,
)

log = logging.getLogger(__name__)

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt")


@dataclass(eq=False)
class _Slot:
    model: LoadedModel
    runner: Runner
    last_used: float
    pinned: bool = False


def _weights_key(entry: ModelEntry) -> tuple[str, str | None, str | None]:
    return (entry.source, entry.config, entry.dtype)


def _bytes_on_disk(source: str) -> int:
    """A model's weight files' size: what loading it will take, before it is loaded (a guess
    that errs high for float32 files loaded in half precision)."""
    path = Path(source).expanduser()
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.suffix in _WEIGHT_SUFFIXES and p.is_file()]
            # A folder may hold each component twice (.bin and .safetensors): count one.
            by_stem: dict[tuple[Path, str], int] = {}
            for p in files:
                key = (p.parent, p.stem.split(".")[0])
                by_stem[key] = max(by_stem.get(key, 0), p.stat().st_size)
            return sum(by_stem.values())
    except OSError:
        pass
    return 0


class ModelPool:
    def __init__(
        self,
        catalogue: Catalogue,
        *,
        data_dir: Path,
        device: str = "auto",
        dtype: str = "auto",
        memory_budget: int | None = None,
        compile_unet: bool = False,
        cpu_threads: int = 0,
        lora_dir: Path | None = None,
        embeddings_dir: Path | None = None,
        extras: ExtraModels | None = None,
    ) -> None:
        """``memory_budget``: bytes of model weights to keep loaded (GPU or CPU, wherever the
        models run); None or 0 keeps every model that was loaded. ``extras``: the companion
        models from the settings (none when not given)."""
        self.catalogue = catalogue
        self.extras = extras or ExtraModels()
        self.data_dir = Path(data_dir)
        self.device = device
        self.dtype = dtype
        self.memory_budget = memory_budget or None
        self.compile_unet = compile_unet
        self.cpu_threads = cpu_threads
        self.loras = AdapterFolder(lora_dir, "lora")
        self.embeddings = AdapterFolder(embeddings_dir, "embedding")
        self._slots: dict[tuple[str, str | None, str | None], _Slot] = {}
        self._sizes: dict[tuple[str, str | None, str | None], int] = {}  # measured on load
        self._lock = threading.Lock()  # the slots, for readers on other threads
        self.loads = 0  # weights loaded from disk (or the Hub), for health and benchmarks
        self.evictions = 0
        self.upscale = SubtleUpscale(self.extras, data_dir=self.data_dir, device=device)
        for entry in catalogue:
            for lora, _ in entry.loras:
                if lora_dir is not None and self.loras.find(lora) is None:
                    raise ModelLoadError(
                        f"Model '{entry.name}' uses LoRA '{lora}', which is not in {lora_dir}."
                    )

    @classmethod
    def of(
        cls,
        model: LoadedModel,
        *,
        data_dir: Path | None = None,
        extras: ExtraModels | None = None,
    ) -> ModelPool:
        """A catalogue of one model, already loaded and never unloaded."""
        entry = ModelEntry(
            name=model.info.name,
            source=model.info.source or model.info.name,
            family=model.info.family,
            native_size=model.info.native_side,
        )
        pool = cls(Catalogue([entry], entry.name), data_dir=data_dir or Path("."), extras=extras)
        pool._slots[_weights_key(entry)] = _Slot(
            model, pool._runner(model, entry), time.monotonic(), pinned=True
        )
        pool._sizes[_weights_key(entry)] = model.size_bytes
        return pool

    # -- cheap, anywhere -------------------------------------------------------------------

    def entry(self, name: str) -> ModelEntry:
        """The catalogue entry ``name`` ("" is the default). Raises UnknownModel."""
        entry = self.catalogue.find(name)
        if entry is None:
            names = ", ".join(self.catalogue.names())
            raise UnknownModel(f"There is no model called '{name}'. Models: {names}.")
        return entry

    def info(self, name: str = "") -> ModelInfo:
        """The model's ModelInfo: its loaded weights' (identity, device, dtype), or until it is
        loaded what the catalogue knows (no identity yet)."""
        entry = self.entry(name)
        with self._lock:
            slot = self._slots.get(_weights_key(entry))
        if slot is not None:
            return _info_for(entry, slot.model)
        return ModelInfo(
            name=entry.name,
            family=entry.family or "",
            native_side=entry.native_side,
            identity="",
            device=self.device,
            dtype=entry.dtype or self.dtype,
            source=entry.source,
        )

    def loaded(self) -> list[ModelInfo]:
        """The models in memory, most recently used first."""
        with self._lock:
            slots = sorted(self._slots.values(), key=lambda s: -s.last_used)
        return [s.model.info for s in slots]

    def used_bytes(self) -> int:
        with self._lock:
            return sum(s.model.size_bytes for s in self._slots.values())

    def check(self, request: GenerationRequest) -> GenerationRequest:
        """``request`` with its model's catalogue name, or the InvalidRequest that it cannot
        run here: bad input, an unknown model or LoRA, a sampler, option or operation its
        family lacks, a companion model that is not configured. Cheap (nothing is loaded)."""
        problem = request.problem()
        if problem is not None:
            raise InvalidRequest(problem)
        entry = self.entry(request.model)
        for name, _ in request.loras:
            if self.loras.find(name) is None:
                raise unknown_lora(name, self.loras)
        operation = request.operation
        if not operation.uses_model:
            problem = pixel_problem(request, self.extras.max_upscale_pixels)
            if problem is None and not self.extras.upscaler:
                problem = "Upscale (Subtle) is not available: no upscaler model is configured."
            if problem is not None:
                raise NotAvailable(problem)
            return replace(request, model=entry.name)
        if entry.family is not None:  # else it is checked once the model is loaded
            family = FAMILIES[entry.family]
            problem = family.request_problem(
                entry.name,
                sampler=request.sampler,
                width=request.width,
                height=request.height,
                tile=request.tile,
            ) or family.operation_problem(
                entry.name,
                operation.value,
                image_prompts=bool(request.image_prompts),
                style_only=request.style_only,
            )
            if problem is not None:
                raise NotAvailable(problem)
        if request.control and self.extras.controlnet(entry, request.control) is None:
            raise NotAvailable(
                f"{request.control.capitalize()} control is not available for model "
                f"'{entry.name}': no {request.control} ControlNet is configured."
            )
        if request.image_prompts and self.extras.ip_adapter_of(entry) is None:
            raise NotAvailable(
                f"Image prompts are not available for model '{entry.name}': no IP-Adapter "
                "is configured."
            )
        return replace(request, model=entry.name)

    def lora_entries(self) -> tuple[AdapterEntry, ...]:
        return self.loras.entries()

    def embedding_entries(self) -> tuple[AdapterEntry, ...]:
        return self.embeddings.entries()

    # -- the engine thread -----------------------------------------------------------------

    def acquire(self, name: str) -> tuple[ModelEntry, LoadedModel, Runner]:
        """The entry, its loaded weights and their runner, loading them (and unloading the
        least recently used idle models to fit the budget) if need be. Raises UnknownModel,
        ModelLoadError."""
        entry = self.entry(name)
        key = _weights_key(entry)
        with self._lock:
            slot = self._slots.get(key)
            if slot is not None:
                slot.last_used = time.monotonic()
                return entry, slot.model, slot.runner
        self._make_room(key, self._sizes.get(key) or _bytes_on_disk(entry.source))
        model = self._load(entry)
        runner = self._runner(model, entry)
        with self._lock:
            self._slots[key] = _Slot(model, runner, time.monotonic())
        self._sizes[key] = model.size_bytes
        self.loads += 1
        self._make_room(key, 0)  # now that its real size is known
        for sharing in self.catalogue.sharing(entry):
            self.catalogue.learn_family(sharing.name, model.family, model.info.native_side)
        return self.entry(entry.name), model, runner

    def preload(self, name: str = "") -> ModelInfo:
        """Load ``name`` (the default model) now, e.g. at start-up, off the event loop."""
        entry, model, _ = self.acquire(name)
        return _info_for(entry, model)

    def unload(self, name: str) -> bool:
        """Unload ``name``'s weights now unless they are pinned (engine thread only); False if
        there was nothing to unload. For Ray Serve's model multiplexing, which decides what
        each replica keeps (engine.serve)."""
        key = _weights_key(self.entry(name))
        with self._lock:
            slot = self._slots.get(key)
        if slot is None or slot.pinned:
            return False
        self._evict(key)
        return True

    def _load(self, entry: ModelEntry) -> LoadedModel:
        kwargs = dict(
            data_dir=self.data_dir,
            device=self.device,
            dtype=self.dtype,
            compile_unet=self.compile_unet,
            cpu_threads=self.cpu_threads,
        )
        try:
            return load_entry(entry, **kwargs)
        except ModelLoadError as exc:
            if not is_out_of_memory(exc.__cause__) or not self._evictable(None):
                raise
        # Out of memory while loading: the budget was too generous for this device. Make all
        # the room there is and try once more.
        log.warning("Out of memory loading %s; unloading every idle model.", entry.name)
        for key in self._evictable(None):
            self._evict(key)
        return load_entry(entry, **kwargs)

    def _runner(self, model: LoadedModel, entry: ModelEntry) -> Runner:
        companions = Companions(
            model,
            extras=self.extras,
            entry=entry,
            data_dir=self.data_dir,
            load_inpaint=lambda: self._load_inpainting(model, entry),
            upscale=self.upscale,
        )
        adapters = Adapters(model, self.loras, self.embeddings, self.data_dir)
        return Runner(model, adapters, companions)

    def _load_inpainting(self, base: LoadedModel, entry: ModelEntry) -> Runner | None:
        """The runner of ``entry``'s dedicated inpainting checkpoint, loaded now; None when
        none is configured or the configured one is of another family (inpainting then shares
        the model's weights). Its size counts with the model's."""
        source = self.extras.inpaint_model(entry)
        if source == "tiny":
            from engine.tiny_extras import build_tiny_inpaint_model

            if base.info.source != "tiny":  # it is made for the tiny SD 1.x model
                return None
            source = str(build_tiny_inpaint_model(self.data_dir / "models", data_dir=self.data_dir))
        if not source:
            return None
        family = detect_family(source)
        if family is not None and family != base.family:
            log.info("Inpainting model %s is %s: not for %s.", source, family, entry.name)
            return None
        inpaint_entry = ModelEntry(f"{entry.name} (inpainting)", source, dtype=entry.dtype)
        model = load_entry(
            inpaint_entry,
            data_dir=self.data_dir,
            device=self.device,
            dtype=self.dtype,
            compile_unet=self.compile_unet,
            cpu_threads=self.cpu_threads,
            inpainting=True,
        )
        if model.family != base.family:
            log.info("Inpainting model %s is %s: not for %s.", source, model.family, entry.name)
            return None
        base.size_bytes += model.size_bytes
        log.info("Inpainting checkpoint %s loaded for %s.", source, entry.name)
        adapters = Adapters(model, self.loras, self.embeddings, self.data_dir)
        return Runner(model, adapters, Companions(model, data_dir=self.data_dir))

    def _evictable(self, keep: tuple[str, str | None, str | None] | None) -> list[tuple]:
        with self._lock:
            slots = sorted(self._slots.items(), key=lambda kv: kv[1].last_used)
        return [k for k, s in slots if k != keep and not s.pinned]

    def _make_room(self, keep: tuple[str, str | None, str | None], incoming: int) -> None:
        if self.memory_budget is None:
            return
        for key in self._evictable(keep):
            if self.used_bytes() + incoming <= self.memory_budget:
                return
            self._evict(key)
        if self.used_bytes() + incoming > self.memory_budget:
            log.warning(
                "Models need %.2f GB, above EASEL_MODEL_MEMORY (%.2f GB); keeping only what "
                "the running job needs.",
                (self.used_bytes() + incoming) / 1e9,
                self.memory_budget / 1e9,
            )

    def _evict(self, key: tuple[str, str | None, str | None]) -> None:
        with self._lock:
            slot = self._slots.pop(key, None)
        if slot is None:
            return
        log.info("Unloading model %s to make room.", slot.model.info.name)
        self.evictions += 1
        del slot
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _info_for(entry: ModelEntry, model: LoadedModel) -> ModelInfo:
    """Entries sharing weights (an LCM-LoRA entry and its base) share the loaded model but keep
    their own name."""
    family = FAMILIES[model.family]
    return replace(
        model.info,
        name=entry.name,
        native_side=entry.native_size or model.info.native_side or family.native_side,
    )
