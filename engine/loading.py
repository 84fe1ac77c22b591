"""Loading a model: a Hub id, a local diffusers folder, a single ``.safetensors``/``.ckpt`` file, or
a tiny model, of any family in :mod:`engine.families`. The text-to-image and image-to-image
pipelines share one set of weights (``from_pipe``). Nothing here assumes a U-Net: SD3 and FLUX
denoise with a transformer.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from diffusers import (
    AutoPipelineForImage2Image,
    AutoPipelineForInpainting,
    AutoPipelineForText2Image,
)

from engine.catalogue import (
    SINGLE_FILE_SUFFIXES,
    TINY_SOURCES,
    ModelEntry,
    checkpoint_family,
    detect_family,
    load_catalogue,
    read_safetensors_header,
)
from engine.families import FAMILIES, Family
from engine.requests import ModelInfo, first_line
from engine.tiny import tiny_model_folder

log = logging.getLogger(__name__)

__all__ = ["SINGLE_FILE_SUFFIXES", "LoadedModel", "ModelLoadError", "load_entry", "load_model"]

# Pipelines by family, for single files (diffusers reads the file's layout itself).
_PIPELINES = {
    "sd1": "StableDiffusionPipeline",
    "sd2": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
# The same for a dedicated inpainting checkpoint (a U-Net taking the mask and the masked image).
_INPAINT_PIPELINES = {
    "sd1": "StableDiffusionInpaintPipeline",
    "sd2": "StableDiffusionInpaintPipeline",
    "sdxl": "StableDiffusionXLInpaintPipeline",
    "sd3": "StableDiffusion3InpaintPipeline",
    "flux": "FluxInpaintPipeline",
}
# Where diffusers takes the parts a transformer-only checkpoint lacks (text encoders, VAE):
# DIFFUSERS_DEFAULT_PIPELINE_PATHS in diffusers/loaders/single_file_utils.py.
_BASE_REPOS = {
    "sd3": "stabilityai/stable-diffusion-3-medium-diffusers",
    "flux": "black-forest-labs/FLUX.1-schnell",
    "flux-dev": "black-forest-labs/FLUX.1-dev",
}


class ModelLoadError(Exception):
    """The configured model cannot be loaded; ``str()`` says why and what to do."""


@dataclass(eq=False)
class LoadedModel:
    info: ModelInfo
    txt2img: Any
    img2img: Any
    scheduler_config: Any
    device: torch.device
    dtype: torch.dtype
    size_bytes: int = 0  # weights in memory (parameters and buffers of every component)
    # Per-model state owned by the engine thread: loaded LoRAs and embeddings, the prompt
    # encoder and its cache (engine.adapters, engine.weighting).
    state: dict[str, Any] = field(default_factory=dict)
    # A dedicated inpainting checkpoint: ``txt2img`` holds its inpainting pipeline (whose
    # encoders and U-Net the prompt encoder and LoRAs use) and ``img2img`` is None.
    inpainting: bool = False

    @property
    def family(self) -> str:
        return self.info.family

    @property
    def family_info(self) -> Family:
        return FAMILIES[self.info.family]

    @property
    def denoiser(self) -> torch.nn.Module:
        """The U-Net (SD 1.x, 2.x, XL) or the transformer (SD3, FLUX)."""
        pipe = self.txt2img
        return pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer


def make_batch_invariant(pipe: Any) -> None:
    """Make each image's pixels independent of how many images share its pipeline call
    (the pipeline's denoiser: see :func:`batch_invariant`)."""
    unet = getattr(pipe, "unet", None)
    batch_invariant(unet if unet is not None else pipe.transformer)


def batch_invariant(denoiser: torch.nn.Module) -> None:
    """Make each image's pixels independent of how many images share a call of ``denoiser``
    (a U-Net, a ControlNet, a transformer; modules added later, such as an IP-Adapter's, are
    covered by calling this again).

    On a CPU a linear layer can round differently for different batch sizes (MKL picks its
    kernels by shape), so a ``(batch, C)`` input gives bits that depend on the batch. Two
    measures remove that: a U-Net's timestep embedding is computed once (every image in a call
    is at the same timestep; cheaper too) and broadcast, and every other linear layer that sees a
    ``(batch, C)`` input (SDXL's added conditioning, the transformers' AdaLayerNorm modulation)
    runs one row at a time. Layers over tokens (``(batch, tokens, C)``) are independent of the
    batch already. Forward methods are wrapped in place, so module names stay those LoRA files
    address.
    """
    projection = getattr(denoiser, "time_proj", None)  # U-Nets and their ControlNets
    if projection is not None and not getattr(projection.forward, "_easel_shared", False):
        project = projection.forward

        def shared(timesteps: torch.Tensor) -> torch.Tensor:
            # diffusers expands a call's one timestep to the batch (get_time_embed): a view with
            # stride 0. Told by the stride, not the values, so there is no GPU→CPU sync and no
            # graph break under torch.compile; the (1, C) embedding broadcasts downstream.
            if timesteps.dim() == 1 and timesteps.shape[0] > 1 and timesteps.stride(0) == 0:
                return project(timesteps[:1])
            return project(timesteps)

        shared._easel_shared = True  # type: ignore[attr-defined]
        projection.forward = shared
    for module in denoiser.modules():
        if isinstance(module, torch.nn.Linear) and not getattr(module.forward, "_easel_rows", 0):
            module.forward = _row_by_row(module.forward)


def _row_by_row(forward: Any) -> Any:
    def rows(x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2 and x.shape[0] > 1:
            return torch.cat([forward(x[i : i + 1]) for i in range(x.shape[0])])
        return forward(x)

    rows._easel_rows = True  # type: ignore[attr-defined]
    return rows


def is_out_of_memory(exc: BaseException | None) -> bool:
    if exc is None:
        return False
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "out of memory" in text.lower() or "can't allocate memory" in text
    )


def pick_device(setting: str) -> torch.device:
    if setting != "auto":
        device = torch.device(setting)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelLoadError(
                f"EASEL_DEVICE is {setting}, but torch sees no CUDA GPU (torch {torch.__version__}"
                "; a CPU-only torch build?). See the README on installing torch for your GPU."
            )
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(setting: str, device: torch.device, family: str | None = None) -> torch.dtype:
    if setting == "auto":
        if device.type == "cpu":
            return torch.float32  # CPUs are slow in half precision
        # Half precision halves memory and doubles speed on GPUs. bfloat16 where the GPU has
        # it (Ampere and later): as fast as float16, and it does not overflow, so the SDXL VAE
        # needs no float32 upcast for its decode and FLUX (whose model card runs it in
        # bfloat16) does not turn black.
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        if family == "flux" and device.type != "cuda":
            return torch.bfloat16
        return torch.float16
    return {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}[setting]


def _hash_cache(data_dir: Path) -> Path:
    return data_dir / "models" / "hashes.json"


def file_identity(paths: list[Path], data_dir: Path) -> str:
    """sha256 over the weight files, cached by (path, size, mtime) since models are gigabytes."""
    cache_file = _hash_cache(data_dir)
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    total = hashlib.sha256()
    changed = False
    for path in sorted(paths):
        stat = path.stat()
        key = f"{path.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"
        digest = cache.get(key)
        if digest is None:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = cache[key] = h.hexdigest()
            changed = True
        total.update(digest.encode())
    if changed:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        cache_file.write_text(json.dumps(cache, indent=1))
    return "sha256:" + total.hexdigest()[:16]


def _weight_files(folder: Path) -> list[Path]:
    return [
        p
        for p in folder.rglob("*")
        if p.suffix in (".safetensors", ".bin", ".ckpt", ".json", ".txt", ".model") and p.is_file()
    ]


def _pipeline_family(pipe: Any) -> str:
    name = type(pipe).__name__
    if "Flux" in name:
        return "flux"
    if "StableDiffusion3" in name:
        return "sd3"
    if "XL" in name:
        return "sdxl"
    unet = getattr(pipe, "unet", None)
    if unet is None:
        raise ModelLoadError(f"{name} is not a model family Easel runs ({', '.join(FAMILIES)}).")
    return "sd2" if unet.config.cross_attention_dim == 1024 else "sd1"


def _from_folder(folder: Path, kwargs: dict[str, Any], inpainting: bool = False) -> Any:
    # Components the folder declares absent (SD3 without its T5 encoder: null in
    # model_index.json) must be passed as None, or diffusers asks for them.
    index = folder / "model_index.json"
    absent = {}
    if index.is_file():
        for key, value in json.loads(index.read_text()).items():
            if isinstance(value, list) and value and value[0] is None:
                absent[key] = None
    auto = AutoPipelineForInpainting if inpainting else AutoPipelineForText2Image
    return auto.from_pretrained(folder, **kwargs, **absent)


def _from_single_file(
    path: Path, entry: ModelEntry, kwargs: dict[str, Any], inpainting: bool = False
) -> Any:
    if path.suffix == ".safetensors":
        try:
            family = checkpoint_family(read_safetensors_header(path))
        except ValueError as exc:
            raise ModelLoadError(f"{path.name} is {exc}.") from None
    else:
        family = entry.family or "sd1"  # a .ckpt pickle: SD 1.x/2.x, as A1111 shares them
    cls = getattr(diffusers, (_INPAINT_PIPELINES if inpainting else _PIPELINES)[family])
    if family not in ("sd3", "flux"):
        return cls.from_single_file(str(path), config=entry.config, **kwargs)
    # SD3 and FLUX files often hold the transformer alone: take the other parts (text encoders,
    # VAE) from the family's diffusers repository, or the entry's ``config``.
    header = read_safetensors_header(path)
    whole = any(k.startswith(("text_encoders.", "vae.", "first_stage_model.")) for k in header)
    if whole:
        return cls.from_single_file(str(path), config=entry.config, **kwargs)
    dev = any(k.endswith("guidance_in.in_layer.bias") for k in header)
    base = entry.config or _BASE_REPOS["flux-dev" if family == "flux" and dev else family]
    denoiser_cls = (
        diffusers.FluxTransformer2DModel if family == "flux" else diffusers.SD3Transformer2DModel
    )
    transformer = denoiser_cls.from_single_file(
        str(path), config=base, subfolder="transformer", **kwargs
    )
    return cls.from_pretrained(base, transformer=transformer, **kwargs)


def _module_bytes(pipe: Any) -> int:
    seen: set[int] = set()
    total = 0
    for component in pipe.components.values():
        if not isinstance(component, torch.nn.Module):
            continue
        for tensor in [*component.parameters(), *component.buffers()]:
            if id(tensor) not in seen:
                seen.add(id(tensor))
                total += tensor.numel() * tensor.element_size()
    return total


def load_entry(
    entry: ModelEntry,
    *,
    data_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    compile_unet: bool = False,
    cpu_threads: int = 0,
    inpainting: bool = False,
) -> LoadedModel:
    """Load a catalogue entry's weights and prepare them for batch-invariant, shared-weight
    generation; ``inpainting``: the entry is a dedicated inpainting checkpoint (same loading
    forms). Raises :class:`ModelLoadError` with one line for the user."""
    # A server's log is no terminal: no progress bars while loading.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch_device = pick_device(device)
    family_hint = entry.family or detect_family(entry.source)
    torch_dtype = pick_dtype(entry.dtype or dtype, torch_device, family_hint)
    if torch_device.type == "cpu":
        # torch's threads spin while they wait; on a small machine they starve the event loop
        # and everything else. Leave one core free unless told otherwise.
        torch.set_num_threads(cpu_threads or max(1, (os.cpu_count() or 2) - 1))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    source = entry.source
    path = Path(source).expanduser()
    try:
        if source in TINY_SOURCES:
            folder = tiny_model_folder(data_dir, source)
            pipe = _from_folder(folder, kwargs, inpainting)
            identity = file_identity(_weight_files(folder), data_dir)
            log.warning(
                "Using the built-in %s model: random weights, so it makes noise, not "
                "pictures. Set EASEL_MODEL to a real model for images.",
                source,
            )
        elif path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
            pipe = _from_single_file(path, entry, kwargs, inpainting)
            identity = file_identity([path], data_dir)
        elif path.is_dir():
            pipe = _from_folder(path, kwargs, inpainting)
            identity = file_identity(_weight_files(path), data_dir)
        elif path.exists():
            raise ModelLoadError(
                f"Model '{entry.name}': {source} is a file, but not a .safetensors or .ckpt "
                "checkpoint."
            )
        elif source.startswith(("/", "./", "../", "~")) or path.suffix in SINGLE_FILE_SUFFIXES:
            raise ModelLoadError(f"Model '{entry.name}': there is no file or folder {source}.")
        else:
            # A Hub id: download (or find in the cache) first, so we know the exact revision.
            folder = Path(diffusers.DiffusionPipeline.download(source))
            pipe = _from_folder(folder, kwargs, inpainting)
            identity = f"{source}@{folder.name}"
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many kinds; the user needs one line
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(
            f"Could not load model '{entry.name}' from {source}{offline}: {first_line(exc, None)}"
        ) from exc

    family = _pipeline_family(pipe)
    if entry.family is not None and entry.family != family:
        raise ModelLoadError(
            f"Model '{entry.name}' is listed as {entry.family}, but {source} is {family}."
        )
    pipe.set_progress_bar_config(disable=True)
    if getattr(pipe, "safety_checker", None) is not None:
        # The image-side check is Easel's own hook (bot policy), not the pipeline's black square.
        pipe.safety_checker = None
    pipe.to(torch_device)
    # Batch invariance: the denoiser as above and the VAE one image at a time, so an image is
    # byte-identical whether it ran alone or batched with others.
    make_batch_invariant(pipe)
    pipe.vae.enable_slicing()
    unet = getattr(pipe, "unet", None)
    if torch_device.type == "cuda":
        # EASEL_COMPILE is the GPU fast path: cuDNN times its kernels once per shape and keeps
        # the fastest (the engine warms the common shapes up), which may pick others after a
        # restart; without it, the same kernels every time, for bit-exact reproduction.
        torch.backends.cudnn.benchmark = compile_unet
        if compile_unet:
            # Tensor cores take convolutions' activations channels-last (diffusers' guide
            # "Accelerate inference of text-to-image diffusion models").
            for part in (unet, pipe.vae):
                if part is not None:
                    part.to(memory_format=torch.channels_last)
    if compile_unet:
        # Compiled kernels are kept across restarts (inductor's FX graph cache) beside the
        # models, not in torch's default under /tmp (set already: importing diffusers asks for
        # it), unless the operator chose a place.
        if os.environ.get("TORCHINDUCTOR_CACHE_DIR") in (None, _default_compile_cache()):
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(data_dir) / "cache" / "compile")
        if unet is not None:
            pipe.unet = torch.compile(unet)
        else:
            pipe.transformer = torch.compile(pipe.transformer)
    img2img = None
    if not inpainting:
        img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
    native = entry.native_size or _native_side(pipe)
    size = _module_bytes(pipe)
    info = ModelInfo(
        name=entry.name,
        family=family,
        native_side=native,
        identity=identity,
        device=str(torch_device),
        dtype=str(torch_dtype).removeprefix("torch."),
        source=source,
        size_bytes=size,
    )
    log.info(
        "Model %s (%s, %spx, %.2f GB) on %s in %s.",
        entry.name,
        family,
        native,
        size / 1e9,
        info.device,
        info.dtype,
    )
    return LoadedModel(
        info=info,
        txt2img=pipe,
        img2img=img2img,
        scheduler_config=pipe.scheduler.config,
        device=torch_device,
        dtype=torch_dtype,
        size_bytes=size,
        inpainting=inpainting,
    )


def _default_compile_cache() -> str | None:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a private module: where it moved, leave the setting alone
        return None
    return default_cache_dir()


def _native_side(pipe: Any) -> int:
    denoiser = pipe.unet if getattr(pipe, "unet", None) is not None else pipe.transformer
    sample = getattr(denoiser.config, "sample_size", None)
    if isinstance(sample, int):
        return sample * int(pipe.vae_scale_factor)
    return int(getattr(pipe, "default_sample_size", 128)) * int(pipe.vae_scale_factor)


def load_model(
    name: str,
    *,
    data_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    compile_unet: bool = False,
    cpu_threads: int = 0,
) -> LoadedModel:
    """Load ``name`` (``EASEL_MODEL``: a Hub id, folder, file or tiny model) as a one-entry
    catalogue would (named by :func:`engine.catalogue.name_for_source`)."""
    entry = load_catalogue(None, name).default
    return load_entry(
        entry,
        data_dir=data_dir,
        device=device,
        dtype=dtype,
        compile_unet=compile_unet,
        cpu_threads=cpu_threads,
    )
