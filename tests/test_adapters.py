"""The tiny ControlNet and IP-Adapter work with diffusers' own pipelines on the tiny SD1 model,
loaded through the real loading code (``from_pretrained``, ``from_pipe``, ``load_ip_adapter``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import ControlNetModel, StableDiffusionControlNetPipeline
from PIL import Image

from engine.control_maps import canny_map
from engine.loading import load_model
from engine.tiny_extras import (
    IP_ADAPTER_SUBFOLDER,
    IP_ADAPTER_WEIGHT_NAME,
    build_tiny_controlnet,
    build_tiny_ip_adapter,
)


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
def control_pipe(tiny_model, model_dir):
    controlnet = ControlNetModel.from_pretrained(
        build_tiny_controlnet(model_dir, data_dir=model_dir)
    )
    pipe = StableDiffusionControlNetPipeline.from_pipe(tiny_model.txt2img, controlnet=controlnet)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_controlnet_shares_the_base_weights(control_pipe, tiny_model):
    base = tiny_model.txt2img
    assert control_pipe.unet is base.unet
    assert control_pipe.vae is base.vae and control_pipe.text_encoder is base.text_encoder


def test_control_map_changes_the_output(control_pipe, tiny_model):
    edges = generate(control_pipe, image=canny_map(rectangle()))
    blank = generate(control_pipe, image=Image.new("RGB", (64, 64)))
    plain = generate(tiny_model.txt2img)
    assert np.abs(edges - blank).mean() > 0.005  # a different map, a different picture
    assert np.abs(edges - plain).mean() > 0.01


def test_control_weight_zero_equals_no_control(control_pipe, tiny_model):
    controlled = generate(
        control_pipe, image=canny_map(rectangle()), controlnet_conditioning_scale=0.0
    )
    assert np.array_equal(controlled, generate(tiny_model.txt2img))


@pytest.fixture(scope="module")
def ip_pipe(model_dir):
    # Its own copy of the tiny model: load_ip_adapter changes the U-Net's attention processors.
    pipe = load_model("tiny", data_dir=model_dir).txt2img
    pipe.load_ip_adapter(
        str(build_tiny_ip_adapter(model_dir, data_dir=model_dir)),
        subfolder=IP_ADAPTER_SUBFOLDER,
        weight_name=IP_ADAPTER_WEIGHT_NAME,
    )
    return pipe


def test_ip_adapter_image_steers_the_output(ip_pipe, tiny_model):
    ip_pipe.set_ip_adapter_scale(1.0)
    one = generate(ip_pipe, ip_adapter_image=rectangle())
    other = generate(ip_pipe, ip_adapter_image=rectangle(inverted=True))
    again = generate(ip_pipe, ip_adapter_image=rectangle())
    assert np.abs(one - other).mean() > 0.01
    assert np.array_equal(one, again)
    assert np.abs(one - generate(tiny_model.txt2img)).mean() > 0.01


def test_ip_adapter_scale_zero_equals_no_image_prompt(ip_pipe, tiny_model):
    ip_pipe.set_ip_adapter_scale(0.0)
    try:
        steered = generate(ip_pipe, ip_adapter_image=rectangle())
    finally:
        ip_pipe.set_ip_adapter_scale(1.0)
    assert np.array_equal(steered, generate(tiny_model.txt2img))
