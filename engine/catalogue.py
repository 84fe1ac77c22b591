"""The model catalogue (``models.toml``) and the LoRA and embedding folders. No torch here: the
bot reads all of this at start-up, and lists it for ``/models``.

A catalogue names each model: where its weights come from (a Hub id, a diffusers folder, a single
checkpoint file, or a built-in tiny model), its family, a description, its own defaults, and
whether it may be used in age-restricted channels only::

    default = "sdxl"                    # optional; else the first model

    [models.sdxl]
    source = "stabilityai/stable-diffusion-xl-base-1.0"
    family = "sdxl"                     # optional where it can be read from the files
    description = "SDXL 1.0: detailed, 1024 px"
    steps = 30                          # optional per-model defaults
    guidance = 6.0
    sampler = "dpmpp_2m_karras"
    native_size = 1024
    fast = "sdxl-turbo"                 # what --fast switches to
    nsfw_only = false

    [models.sdxl-turbo]
    source = "stabilityai/sdxl-turbo"
    few_step = true                     # a turbo / LCM model: few steps, low guidance
    steps = 2
    guidance = 0.0
    native_size = 512

    [models.sd15]
    source = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    inpaint = "stable-diffusion-v1-5/stable-diffusion-inpainting"   # optional; "" = none
    controlnets = { canny = "lllyasviel/control_v11p_sd15_canny" }  # by control kind
    ip_adapter = "h94/IP-Adapter/models/ip-adapter_sd15.safetensors"

A model's companions (``inpaint``, ``controlnets``, ``ip_adapter``, and ``preview_decoder``: a
TAESD such as ``madebyollin/taesd`` for fast real previews) override the settings'
(:class:`ExtraModels`) for that model; the settings' apply to every model whose family they fit.

A model's name is what jobs record and users type; it is never a file path. An entry may carry
LoRAs applied to every job it runs (``loras = { lcm-lora-sdv1-5 = 1.0 }``): an LCM-LoRA entry
shares the weights of the entry with the same source.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.families import CLASSIC_SAMPLERS, FAMILIES, Family
from engine.requests import LORA_WEIGHT_MAX, ControlKind

TINY_SOURCES = {"tiny": "sd1", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,63}$")
ADAPTER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DTYPES = ("auto", "float16", "bfloat16", "float32")
_HEADER_MAX = 100 * 1024 * 1024  # a safetensors JSON header larger than this is no checkpoint


class CatalogueError(Exception):
    """The catalogue cannot be used; ``str()`` names the file, the entry and the field."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    source: str  # Hub id, folder, single file, or a tiny model's name
    family: str | None = None  # None: not known until the model is loaded
    description: str = ""
    nsfw_only: bool = False  # usable in age-restricted channels only
    fast: str | None = None  # the entry --fast switches to
    few_step: bool = False  # a turbo / LCM model (1-8 steps, guidance near 0 or 1)
    loras: tuple[tuple[str, float], ...] = ()  # applied to every job of this entry
    config: str | None = None  # single files: the diffusers repo or folder for missing parts
    dtype: str | None = None  # overrides EASEL_DTYPE for this model
    # The defaults as written in the file; None: the family's (see the properties below).
    default_steps: int | None = None
    default_guidance: float | None = None
    default_sampler: str | None = None
    native_size: int | None = None
    # Companions (see ExtraModels): None = the settings' choice; "" = none for this model.
    inpaint: str | None = None  # a dedicated inpainting checkpoint
    controlnets: tuple[tuple[str, str], ...] = ()  # (control kind, source)
    ip_adapter: str | None = None
    preview_decoder: str | None = None  # a TAESD for this model's step previews

    @property
    def family_info(self) -> Family:
        # Until a model's family is known, SD 1.x's defaults are the safe guess.
        return FAMILIES[self.family or "sd1"]

    @property
    def steps(self) -> int:
        return self.default_steps if self.default_steps is not None else self.family_info.steps

    @property
    def guidance(self) -> float:
        if self.default_guidance is not None:
            return self.default_guidance
        return self.family_info.guidance

    @property
    def sampler(self) -> str:
        return self.default_sampler or self.family_info.sampler

    @property
    def native_side(self) -> int:
        return self.native_size or self.family_info.native_side

    @property
    def size_multiple(self) -> int:
        return self.family_info.size_multiple

    @property
    def samplers(self) -> tuple[str, ...]:
        """The samplers this model can run; all of them while the family is unknown."""
        return self.family_info.samplers if self.family else ()


