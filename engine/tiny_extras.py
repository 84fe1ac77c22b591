"""Tiny random-weight companions of the ``tiny`` model, for tests and the offline demo.

Each builder writes one component in the very layout users' real files have, so it goes through
the real loading code: an ESRGAN-family upscaler file (spandrel), a Depth Anything folder and a
BLIP captioning folder (transformers), a ControlNet folder made from the tiny U-Net and an
IP-Adapter (image encoder folder plus adapter weights, laid out as ``h94/IP-Adapter``) matching
the tiny U-Net's attention layers (diffusers). Weights are random but seeded, so every build is
the same; a finished build is reused (a marker with :data:`TINY_EXTRAS_VERSION`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

TINY_EXTRAS_VERSION = 1  # bump when a builder below changes, so old caches are rebuilt
MARKER = "easel_tiny_extra.json"

# h94/IP-Adapter keeps SD 1.5's adapters in models/ and their image encoder in models/image_encoder.
IP_ADAPTER_SUBFOLDER = "models"
IP_ADAPTER_WEIGHT_NAME = "ip-adapter_tiny.safetensors"
IP_ADAPTER_TOKENS = 4  # the plain IP-Adapter's image tokens (diffusers' ImageProjection)


def _build_once(folder: Path, build: Callable[[Path], None]) -> Path:
    """Run ``build`` into a temporary folder and move it into place, unless already built."""
    marker = folder / MARKER
    try:
        if json.loads(marker.read_text()).get("version") == TINY_EXTRAS_VERSION:
            return folder
    except (OSError, ValueError):
        pass
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    (tmp / MARKER).write_text(json.dumps({"version": TINY_EXTRAS_VERSION}))
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder


def build_tiny_upscaler(
    directory: Path, *, scale: int = 4, architecture: str = "compact", suffix: str = ".safetensors"
) -> Path:
    """A tiny super-resolution model file (``scale``× , ``.safetensors`` or ``.pth``).

    ``compact`` is RealESRGAN's compact network, which adds its output to a nearest-neighbour
    enlargement of the input; with its last layer scaled down it keeps the picture, so tests can
    see that each tile lands where it belongs. ``esrgan`` is the RRDB network of 4x-UltraSharp
    and RealESRGAN x4plus, in the original ("old-arch") key layout those files use; its random
    output is unrelated to the input, but a deep network's wide receptive field makes it the
    stricter test of tile seams.
    """
    import torch
    from safetensors.torch import save_file
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    folder = Path(directory) / f"tiny-upscaler-v{TINY_EXTRAS_VERSION}"
    target = folder / f"tiny-{architecture}-x{scale}{suffix}"
    if target.is_file():
        return target
    torch.manual_seed(0)
    if architecture == "compact":
        model = Compact(num_feat=8, num_conv=2, upscale=scale)
        with torch.no_grad():
            model.body[-1].weight.mul_(0.3)
            model.body[-1].bias.zero_()
    elif architecture == "esrgan":
        model = ESRGAN(in_nc=3, out_nc=3, num_filters=8, num_blocks=1, scale=scale)
        with torch.no_grad():
            # Mid-grey plus contrasty detail (std ≈ 19 levels), neither clamped to black nor
            # too faint for a seam to show.
            model.model[-1].weight.mul_(5)
            model.model[-1].bias.fill_(0.5)
    else:
        raise ValueError(f"unknown tiny upscaler architecture {architecture!r}")
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    if suffix == ".safetensors":
        save_file(state, tmp)
    else:
        torch.save(state, tmp)
    tmp.rename(target)
    return target


def build_tiny_depth_model(directory: Path) -> Path:
    """A tiny Depth Anything (DINOv2 backbone, DPT head) folder with its image processor."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import (
            DepthAnythingConfig,
            DepthAnythingForDepthEstimation,
            Dinov2Config,
            DPTImageProcessor,
        )

        backbone = Dinov2Config(
            hidden_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=32,
            patch_size=14,
            image_size=28,
            out_features=["stage1", "stage2"],
            reshape_hidden_states=False,
        )
        config = DepthAnythingConfig(
            backbone_config=backbone,
            reassemble_hidden_size=16,
            patch_size=14,
            neck_hidden_sizes=[8, 16],
            fusion_hidden_size=8,
            head_hidden_size=8,
            reassemble_factors=[2, 1],
        )
        torch.manual_seed(0)
        DepthAnythingForDepthEstimation(config).save_pretrained(tmp)
        # Depth Anything's own processor settings, at a tiny size: keep the aspect ratio, sides
        # a multiple of the 14-pixel patch, bicubic, ImageNet statistics.
        DPTImageProcessor(
            size={"height": 28, "width": 28},
            keep_aspect_ratio=True,
            ensure_multiple_of=14,
            resample=3,
            do_pad=False,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        ).save_pretrained(tmp)

    return _build_once(Path(directory) / "tiny-depth", build)


