"""The tiny models: the real architectures of each family at toy width, with random weights and
generated tokenizer vocabularies. They make noise, not pictures — in a fraction of a second on a
CPU and with no network — so the tests and the offline demo exercise the very same diffusers
classes as real models.

* ``tiny``: Stable Diffusion 1.x (CLIP text encoder, U-Net, VAE with an 8× downsampling);
* ``tiny-sdxl``: SDXL (two CLIP text encoders, one with projection; a U-Net with the
  text-and-time added conditioning);
* ``tiny-sd3``: Stable Diffusion 3 (two CLIP encoders, an MMDiT transformer, a 16-channel VAE,
  flow matching; without the optional T5 encoder, as SD3 allows);
* ``tiny-flux``: FLUX.1 schnell-style (CLIP and T5 encoders, the FLUX transformer, a 16-channel
  VAE whose latents the pipeline packs 2×2, flow matching with dynamic shifting).

Each is built once, deterministically (fixed seed), and cached as a diffusers folder in the data
directory. Component sizes follow diffusers' own pipeline tests (``tests/pipelines/...``).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

# Bump a family's version when its architecture below changes, so old caches are rebuilt.
TINY_VERSIONS = {"tiny": 1, "tiny-sdxl": 1, "tiny-sd3": 1, "tiny-flux": 1}
TINY_VERSION = TINY_VERSIONS["tiny"]
NATIVE_SIDE = 64  # the pixel size the tiny models "were trained" at; aspect ratios scale from it
TINY_MODELS = tuple(TINY_VERSIONS)


def _vocab() -> dict[str, int]:
    # CLIP's BPE marks the last character of a word with "</w>". With no merges every word splits
    # into single bytes, so the vocabulary is each byte's printable form, with and without "</w>".
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    return vocab


def _clip(projection: bool = False) -> tuple[Any, Any]:
    """A byte-level CLIP tokenizer and a 2-layer, 32-wide CLIP text encoder."""
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    vocab = _vocab()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    config = CLIPTextConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        max_position_embeddings=77,
        projection_dim=32,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
    )
    model = CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)
    return tokenizer, model


def _t5() -> tuple[Any, Any]:
    """A character-level T5 tokenizer (a Unigram model over printable ASCII, built with the
    ``tokenizers`` library) and a 2-layer, 32-wide T5 encoder."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import T5Config, T5EncoderModel, T5TokenizerFast

    chars = [chr(c) for c in range(32, 127)]
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    pieces += [("▁" + c, -1.0) for c in chars] + [(c, -2.0) for c in chars]
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace()
    backend.decoder = decoders.Metaspace()
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    tokenizer = T5TokenizerFast(
        tokenizer_object=backend,
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_ids=0,
        model_max_length=512,
    )
    encoder = T5EncoderModel(
        T5Config(
            vocab_size=len(pieces),
            d_model=32,
            d_ff=37,
            d_kv=8,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    )
    return tokenizer, encoder


def _vae(latent_channels: int, **kw: Any) -> Any:
    from diffusers import AutoencoderKL

    # Four blocks: the same 8× downsampling as the real VAEs, so sizes behave as with real models.
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=latent_channels,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=NATIVE_SIDE,
        **kw,
    )


def _sd_scheduler() -> Any:
    from diffusers import EulerAncestralDiscreteScheduler

    return EulerAncestralDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
    )


