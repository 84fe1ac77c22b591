"""ControlNet as an engine operation on the tiny SD 1.x and SDXL models: tiny random ControlNets
loaded through the real loading code, sharing the model's weights, steering the picture."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from engine.catalogue import ExtraModels, load_catalogue
from engine.control_maps import canny_map
from engine.loading import load_model
from engine.pool import ModelPool
from engine.requests import (
    GenerationError,
    GenerationRequest,
    InvalidRequest,
    NotAvailable,
    Operation,
    image_identity,
)
from tests.engine_ops_support import (
    TIMEOUT,
    assert_batched_equals_alone,
    images,
    started,
)
from tests.engine_ops_support import request as base_request


def rectangle(width: int = 64, height: int = 64, left: int | None = None) -> Image.Image:
    rgb = np.zeros((height, width, 3), np.uint8)
    left = width // 3 if left is None else left
    rgb[height // 4 : 3 * height // 4, left : left + width // 3] = (255, 200, 40)
    return Image.fromarray(rgb)


def request(model="tiny", seeds=(1, 2), **kw) -> GenerationRequest:
    values = dict(
        operation=Operation.CONTROL, control="canny", control_images=(canny_map(rectangle()),)
    )
    return base_request(model, seeds, **{**values, **kw})


def uncontrolled(model: str) -> GenerationRequest:
    """The same picture asked for without a ControlNet."""
    return request(model, operation=Operation.TXT2IMG, control="", control_images=())


@pytest.fixture(scope="module", params=["tiny", "tiny-sdxl"])
def setup(request, model_dir):
    """An engine over its own copy of the model (other modules' tests share the tiny one)."""
    model = load_model(request.param, data_dir=model_dir)
    pool = ModelPool.of(model, data_dir=model_dir, extras=ExtraModels.tiny())
    engine = started(pool)
    yield request.param, pool, engine
    engine.stop()


def test_the_control_map_changes_the_output(setup):
    name, _, engine = setup
    edges = images(engine, request(name))
    other = images(engine, request(name, control_images=(canny_map(rectangle(left=4)),)))
    blank = images(engine, request(name, control_images=(Image.new("RGB", (64, 64)),)))
    plain = images(engine, uncontrolled(name))
    assert edges != blank and edges != plain and edges != other
    assert edges == images(engine, request(name))  # the same request, the same bytes


def test_weight_zero_equals_no_control(setup):
    name, _, engine = setup
    plain = uncontrolled(name)
    assert images(engine, request(name, control_weight=0.0)) == images(engine, plain)
    assert images(engine, request(name, control_weight=0.5)) != images(engine, plain)


def test_the_controlnet_shares_the_model_weights_and_is_recorded(setup):
    name, pool, engine = setup
    result = engine.submit(request(name, control_weight=0.8)).result(TIMEOUT)
    _, model, runner = pool.acquire(name)
    pipe, _ = runner.companions.controls.pipeline("canny")
    assert "ControlNet" in type(pipe).__name__
    assert pipe.unet is model.txt2img.unet and pipe.vae is model.txt2img.vae
    repro = result.repro
    assert (repro["operation"], repro["control"], repro["control_weight"]) == (
        "control",
        "canny",
        0.8,
    )
    assert repro["controlnet"] == "tiny" and repro["controlnet_identity"].startswith("sha256:")
    assert repro["control_images"] == [image_identity(canny_map(rectangle()))]


def test_batched_control_jobs_equal_the_same_jobs_alone(setup):
    name, pool, engine = setup
    shared = (canny_map(rectangle()),)  # jobs batch when they share their inputs
    jobs = [
        request(name, seeds=(3,), owner="a", control_images=shared),
        request(name, seeds=(4, 5), owner="b", control_images=shared),
    ]
    assert_batched_equals_alone(pool, engine, jobs)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"control_images": (canny_map(rectangle(96, 48)),)},
            "The control image is 96×48 (aspect 2.00), but the picture is 64×64 (1.00)",
        ),
        ({"control": "edges"}, "Unknown control type 'edges'; choose one of canny, depth"),
        ({"control_images": ()}, "ControlNet needs a control image"),
        ({"control_weight": 2.5}, "The control weight (--cw) goes from 0 to 2"),
    ],
)
def test_bad_control_requests_are_refused_before_queueing(setup, change, message):
    name, pool, engine = setup
    bad = request(name, **change)
    with pytest.raises(InvalidRequest, match=re.escape(message)):
        pool.check(bad)
    with pytest.raises(GenerationError, match=re.escape(message)):
        engine.submit(bad)


def test_control_that_is_not_configured_or_not_available_says_so(model_dir, tiny_model):
    pool = ModelPool.of(tiny_model, data_dir=model_dir)  # no ControlNets configured
    with pytest.raises(NotAvailable, match="no canny ControlNet is configured"):
        pool.check(request())
    flux = ModelPool(
        load_catalogue(None, "tiny-flux"), data_dir=model_dir, extras=ExtraModels.tiny()
    )
    with pytest.raises(NotAvailable, match="ControlNet is not available for model 'tiny-flux'"):
        flux.check(request("tiny-flux", sampler="euler"))
    # Pose: no detector installs with Easel, and no pose ControlNet is configured by default.
    with pytest.raises(NotAvailable, match="no pose ControlNet"):
        ModelPool.of(tiny_model, data_dir=model_dir, extras=ExtraModels.tiny()).check(
            request(control="pose")
        )