class Catalogue:
    """The models by name (case-insensitive). A request may also name a model by its source, so
    jobs recorded before the catalogue existed (their model was ``EASEL_MODEL``) still remake."""

    def __init__(
        self, entries: Iterable[ModelEntry], default: str, path: Path | None = None
    ) -> None:
        self.path = path
        self._entries: dict[str, ModelEntry] = {}
        for entry in map(_with_native, entries):
            key = entry.name.casefold()
            if key in self._entries:
                raise CatalogueError(f"{_where(path)}: two models are called '{entry.name}'.")
            self._entries[key] = entry
        if not self._entries:
            raise CatalogueError(f"{_where(path)}: no models. Add a [models.NAME] table.")
        found = self.find(default)
        if found is None:
            raise CatalogueError(
                f"{_where(path)}: the default model '{default}' is not in the catalogue "
                f"({', '.join(self.names())})."
            )
        self.default = found

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries())

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> tuple[ModelEntry, ...]:
        return tuple(self._entries.values())

    def names(self) -> list[str]:
        return [e.name for e in self._entries.values()]

    def find(self, name: str) -> ModelEntry | None:
        """The entry called ``name`` ("" is the default), or whose source is ``name``."""
        if not name:
            return getattr(self, "default", None)
        entry = self._entries.get(name.casefold())
        if entry is not None:
            return entry
        for candidate in self._entries.values():
            if candidate.source == name:
                return candidate
        return None

    def learn_family(self, name: str, family: str, native_side: int) -> ModelEntry:
        """Record the family found on loading (for entries that did not say)."""
        entry = self._entries[name.casefold()]
        if entry.family == family and entry.native_size is not None:
            return entry
        updated = replace(entry, family=family, native_size=entry.native_size or native_side)
        self._entries[name.casefold()] = updated
        if self.default.name == entry.name:
            self.default = updated
        return updated

    def sharing(self, entry: ModelEntry) -> list[ModelEntry]:
        """Entries that load the same weights as ``entry``."""
        return [e for e in self._entries.values() if _same_weights(e, entry)]


# Defaults of the models that look at pictures (their model cards): CLIPSeg's refined 64-wide
# decoder (what InvokeAI's text-to-mask uses), BLIP base captions (990 MB) and Depth Anything V2
# Small (99 MB).
DEFAULT_SEGMENTER = "CIDAS/clipseg-rd64-refined"
DEFAULT_CAPTIONER = "Salesforce/blip-image-captioning-base"
DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
DEFAULT_UPSCALE_TILE = 512  # input pixels per tile (engine.upscalers)


