"""Loading a model: a Hub id, a local diffusers folder, a single ``.safetensors``/``.ckpt`` file, or
``tiny``. The text-to-image and image-to-image pipelines share one set of weights (``from_pipe``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import diffusers
import torch
import transformers
from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

from engine.requests import ModelInfo
from engine.tiny import tiny_model_folder

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


class ModelLoadError(Exception):
    """The configured model cannot be loaded; ``str()`` says why and what to do."""


@dataclass
class LoadedModel:
    info: ModelInfo
    txt2img: Any
    img2img: Any
    scheduler_config: Any
    device: torch.device
    dtype: torch.dtype

    @property
    def family(self) -> str:
        return self.info.family


class SharedTimestepEmbedding(torch.nn.Module):
    """Every image in a pipeline call is at the same timestep, so embed it once.

    Cheaper, and it keeps results independent of the batch size: a ``(batch, C)`` linear layer
    can round differently for different batch sizes on CPU (MKL picks kernels by shape), while
    the ``(1, C)`` embedding broadcasts over the batch in every ResNet block.
    """

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, sample: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        if (
            condition is None
            and sample.shape[0] > 1
            and torch.equal(sample, sample[:1].expand_as(sample))
        ):
            return self.inner(sample[:1])
        return self.inner(sample, condition)


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


def pick_dtype(setting: str, device: torch.device) -> torch.dtype:
    if setting == "auto":
        # Half precision halves memory and doubles speed on GPUs; CPUs are slow in it.
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
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
        if p.suffix in (".safetensors", ".bin", ".ckpt", ".json", ".txt") and p.is_file()
    ]


def _family(pipe: Any, name: str) -> str:
    if name == "tiny":
        return "tiny"
    if "XL" in type(pipe).__name__:
        return "sdxl"
    return "sd2" if pipe.unet.config.cross_attention_dim == 1024 else "sd1"


def _is_sdxl_file(path: Path) -> bool:
    if path.suffix != ".safetensors":
        return False
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return any(k.startswith("conditioner.embedders.1") for k in f.keys())  # noqa: SIM118


def load_model(
    name: str,
    *,
    data_dir: Path,
    device: str = "auto",
    dtype: str = "auto",
    compile_unet: bool = False,
    cpu_threads: int = 0,
) -> LoadedModel:
    """Load ``name`` and prepare it for batch-invariant, shared-weight generation."""
    # A server's log is no terminal: no progress bars while loading.
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    torch_device = pick_device(device)
    torch_dtype = pick_dtype(dtype, torch_device)
    if torch_device.type == "cpu":
        # torch's threads spin while they wait; on a small machine they starve the event loop
        # and everything else. Leave one core free unless told otherwise.
        torch.set_num_threads(cpu_threads or max(1, (os.cpu_count() or 2) - 1))
    kwargs: dict[str, Any] = {"dtype": torch_dtype}
    path = Path(name).expanduser()
    try:
        if name == "tiny":
            folder = tiny_model_folder(data_dir)
            pipe = AutoPipelineForText2Image.from_pretrained(folder, **kwargs)
            identity = file_identity(_weight_files(folder), data_dir)
            log.warning(
                "Using the built-in tiny model: random weights, so it makes noise, not "
                "pictures. Set EASEL_MODEL to a real model for images."
            )
        elif path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
            cls = (
                diffusers.StableDiffusionXLPipeline
                if _is_sdxl_file(path)
                else diffusers.StableDiffusionPipeline
            )
            pipe = cls.from_single_file(str(path), **kwargs)
            identity = file_identity([path], data_dir)
        elif path.is_dir():
            pipe = AutoPipelineForText2Image.from_pretrained(path, **kwargs)
            identity = file_identity(_weight_files(path), data_dir)
        elif path.exists():
            raise ModelLoadError(
                f"EASEL_MODEL {name!r} is a file, but not a .safetensors or .ckpt checkpoint."
            )
        else:
            # A Hub id: download (or find in the cache) first, so we know the exact revision.
            folder = Path(diffusers.DiffusionPipeline.download(name))
            pipe = AutoPipelineForText2Image.from_pretrained(folder, **kwargs)
            identity = f"{name}@{folder.name}"
    except ModelLoadError:
        raise
    except Exception as exc:  # diffusers raises many kinds; the user needs one line
        offline = " (offline: HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        raise ModelLoadError(f"Could not load model {name!r}{offline}: {exc}") from exc

    pipe.set_progress_bar_config(disable=True)
    if getattr(pipe, "safety_checker", None) is not None:
        # The image-side check is Easel's own hook (bot policy), not the pipeline's black square.
        pipe.safety_checker = None
    pipe.to(torch_device)
    # Batch invariance: the timestep embedding once per step and the VAE one image at a time,
    # so an image is byte-identical whether it ran alone or batched with others.
    pipe.unet.time_embedding = SharedTimestepEmbedding(pipe.unet.time_embedding)
    pipe.vae.enable_slicing()
    if torch_device.type == "cuda":
        torch.backends.cudnn.benchmark = False  # the same kernels every time, for reproducibility
    if compile_unet:
        pipe.unet = torch.compile(pipe.unet)
    img2img = AutoPipelineForImage2Image.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    family = _family(pipe, name)
    native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    info = ModelInfo(
        name=name,
        family=family,
        native_side=native,
        identity=identity,
        device=str(torch_device),
        dtype=str(torch_dtype).removeprefix("torch."),
    )
    log.info("Model %s (%s, %spx) on %s in %s.", name, family, native, info.device, info.dtype)
    return LoadedModel(
        info=info,
        txt2img=pipe,
        img2img=img2img,
        scheduler_config=pipe.scheduler.config,
        device=torch_device,
        dtype=torch_dtype,
    )