# A small generated vocabulary of caption words; the random decoder strings them together.
_CAPTION_TEXT = (
    "a an the of with on in and at by near under photo painting drawing portrait view red blue "
    "green yellow black white golden old small large cat dog house tree car sky sea mountain "
    "city street woman man girl boy flower field forest river night sunset light bird boat "
    "bridge window door road castle garden lake snow rain cloud"
)
CAPTION_WORDS = tuple(_CAPTION_TEXT.split())


def build_tiny_captioner(directory: Path) -> Path:
    """A tiny BLIP captioning folder (vision encoder, text decoder, BERT tokenizer, processor)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import (
            BertTokenizer,
            BlipConfig,
            BlipForConditionalGeneration,
            BlipImageProcessor,
            BlipProcessor,
        )

        # BLIP's tokenizer is BERT's with "[DEC]" added as the decoder's start token.
        tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CAPTION_WORDS, "[DEC]"]
        vocab = {token: i for i, token in enumerate(tokens)}
        tokenizer = BertTokenizer(vocab=vocab, additional_special_tokens=["[DEC]"])
        processor = BlipProcessor(
            image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
            tokenizer=tokenizer,
        )
        config = BlipConfig(
            text_config={
                "vocab_size": len(vocab),
                "hidden_size": 32,
                "encoder_hidden_size": 32,
                "intermediate_size": 37,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "max_position_embeddings": 64,
                "bos_token_id": vocab["[DEC]"],
                "eos_token_id": vocab["[SEP]"],
                "sep_token_id": vocab["[SEP]"],
                "pad_token_id": vocab["[PAD]"],
                # Larger than BERT's 0.02, so the random decoder's words depend on the image.
                "initializer_range": 0.2,
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_attention_heads": 4,
                "num_hidden_layers": 2,
                "image_size": 32,
                "patch_size": 8,
                # BLIP's vision default is 1e-10 (its weights always come from a checkpoint),
                # which would leave the random encoder blind to the image.
                "initializer_range": 0.02,
            },
            projection_dim=32,
        )
        torch.manual_seed(0)
        BlipForConditionalGeneration(config).save_pretrained(tmp)
        processor.save_pretrained(tmp)

    return _build_once(Path(directory) / "tiny-blip", build)


def _tiny_unet(data_dir: Path, model: str):
    from diffusers import UNet2DConditionModel

    from engine.tiny import tiny_model_folder

    return UNet2DConditionModel.from_pretrained(tiny_model_folder(Path(data_dir), model) / "unet")


def build_tiny_controlnet(directory: Path, *, data_dir: Path, model: str = "tiny") -> Path:
    """A ControlNet for a tiny U-Net model (``tiny``, ``tiny-sdxl``), made with
    ``ControlNetModel.from_unet`` from its U-Net and saved as a diffusers folder. ``data_dir`` is
    where the tiny model is (or will be) cached.

    A real ControlNet starts with zero convolutions and learns them; left at zero its output
    would be exactly nothing, so they are filled with seeded random values (as diffusers' own
    ControlNet tests do) to make the control map visibly matter.
    """

    def build(tmp: Path) -> None:
        import torch
        from diffusers import ControlNetModel

        torch.manual_seed(0)
        controlnet = ControlNetModel.from_unet(
            _tiny_unet(data_dir, model), conditioning_embedding_out_channels=(8, 8, 16, 16)
        )
        embedding = controlnet.controlnet_cond_embedding
        zero_convs = [*controlnet.controlnet_down_blocks, controlnet.controlnet_mid_block]
        with torch.no_grad():
            # He initialisation keeps the map's signal alive through the embedding's eight
            # convolutions (PyTorch's default init all but erases it), then a strong last layer.
            for conv in embedding.modules():
                if isinstance(conv, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                    torch.nn.init.zeros_(conv.bias)
            torch.nn.init.normal_(embedding.conv_out.weight, std=1.0)
            for conv in zero_convs:
                torch.nn.init.normal_(conv.weight, std=0.5)
                torch.nn.init.normal_(conv.bias, std=0.5)
        controlnet.save_pretrained(tmp, safe_serialization=True)

    return _build_once(Path(directory) / f"{model}-controlnet", build)


def build_tiny_ip_adapter(directory: Path, *, data_dir: Path, model: str = "tiny") -> Path:
    """A plain IP-Adapter for a tiny U-Net model (``tiny``, ``tiny-sdxl``), laid out as
    ``h94/IP-Adapter`` (whose SDXL adapters use the same layout in ``sdxl_models/``): load it with
    ``pipe.load_ip_adapter(folder, subfolder=IP_ADAPTER_SUBFOLDER,
    weight_name=IP_ADAPTER_WEIGHT_NAME)`` (the image encoder is ``models/image_encoder``).

    The weights follow the original IP-Adapter's file: ``image_proj.*`` projects the image
    embedding to four extra tokens; ``ip_adapter.{n}.to_k_ip/to_v_ip`` are the key and value
    projections for them, numbered 1, 3, 5, ... over the U-Net's cross-attention layers in
    ``unet.attn_processors`` order (the original numbered all attention processors, and only the
    odd ones, ``attn2``, carry weights; diffusers' loader reads them in that order).
    """

    def build(tmp: Path) -> None:
        import torch
        from safetensors.torch import save_file
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        unet = _tiny_unet(data_dir, model)
        cross_dim = unet.config.cross_attention_dim
        torch.manual_seed(0)
        encoder = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=37,
                num_attention_heads=4,
                num_hidden_layers=2,
                image_size=32,
                patch_size=8,
                projection_dim=32,
            )
        )
        models = tmp / IP_ADAPTER_SUBFOLDER
        encoder.save_pretrained(models / "image_encoder")

        embed_dim = encoder.config.projection_dim
        proj = torch.nn.Linear(embed_dim, IP_ADAPTER_TOKENS * cross_dim)
        norm = torch.nn.LayerNorm(cross_dim)
        state = {
            "image_proj.proj.weight": proj.weight,
            "image_proj.proj.bias": proj.bias,
            "image_proj.norm.weight": norm.weight,
            "image_proj.norm.bias": norm.bias,
        }
        cross_attention = [n for n in unet.attn_processors if n.endswith("attn2.processor")]
        for i, name in enumerate(cross_attention):
            attention = unet.get_submodule(name.removesuffix(".processor"))
            hidden = attention.to_k.out_features
            for kind in ("to_k_ip", "to_v_ip"):
                layer = torch.nn.Linear(cross_dim, hidden, bias=False)
                state[f"ip_adapter.{2 * i + 1}.{kind}.weight"] = layer.weight
        save_file(
            {k: v.detach().contiguous() for k, v in state.items()},
            models / IP_ADAPTER_WEIGHT_NAME,
        )

    return _build_once(Path(directory) / f"{model}-ip-adapter", build)


def build_tiny_inpaint_model(directory: Path, *, data_dir: Path) -> Path:
    """A dedicated inpainting checkpoint for the tiny SD 1.x model, as a diffusers folder: the
    tiny model's text encoder and VAE with a U-Net of its shape taking 9 input channels (the
    latents, the mask and the masked image's latents), as stable-diffusion-inpainting does."""

    def build(tmp: Path) -> None:
        import torch
        from diffusers import (
            StableDiffusionInpaintPipeline,
            StableDiffusionPipeline,
            UNet2DConditionModel,
        )

        from engine.tiny import tiny_model_folder

        base = StableDiffusionPipeline.from_pretrained(tiny_model_folder(Path(data_dir), "tiny"))
        config = {**base.unet.config, "in_channels": 9}
        torch.manual_seed(0)
        unet = UNet2DConditionModel.from_config(config)
        pipe = StableDiffusionInpaintPipeline(
            vae=base.vae,
            text_encoder=base.text_encoder,
            tokenizer=base.tokenizer,
            unet=unet,
            scheduler=base.scheduler,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
        pipe.save_pretrained(tmp, safe_serialization=True)

    return _build_once(Path(directory) / "tiny-inpaint", build)


def build_tiny_segmenter(directory: Path) -> Path:
    """A tiny CLIPSeg folder (CLIP text and vision encoders, the segmentation decoder, a
    byte-level CLIP tokenizer and CIDAS/clipseg-rd64-refined's image processor settings at a
    tiny size), loaded as the real one is (``CLIPSegForImageSegmentation``)."""

    def build(tmp: Path) -> None:
        import torch
        from transformers import (
            CLIPSegConfig,
            CLIPSegForImageSegmentation,
            CLIPSegProcessor,
            CLIPTokenizer,
            ViTImageProcessor,
        )

        from engine.tiny import _vocab

        vocab = _vocab()
        tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
        config = CLIPSegConfig(
            text_config={
                "vocab_size": len(vocab),
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_attention_heads": 4,
                "num_hidden_layers": 3,
                "max_position_embeddings": 77,
                "bos_token_id": vocab["<|startoftext|>"],
                "eos_token_id": vocab["<|endoftext|>"],
                "pad_token_id": vocab["<|endoftext|>"],
            },
            vision_config={
                "hidden_size": 32,
                "intermediate_size": 37,
                "num_attention_heads": 4,
                "num_hidden_layers": 3,
                "image_size": 32,
                "patch_size": 8,
            },
            projection_dim=32,
            extract_layers=(0, 1, 2),  # every layer of the three (the real one taps 3, 6, 9)
            reduce_dim=16,
            decoder_num_attention_heads=4,
            decoder_intermediate_size=32,
        )
        torch.manual_seed(0)
        CLIPSegForImageSegmentation(config).save_pretrained(tmp)
        # CIDAS/clipseg-rd64-refined's preprocessor: resize (bilinear), ImageNet statistics.
        image_processor = ViTImageProcessor(
            size={"height": 32, "width": 32},
            resample=2,
            image_mean=[0.485, 0.456, 0.406],
            image_std=[0.229, 0.224, 0.225],
        )
        CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(tmp)

    return _build_once(Path(directory) / "tiny-clipseg", build)


def build_tiny_preview_decoder(directory: Path, latent_channels: int = 4) -> Path:
    """A tiny TAESD (diffusers' AutoencoderTiny) folder for the tiny model's latents."""

    def build(tmp: Path) -> None:
        import torch
        from diffusers import AutoencoderTiny

        torch.manual_seed(0)
        AutoencoderTiny(
            encoder_block_out_channels=(8, 8, 8, 8),
            decoder_block_out_channels=(8, 8, 8, 8),
            num_encoder_blocks=(1, 1, 1, 1),
            num_decoder_blocks=(1, 1, 1, 1),
            latent_channels=latent_channels,
        ).save_pretrained(tmp)

    return _build_once(Path(directory) / f"tiny-taesd-{latent_channels}", build)