@dataclass(frozen=True)
class ExtraModels:
    """The models beside the catalogue's, from the settings: where each comes from (a Hub id, a
    folder, a file, or ``tiny``: a random one built locally, for tests and the offline demo).
    None: not configured, and what needs it says so. All are loaded on first use.

    ``inpaint``, ``controlnets`` and ``ip_adapter`` belong to a model family; they serve every
    catalogue model of that family that does not name its own (``models.toml``).
    """

    inpaint: str | None = None  # EASEL_INPAINT_MODEL (else inpainting shares the model's weights)
    controlnets: tuple[tuple[str, str], ...] = ()  # EASEL_CONTROLNET_CANNY, _DEPTH, _LINEART ...
    # EASEL_IP_ADAPTER: the adapter's weights file, e.g. h94/IP-Adapter/models/ip-adapter_sd15
    # .safetensors (a Hub repository and the path in it) or a local file; its image encoder is
    # the folder image_encoder beside it unless EASEL_IP_ADAPTER_ENCODER names another.
    ip_adapter: str | None = None
    ip_adapter_encoder: str | None = None
    upscaler: str | None = None  # EASEL_UPSCALER_MODEL: an ESRGAN-family .pth/.safetensors
    segmenter: str = DEFAULT_SEGMENTER  # EASEL_SEGMENT_MODEL
    captioner: str = DEFAULT_CAPTIONER  # EASEL_CAPTION_MODEL
    depth: str = DEFAULT_DEPTH_MODEL  # EASEL_DEPTH_MODEL
    max_upscale_pixels: int = 2048 * 2048  # EASEL_MAX_UPSCALE_PIXELS: a Subtle upscale's output
    upscale_tile: int = DEFAULT_UPSCALE_TILE  # EASEL_UPSCALE_TILE
    # EASEL_PREVIEW_DECODERS: a TAESD per model family, e.g. (("sd1", "madebyollin/taesd"),).
    preview_decoders: tuple[tuple[str, str], ...] = ()

    @classmethod
    def tiny(cls, **overrides: Any) -> ExtraModels:
        """Every companion a tiny random model: what the tests and the offline demo use."""
        values: dict[str, Any] = dict(
            controlnets=tuple((k.value, "tiny") for k in ControlKind if k is not ControlKind.POSE),
            ip_adapter="tiny",
            upscaler="tiny",
            segmenter="tiny",
            captioner="tiny",
            depth="tiny",
        )
        values.update(overrides)
        return cls(**values)

    def controlnet(self, entry: ModelEntry, kind: str) -> str | None:
        """The ControlNet for ``kind`` that ``entry`` uses, or None."""
        for table in (entry.controlnets, self.controlnets):
            for name, source in table:
                if name == kind:
                    return source or None
        return None

    def inpaint_model(self, entry: ModelEntry) -> str | None:
        chosen = entry.inpaint if entry.inpaint is not None else self.inpaint
        return chosen or None

    def ip_adapter_of(self, entry: ModelEntry) -> str | None:
        chosen = entry.ip_adapter if entry.ip_adapter is not None else self.ip_adapter
        return chosen or None

    def preview_decoder_of(self, entry: ModelEntry, family: str) -> str | None:
        if entry.preview_decoder is not None:
            return entry.preview_decoder or None
        return dict(self.preview_decoders).get(family) or None


def _same_weights(a: ModelEntry, b: ModelEntry) -> bool:
    return (a.source, a.config, a.dtype) == (b.source, b.config, b.dtype)


def _where(path: Path | None, entry: str | None = None, field: str | None = None) -> str:
    where = str(path) if path is not None else "EASEL_MODEL"
    if entry is not None:
        where += f", model '{entry}'"
    if field is not None:
        where += f", field '{field}'"
    return where


# -- loading the file ----------------------------------------------------------------------------


def name_for_source(source: str) -> str:
    """The catalogue name of a model given only by its source (``EASEL_MODEL`` alone): a Hub id
    or tiny model keeps its name; a file or folder is named by its stem, never by its path."""
    if source in TINY_SOURCES or (NAME_PATTERN.match(source) and not _looks_like_path(source)):
        return source
    stem = Path(source.rstrip("/\\")).expanduser().stem or "model"
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"
    return name[:64]


def _looks_like_path(source: str) -> bool:
    path = Path(source).expanduser()
    return (
        source.startswith(("/", "./", "../", "~"))
        or path.suffix in SINGLE_FILE_SUFFIXES
        or path.exists()
    )