def _build_sd1() -> Any:
    import torch
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    vocab = _vocab()
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    # Kept exactly as first built (no projection_dim), so tiny's images never change.
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
        )
    )
    unet = UNet2DConditionModel(
        sample_size=NATIVE_SIDE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    return StableDiffusionPipeline(
        vae=_vae(4),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=_sd_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _build_sdxl() -> Any:
    import torch
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    tokenizer, text_encoder = _clip()
    tokenizer_2, text_encoder_2 = _clip(projection=True)
    unet = UNet2DConditionModel(
        sample_size=NATIVE_SIDE // 8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1),
        # 6 size/crop numbers × 8 + the second encoder's 32-wide pooled projection.
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=64,  # both encoders' hidden states side by side: 32 + 32
        norm_num_groups=8,
    )
    return StableDiffusionXLPipeline(
        vae=_vae(4, force_upcast=False),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        unet=unet,
        scheduler=_sd_scheduler(),
    )


def _build_sd3() -> Any:
    import torch
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )

    torch.manual_seed(0)
    tokenizer, text_encoder = _clip(projection=True)
    tokenizer_2, text_encoder_2 = _clip(projection=True)
    transformer = SD3Transformer2DModel(
        sample_size=NATIVE_SIDE // 8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        caption_projection_dim=32,
        joint_attention_dim=64,  # the CLIP hidden states side by side (32 + 32)
        pooled_projection_dim=64,  # both pooled projections (32 + 32)
        pos_embed_max_size=16,
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),  # SD3's own shift
        vae=_vae(
            16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.0609,
            scaling_factor=1.5305,
        ),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        text_encoder_3=None,
        tokenizer_3=None,
    )


def _build_flux() -> Any:
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(0)
    tokenizer, text_encoder = _clip()
    tokenizer_2, text_encoder_2 = _t5()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels packed 2×2
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # the T5 width
        pooled_projection_dim=32,  # the CLIP width
        guidance_embeds=False,  # schnell: no distilled guidance input
        axes_dims_rope=(4, 4, 8),  # sums to attention_head_dim
    )
    # FLUX.1-schnell's scheduler configuration (model_index of black-forest-labs/FLUX.1-schnell).
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=1.0,
        use_dynamic_shifting=False,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return FluxPipeline(
        transformer=transformer,
        scheduler=scheduler,
        vae=_vae(
            16,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1159,
            scaling_factor=0.3611,
        ),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
    )


_BUILDERS: dict[str, Callable[[], Any]] = {
    "tiny": _build_sd1,
    "tiny-sdxl": _build_sdxl,
    "tiny-sd3": _build_sd3,
    "tiny-flux": _build_flux,
}


def build_tiny(folder: Path, name: str = "tiny") -> Path:
    """Write the tiny model ``name`` to ``folder`` (a diffusers pipeline folder) and return it."""
    pipe = _BUILDERS[name]()
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "easel_tiny.json").write_text(json.dumps({"version": TINY_VERSIONS[name]}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def build_tiny_lora(
    data_dir: Path, folder: Path, name: str, model: str = "tiny", seed: int = 1
) -> Path:
    """A random LoRA for the tiny model ``model`` (rank 4, on the denoiser's attention
    projections; its up weights random, not zero, so that it changes the output), saved into
    ``folder`` as diffusers saves trained LoRAs. For tests, benchmarks and the offline demo."""
    import torch
    from diffusers import DiffusionPipeline
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = DiffusionPipeline.from_pretrained(tiny_model_folder(data_dir, model))
    unet = getattr(pipe, "unet", None)
    denoiser = unet if unet is not None else pipe.transformer
    torch.manual_seed(seed)
    denoiser.add_adapter(
        LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    )
    for key, weight in denoiser.named_parameters():
        if "lora_B" in key:
            torch.nn.init.normal_(weight, std=0.5)
    part = "unet_lora_layers" if unet is not None else "transformer_lora_layers"
    layers = {part: get_peft_model_state_dict(denoiser)}
    Path(folder).mkdir(parents=True, exist_ok=True)
    type(pipe).save_lora_weights(folder, weight_name=f"{name}.safetensors", **layers)
    return Path(folder) / f"{name}.safetensors"


def tiny_model_folder(data_dir: Path, name: str = "tiny") -> Path:
    """The cached tiny model ``name``, built on first use."""
    if name not in _BUILDERS:
        raise KeyError(name)
    folder = Path(data_dir) / "models" / name
    marker = folder / "easel_tiny.json"
    try:
        if json.loads(marker.read_text()).get("version") == TINY_VERSIONS[name]:
            return folder
    except (OSError, ValueError):
        pass
    log.info("Building the tiny random-weight model %s in %s (once).", name, folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    return build_tiny(folder, name)
