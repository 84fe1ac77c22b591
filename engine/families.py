"""The model families Easel runs, and what differs between them. No torch here: the catalogue
and the bot read it cheaply.

A family fixes the denoiser (U-Net or transformer), the latent space (channels, packing), the
text encoders, and so which samplers, prompt features and options work. Defaults are each
family's published recommendations (the model cards and diffusers' pipeline defaults).
"""

from __future__ import annotations

from dataclasses import dataclass

# Sampler names of the prompt grammar. Noise-prediction (DDPM-trained) families take any of the
# classic schedulers; flow-matching families (SD3, FLUX) need flow-matching schedulers.
CLASSIC_SAMPLERS = (
    "euler",
    "euler_a",
    "heun",
    "dpmpp_2m",
    "dpmpp_2m_karras",
    "ddim",
    "unipc",
    "lcm",
)


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    native_side: int  # pixels per side it was trained at
    steps: int
    guidance: float
    sampler: str
    samplers: tuple[str, ...]
    latent_channels: int
    # Prompt weighting and >77-token prompts through compel (CLIP-only text conditioning).
    weighting: bool
    embeddings: bool  # textual-inversion embeddings load into its CLIP encoders
    tiling: bool  # seamless tiling by circular convolution padding (a convolutional denoiser)
    negative: bool = True  # the pipeline takes a negative prompt with classifier-free guidance
    # Width and height must be multiples of this: the VAE's 8, times the transformer's 2×2
    # patches for SD3 and FLUX (their pipelines' checks).
    size_multiple: int = 8
    # ControlNets and IP-Adapters as Easel runs them attach to a U-Net (diffusers'
    # ControlNetModel, IPAdapterMixin on UNet2DConditionModel); SD3's and FLUX's own variants
    # are other classes Easel does not load.
    controlnet: bool = True
    ip_adapter: bool = True
    # --sref: InstantStyle's style layer (up_blocks.0.attentions.1) was found on SDXL's U-Net;
    # SD 1.x and 2.x have no layer shown to carry style alone.
    style_reference: bool = False

    def size_problem(self, width: int, height: int, model: str) -> str | None:
        if width % self.size_multiple == 0 and height % self.size_multiple == 0:
            return None
        return (
            f"Model '{model}' ({self.label}) needs width and height in multiples of "
            f"{self.size_multiple}, not {width}×{height}."
        )

    def request_problem(
        self, model: str, *, sampler: str, width: int, height: int, tile: bool
    ) -> str | None:
        """Why a model of this family cannot run a request so made; None when it can."""
        problem = self.sampler_problem(sampler, model) or self.size_problem(width, height, model)
        if problem is None and tile and not self.tiling:
            problem = (
                f"--tile is not available for model '{model}' ({self.label}): "
                "seamless tiling needs a convolutional (U-Net) model."
            )
        return problem

    def operation_problem(
        self, model: str, operation: str, *, image_prompts: bool = False, style_only: bool = False
    ) -> str | None:
        """Why a model of this family cannot run ``operation`` (an engine.requests.Operation
        value) as asked; None when it can."""
        if operation == "control" and not self.controlnet:
            return (
                f"ControlNet is not available for model '{model}' ({self.label}); "
                "Easel runs ControlNets on Stable Diffusion 1.x, 2.x and XL."
            )
        if image_prompts and not self.ip_adapter:
            return (
                f"Image prompts are not available for model '{model}' ({self.label}); "
                "Easel runs IP-Adapters on Stable Diffusion 1.x, 2.x and XL."
            )
        if style_only and not self.style_reference:
            return (
                f"--sref is not available for model '{model}' ({self.label}): the adapter's "
                "style-only layer is known for Stable Diffusion XL; use an image prompt (--iw)."
            )
        return None

    def sampler_problem(self, sampler: str, model: str) -> str | None:
        if sampler in self.samplers:
            return None
        return (
            f"Model '{model}' ({self.label}) runs with the sampler"
            f"{'s' if len(self.samplers) > 1 else ''} {', '.join(self.samplers)}; "
            f"--sampler {sampler} is not available for it."
        )


FAMILIES: dict[str, Family] = {
    # SD 1.5 model card: 512×512; diffusers' StableDiffusionPipeline: 50 steps, guidance 7.5
    # (25 steps of Euler ancestral are the community's usual trade).
    "sd1": Family(
        "sd1",
        "Stable Diffusion 1.x",
        512,
        25,
        7.0,
        "euler_a",
        CLASSIC_SAMPLERS,
        4,
        weighting=True,
        embeddings=True,
        tiling=True,
    ),
    # SD 2.1 (768-v) model card: 768×768.
    "sd2": Family(
        "sd2",
        "Stable Diffusion 2.x",
        768,
        25,
        7.0,
        "euler_a",
        CLASSIC_SAMPLERS,
        4,
        weighting=True,
        embeddings=True,
        tiling=True,
    ),
    # SDXL base model card: 1024×1024; diffusers' default guidance 5.0.
    "sdxl": Family(
        "sdxl",
        "Stable Diffusion XL",
        1024,
        30,
        6.0,
        "euler_a",
        CLASSIC_SAMPLERS,
        4,
        weighting=True,
        embeddings=True,
        tiling=True,
        style_reference=True,
    ),
    # SD3 medium model card: 1024×1024, 28 steps, guidance 7.0, FlowMatchEulerDiscreteScheduler.
    "sd3": Family(
        "sd3",
        "Stable Diffusion 3",
        1024,
        28,
        7.0,
        "euler",
        ("euler", "heun"),
        16,
        weighting=False,
        embeddings=False,
        tiling=False,
        size_multiple=16,
        controlnet=False,
        ip_adapter=False,
    ),
    # FLUX.1 model cards: schnell 4 steps without guidance, dev 28-50 steps at (distilled)
    # guidance 3.5. Neither takes a negative prompt in its standard pipeline call.
    "flux": Family(
        "flux",
        "FLUX.1",
        1024,
        4,
        0.0,
        "euler",
        ("euler",),
        16,
        weighting=False,
        embeddings=False,
        tiling=False,
        negative=False,
        size_multiple=16,
        controlnet=False,
        ip_adapter=False,
    ),
}


def family(name: str) -> Family:
    return FAMILIES[name]