def load_catalogue(path: Path | None, default_model: str) -> Catalogue:
    """The catalogue from ``path`` (``EASEL_MODELS_FILE``), or ``default_model``
    (``EASEL_MODEL``) alone as a one-entry catalogue. Raises :class:`CatalogueError`.

    The default model is the file's ``default``, else ``default_model`` where it names one of
    the file's models, else the file's first model."""
    if path is None:
        entry = ModelEntry(
            name=name_for_source(default_model),
            source=default_model,
            family=detect_family(default_model),
        )
        return Catalogue([entry], entry.name)
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise CatalogueError(f"Cannot read the model catalogue {path}: {exc.strerror}.") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"{path} is not valid TOML: {exc}.") from None
    unknown = sorted(set(data) - {"default", "models"})
    if unknown:
        raise CatalogueError(
            f"{path}: unknown top-level key '{unknown[0]}'; use 'default' and [models.NAME]."
        )
    models = data.get("models")
    if not isinstance(models, dict) or not models:
        raise CatalogueError(f"{path}: no models. Add a [models.NAME] table with a source.")
    entries = [_entry(path, name, table) for name, table in models.items()]
    by_name = {e.name.casefold() for e in entries}
    for e in entries:
        if e.fast is not None:
            if e.fast.casefold() not in by_name:
                raise CatalogueError(
                    f"{_where(path, e.name, 'fast')}: there is no model '{e.fast}' "
                    "in the catalogue."
                )
            if e.fast.casefold() == e.name.casefold():
                raise CatalogueError(f"{_where(path, e.name, 'fast')}: names the model itself.")
    default = data.get("default")
    if default is not None and not isinstance(default, str):
        raise CatalogueError(f"{path}: 'default' must be a model's name, in quotes.")
    if default is None:
        default = default_model if default_model.casefold() in by_name else entries[0].name
    return Catalogue(entries, default, path)


_FIELDS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "source": (str, "text in quotes"),
    "family": (str, "text in quotes"),
    "description": (str, "text in quotes"),
    "steps": (int, "a whole number"),
    "guidance": ((int, float), "a number"),
    "sampler": (str, "text in quotes"),
    "native_size": (int, "a whole number"),
    "nsfw_only": (bool, "true or false"),
    "fast": (str, "a model's name in quotes"),
    "few_step": (bool, "true or false"),
    "loras": (dict, "a table such as { name = 0.8 }"),
    "config": (str, "text in quotes"),
    "dtype": (str, "text in quotes"),
    "inpaint": (str, "text in quotes"),
    "controlnets": (dict, 'a table such as { canny = "lllyasviel/control_v11p_sd15_canny" }'),
    "ip_adapter": (str, "text in quotes"),
    "preview_decoder": (str, "text in quotes"),
}


