"""The tiny ControlNets and IP-Adapters work with diffusers' own pipelines on the tiny SD1 and
SDXL models, loaded through the real loading code (``load_model``, ``from_pretrained``,
``from_pipe``, ``load_ip_adapter``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import AutoPipelineForText2Image, ControlNetModel
from PIL import Image

from engine.control_maps import canny_map
from engine.loading import load_model
from engine.tiny_extras import (
    IP_ADAPTER_SUBFOLDER,
    IP_ADAPTER_WEIGHT_NAME,
    build_tiny_controlnet,
    build_tiny_ip_adapter,
)

MODELS = ["tiny", "tiny-sdxl"]


def generate(pipe, **kwargs) -> np.ndarray:
    generator = torch.Generator().manual_seed(7)
    return pipe(
        "a lighthouse at dusk",
        num_inference_steps=3,
        height=64,
        width=64,
        generator=generator,
        output_type="np",
        **kwargs,
    ).images[0]


def rectangle(inverted: bool = False) -> Image.Image:
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[16:48, 20:44] = (255, 200, 40)
    return Image.fromarray(255 - rgb if inverted else rgb)


@pytest.fixture(scope="module")
def base(request, model_dir):
    """The plain text-to-image pipeline of each tiny model (SD1 shared with other tests)."""
    loaded = {}

    def get(name: str):
        if name not in loaded:
            if name == "tiny":
                loaded[name] = request.getfixturevalue("tiny_model").txt2img
            else:
                loaded[name] = load_model(name, data_dir=model_dir).txt2img
        return loaded[name]

    return get


@pytest.fixture(scope="module", params=MODELS)
def control(request, base, model_dir):
    name = request.param
    controlnet = ControlNetModel.from_pretrained(
        build_tiny_controlnet(model_dir, data_dir=model_dir, model=name)
    )
    # The family's ControlNet pipeline (SD or SDXL) over the very same loaded modules.
    pipe = AutoPipelineForText2Image.from_pipe(base(name), controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    return base(name), pipe


def test_controlnet_shares_the_base_weights(control):
    plain, pipe = control
    assert "ControlNet" in type(pipe).__name__
    assert pipe.unet is plain.unet and pipe.vae is plain.vae
    assert pipe.text_encoder is plain.text_encoder


def test_control_map_changes_the_output(control):
    plain, pipe = control
    edges = generate(pipe, image=canny_map(rectangle()))
    blank = generate(pipe, image=Image.new("RGB", (64, 64)))
    assert np.abs(edges - blank).mean() > 0.005  # a different map, a different picture
    assert np.abs(edges - generate(plain)).mean() > 0.01


def test_control_weight_zero_equals_no_control(control):
    plain, pipe = control
    unsteered = generate(pipe, image=canny_map(rectangle()), controlnet_conditioning_scale=0.0)
    assert np.array_equal(unsteered, generate(plain))


@pytest.fixture(scope="module", params=MODELS)
def image_prompt(request, base, model_dir):
    name = request.param
    # Its own copy of the model: load_ip_adapter changes the U-Net's attention processors.
    pipe = load_model(name, data_dir=model_dir).txt2img
    pipe.load_ip_adapter(
        str(build_tiny_ip_adapter(model_dir, data_dir=model_dir, model=name)),
        subfolder=IP_ADAPTER_SUBFOLDER,
        weight_name=IP_ADAPTER_WEIGHT_NAME,
    )
    return base(name), pipe


def test_ip_adapter_image_steers_the_output(image_prompt):
    plain, pipe = image_prompt
    pipe.set_ip_adapter_scale(1.0)
    one = generate(pipe, ip_adapter_image=rectangle())
    other = generate(pipe, ip_adapter_image=rectangle(inverted=True))
    assert np.abs(one - other).mean() > 0.005
    assert np.array_equal(one, generate(pipe, ip_adapter_image=rectangle()))
    assert np.abs(one - generate(plain)).mean() > 0.005


def test_ip_adapter_scale_zero_equals_no_image_prompt(image_prompt):
    plain, pipe = image_prompt
    pipe.set_ip_adapter_scale(0.0)
    try:
        unsteered = generate(pipe, ip_adapter_image=rectangle())
    finally:
        pipe.set_ip_adapter_scale(1.0)
    assert np.array_equal(unsteered, generate(plain))