def _entry(path: Path, name: str, table: Any) -> ModelEntry:
    if not NAME_PATTERN.match(name) or ".." in name:
        raise CatalogueError(
            f"{path}: '{name}' is not a usable model name (1-64 letters, digits, '.', '_', '-' "
            "or '/', starting with a letter or digit)."
        )
    if not isinstance(table, dict):
        raise CatalogueError(f"{_where(path, name)}: must be a table ([models.{name}]).")
    for key, value in table.items():
        if key not in _FIELDS:
            raise CatalogueError(
                f"{_where(path, name, key)}: unknown field. Fields: {', '.join(_FIELDS)}."
            )
        expected, kind = _FIELDS[key]
        # bool is an int in Python: "steps = true" must not pass as 1.
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise CatalogueError(f"{_where(path, name, key)}: must be {kind}, not {value!r}.")
    source = table.get("source")
    if not source:
        raise CatalogueError(
            f"{_where(path, name, 'source')}: missing. Give a Hub id, a diffusers folder, "
            "a .safetensors file or a tiny model."
        )
    family = table.get("family")
    if family is not None and family not in FAMILIES:
        raise CatalogueError(
            f"{_where(path, name, 'family')}: '{family}' is not one of {', '.join(FAMILIES)}."
        )
    detected = detect_family(_resolve_source(source, path))
    if family is None:
        family = detected
    elif detected is not None and detected != family:
        raise CatalogueError(
            f"{_where(path, name, 'family')}: says {family}, but the weights are {detected}."
        )
    steps = table.get("steps")
    if steps is not None and not 1 <= steps <= 500:
        raise CatalogueError(f"{_where(path, name, 'steps')}: must be from 1 to 500.")
    guidance = table.get("guidance")
    if guidance is not None and not (math.isfinite(guidance) and 0 <= guidance <= 30):
        raise CatalogueError(f"{_where(path, name, 'guidance')}: must be from 0 to 30.")
    sampler = table.get("sampler")
    if sampler is not None:
        known = FAMILIES[family].samplers if family else CLASSIC_SAMPLERS
        if sampler not in known:
            raise CatalogueError(
                f"{_where(path, name, 'sampler')}: '{sampler}' is not one of {', '.join(known)}."
            )
    native = table.get("native_size")
    if native is not None and (native % 8 or not 64 <= native <= 4096):
        raise CatalogueError(
            f"{_where(path, name, 'native_size')}: must be a multiple of 8 from 64 to 4096."
        )
    dtype = table.get("dtype")
    if dtype is not None and dtype not in _DTYPES:
        raise CatalogueError(f"{_where(path, name, 'dtype')}: must be one of {', '.join(_DTYPES)}.")
    loras: list[tuple[str, float]] = []
    for lora, weight in (table.get("loras") or {}).items():
        if not ADAPTER_NAME.match(lora):
            raise CatalogueError(f"{_where(path, name, 'loras')}: '{lora}' is not a LoRA name.")
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise CatalogueError(
                f"{_where(path, name, 'loras')}: the weight of '{lora}' must be a number."
            )
        if not abs(weight) <= LORA_WEIGHT_MAX:
            raise CatalogueError(
                f"{_where(path, name, 'loras')}: the weight of '{lora}' must be from "
                f"-{LORA_WEIGHT_MAX:g} to {LORA_WEIGHT_MAX:g}."
            )
        loras.append((lora, float(weight)))
    controlnets: list[tuple[str, str]] = []
    for kind, control_source in (table.get("controlnets") or {}).items():
        if kind not in set(ControlKind):
            kinds = ", ".join(k.value for k in ControlKind)
            raise CatalogueError(
                f"{_where(path, name, 'controlnets')}: '{kind}' is not a control type ({kinds})."
            )
        if not isinstance(control_source, str):
            raise CatalogueError(
                f"{_where(path, name, 'controlnets')}: the source of '{kind}' must be text."
            )
        controlnets.append((kind, _resolve_companion(control_source, path)))
    companions = {
        key: _resolve_companion(table[key], path) if table[key] else ""
        for key in ("inpaint", "ip_adapter", "preview_decoder")
        if key in table
    }
    entry = ModelEntry(
        name=name,
        source=_resolve_source(source, path),
        family=family,
        description=table.get("description", ""),
        nsfw_only=table.get("nsfw_only", False),
        fast=table.get("fast"),
        few_step=table.get("few_step", False),
        loras=tuple(loras),
        config=table.get("config"),
        dtype=dtype,
        default_steps=steps,
        default_guidance=float(guidance) if guidance is not None else None,
        default_sampler=sampler,
        native_size=native,
        controlnets=tuple(controlnets),
        **companions,
    )
    return entry


def _resolve_source(source: str, catalogue: Path | None) -> str:
    """Relative paths in the file are relative to the file, as in any config file."""
    if catalogue is None or source in TINY_SOURCES:
        return source
    path = Path(source).expanduser()
    if path.is_absolute():
        return str(path)
    beside = Path(catalogue).parent / path
    if source.startswith(("./", "../")) or path.suffix in SINGLE_FILE_SUFFIXES or beside.exists():
        return str(beside.resolve())
    return source  # a Hub id


def _resolve_companion(source: str, catalogue: Path) -> str:
    """A companion's source: a path relative to the file when it says so (./, ../) or names
    something beside it; else as written (a Hub id, which for an IP-Adapter ends in a file's
    path inside the repository)."""
    path = Path(source).expanduser()
    if path.is_absolute() or source == "tiny":
        return str(path) if path.is_absolute() else source
    beside = Path(catalogue).parent / path
    if source.startswith(("./", "../")) or beside.exists():
        return str(beside.resolve())
    return source


def _with_native(entry: ModelEntry) -> ModelEntry:
    if entry.native_size is not None:
        return entry
    native = _folder_native_side(entry.source)
    return replace(entry, native_size=native) if native else entry


# -- recognising weights without loading them --------------------------------------------------


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a ``.safetensors`` file: tensor names → dtype, shape, offsets.
    (The format: an 8-byte little-endian length, then that much JSON; huggingface/safetensors.)
    """
    with Path(path).open("rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError("too short for a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > _HEADER_MAX:
            raise ValueError("safetensors header too large")
        header = json.loads(f.read(length))
    header.pop("__metadata__", None)
    return header


def _shape(header: dict[str, Any], key: str) -> list[int]:
    return list(header.get(key, {}).get("shape", []))


# Key names from diffusers' single-file loader (diffusers/loaders/single_file_utils.py,
# CHECKPOINT_KEY_NAMES), which decides the same way which pipeline a checkpoint is.
_SD3_KEYS = (
    "joint_blocks.0.context_block.adaLN_modulation.1.bias",
    "model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias",
)
_FLUX_KEYS = (
    "double_blocks.0.img_attn.norm.key_norm.scale",
    "model.diffusion_model.double_blocks.0.img_attn.norm.key_norm.scale",
)
_XL_BASE_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
_XL_REFINER_KEY = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
_V2_KEY = "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight"
_PLAYGROUND_KEY = "edm_mean"


def checkpoint_family(header: dict[str, Any]) -> str:
    """The family of a single-file checkpoint from its tensor names and shapes. Raises
    ValueError for checkpoints Easel cannot run as a text-to-image model."""
    if any(k in header for k in _SD3_KEYS):
        return "sd3"
    if any(k in header for k in _FLUX_KEYS):
        return "flux"
    if _XL_BASE_KEY in header or _PLAYGROUND_KEY in header:
        return "sdxl"
    if _XL_REFINER_KEY in header:
        raise ValueError("an SDXL refiner, which only refines images; use an SDXL base checkpoint")
    if _shape(header, _V2_KEY)[-1:] == [1024]:
        return "sd2"
    if any(k.startswith("model.diffusion_model.") for k in header):
        return "sd1"
    raise ValueError("not a Stable Diffusion, SDXL, SD3 or FLUX checkpoint")


_PIPELINE_FAMILIES = {
    "StableDiffusionXLPipeline": "sdxl",
    "StableDiffusion3Pipeline": "sd3",
    "FluxPipeline": "flux",
}


def _hub_folder(source: str) -> Path | None:
    """The Hub cache's copy of a model, if it was downloaded before (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - diffusers depends on it
        return None
    try:
        found = try_to_load_from_cache(source, "model_index.json")
    except Exception:  # an id the hub library rejects: not a Hub model
        return None
    return Path(found).parent if isinstance(found, str) else None


def _model_folder(source: str) -> Path | None:
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if source in TINY_SOURCES or path.suffix in SINGLE_FILE_SUFFIXES or path.exists():
        return None
    return _hub_folder(source)


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def detect_family(source: str) -> str | None:
    """The family of ``source`` where the files say it cheaply (no weights are read); None
    when it cannot be known before loading (a Hub model not downloaded yet)."""
    if source in TINY_SOURCES:
        return TINY_SOURCES[source]
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".safetensors":
        try:
            return checkpoint_family(read_safetensors_header(path))
        except (OSError, ValueError):
            return None
    if path.is_file():
        return None  # a .ckpt is a pickle: known only once loaded
    folder = _model_folder(source)
    if folder is None:
        return None
    cls = _json(folder / "model_index.json").get("_class_name", "")
    if cls in _PIPELINE_FAMILIES:
        return _PIPELINE_FAMILIES[cls]
    if cls.startswith("StableDiffusion"):
        unet = _json(folder / "unet" / "config.json")
        return "sd2" if unet.get("cross_attention_dim") == 1024 else "sd1"
    return None


def _folder_native_side(source: str) -> int | None:
    if source in TINY_SOURCES:
        return 64
    folder = _model_folder(source)
    if folder is None:
        return None
    for part in ("unet", "transformer"):
        size = _json(folder / part / "config.json").get("sample_size")
        if isinstance(size, int):
            return size * 8  # every family's VAE downsamples by 8
    return None


# -- LoRA and embedding folders -----------------------------------------------------------------


@dataclass(frozen=True)
class AdapterEntry:
    """A LoRA or a textual-inversion embedding in its folder. ``name`` is the file's stem: what
    ``--lora NAME`` and ``<lora:NAME:w>`` name, and an embedding's token in the prompt."""

    name: str
    path: Path
    kind: str  # "lora" or "embedding"
    family: str | None  # the family its tensors fit, where the shapes say; None: unknown
    size: int  # bytes on disk


def _lora_family(header: dict[str, Any]) -> str | None:
    keys = list(header)
    if any("double_blocks" in k or "single_transformer_blocks" in k for k in keys):
        return "flux"
    if any("joint_blocks" in k or "context_block" in k for k in keys):
        return "sd3"
    # The cross-attention's key projection reads the text encoder's width: 768 (SD 1.x),
    # 1024 (SD 2.x), 2048 (SDXL's two encoders side by side).
    for key in keys:
        low = key.lower()
        if "attn2" in low and "to_k" in low and ("lora_down" in low or "lora_a" in low):
            width = _shape(header, key)[-1:]
            return {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width[0] if width else 0)
    return None


def _embedding_family(header: dict[str, Any]) -> str | None:
    if "clip_g" in header and "clip_l" in header:
        return "sdxl"
    for key in header:
        width = _shape(header, key)[-1:]
        if width in ([768], [1024]):
            return "sd1" if width == [768] else "sd2"
    return None


class AdapterFolder:
    """The ``.safetensors`` files of one folder, listed cheaply: re-read only when the folder
    changes (its modification time), and only the JSON headers."""

    def __init__(self, folder: Path | None, kind: str) -> None:
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.kind = kind
        self._stamp: float | None = None
        self._entries: dict[str, AdapterEntry] = {}

    def entries(self) -> tuple[AdapterEntry, ...]:
        self._refresh()
        return tuple(sorted(self._entries.values(), key=lambda e: e.name.casefold()))

    def find(self, name: str) -> AdapterEntry | None:
        self._refresh()
        return self._entries.get(name.casefold())

    def _refresh(self) -> None:
        if self.folder is None:
            return
        try:
            stamp = os.stat(self.folder).st_mtime
        except OSError:
            self._entries, self._stamp = {}, None
            return
        if stamp == self._stamp:
            return
        found: dict[str, AdapterEntry] = {}
        for path in sorted(self.folder.glob("*.safetensors")):
            if not ADAPTER_NAME.match(path.stem) or not path.is_file():
                continue  # names users cannot type (spaces, odd characters) are not listed
            try:
                header = read_safetensors_header(path)
            except (OSError, ValueError):
                continue
            detect = _lora_family if self.kind == "lora" else _embedding_family
            found[path.stem.casefold()] = AdapterEntry(
                path.stem, path, self.kind, detect(header), path.stat().st_size
            )
        self._entries, self._stamp = found, stamp
