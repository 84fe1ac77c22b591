"""Control maps from uploads: OpenCV edges and lines, a tiny Depth Anything through transformers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine.control_maps import (
    ControlKind,
    load_depth_model,
    make_control_map,
    parse_control_kind,
    prepare_control_image,
)
from engine.loading import ModelLoadError
from engine.requests import GenerationError
from engine.tiny_extras import build_tiny_depth_model

# A white rectangle on black: its edges are the lines x = 20, x = 43, y = 16, y = 47.
LEFT, RIGHT, TOP, BOTTOM = 20, 43, 16, 47


def rectangle(width: int = 64, height: int = 64) -> Image.Image:
    rgb = np.zeros((height, width, 3), np.uint8)
    rgb[TOP : BOTTOM + 1, LEFT : RIGHT + 1] = 255
    return Image.fromarray(rgb)


def gray(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image)
    assert image.mode == "RGB"
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all()
    return rgb[..., 0].astype(int)


def near_outline(width: int = 64, height: int = 64, margin: int = 1) -> np.ndarray:
    """True within ``margin`` pixels of the rectangle's outline."""
    y, x = np.mgrid[0:height, 0:width]
    inside_outer = (
        (x >= LEFT - margin) & (x <= RIGHT + margin) & (y >= TOP - margin) & (y <= BOTTOM + margin)
    )
    inside_inner = (
        (x > LEFT + margin) & (x < RIGHT - margin) & (y > TOP + margin) & (y < BOTTOM - margin)
    )
    return inside_outer & ~inside_inner


def test_canny_edges_are_where_the_edges_are():
    edges = gray(make_control_map("canny", rectangle()))
    assert edges.shape == (64, 64)
    assert set(np.unique(edges)) == {0, 255}
    assert not edges[~near_outline()].any()  # nothing away from the outline
    on = near_outline()
    for x in range(LEFT + 3, RIGHT - 2):  # every column crossing the top and bottom sides
        assert edges[TOP - 1 : TOP + 2, x].any() and edges[BOTTOM - 1 : BOTTOM + 2, x].any()
    for y in range(TOP + 3, BOTTOM - 2):  # every row crossing the left and right sides
        assert edges[y, LEFT - 1 : LEFT + 2].any() and edges[y, RIGHT - 1 : RIGHT + 2].any()
    assert edges[on].mean() > 60


def test_canny_sees_an_edge_between_colours_of_equal_brightness():
    # Red and green of the same grey (60): an edge detector on the grey image sees nothing.
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[:, :16] = (200, 0, 0)
    rgb[:, 16:] = (0, 102, 0)
    assert len(np.unique(np.asarray(Image.fromarray(rgb).convert("L")))) == 1
    edges = gray(make_control_map(ControlKind.CANNY, Image.fromarray(rgb)))
    assert edges[:, 15:17].any(axis=1).all() and not edges[:, :13].any()


def drawing() -> Image.Image:
    """A dark pen line on paper: a horizontal stroke at y = 20, x from 10 to 53."""
    image = Image.new("RGB", (64, 48), (235, 230, 220))
    ImageDraw.Draw(image).line([(10, 20), (53, 20)], fill=(30, 30, 30), width=2)
    return image


@pytest.mark.parametrize("kind", ["lineart", "scribble"])
def test_line_maps_are_white_lines_where_the_drawing_has_lines(kind):
    lines = gray(make_control_map(kind, drawing()))
    assert lines.shape == (48, 64)
    assert lines[19:22, 14:50].max(axis=0).min() > 100  # the stroke, along its whole length
    assert lines[30:, :].max() == 0 and lines[:12, :].max() == 0  # blank paper stays black
    if kind == "scribble":
        assert set(np.unique(lines)) == {0, 255}


def test_an_unknown_control_type_names_the_choices():
    with pytest.raises(GenerationError) as caught:
        make_control_map("blur", rectangle())
    assert str(caught.value) == (
        "Unknown control type 'blur'; choose one of canny, depth, lineart, scribble, pose."
    )
    assert parse_control_kind(" Canny ") is ControlKind.CANNY


def test_pose_says_it_is_not_available():
    with pytest.raises(GenerationError, match="Pose control is not available"):
        make_control_map("pose", rectangle())


@pytest.fixture(scope="module")
def depth_model(tmp_path_factory):
    return load_depth_model(build_tiny_depth_model(tmp_path_factory.mktemp("depth")))


def test_depth_map_from_a_tiny_depth_anything(depth_model):
    image = rectangle(80, 48)
    depth = gray(make_control_map("depth", image, depth_model=depth_model))
    assert depth.shape == (48, 80)
    assert depth.min() == 0 and depth.max() == 255  # scaled to the full range per image
    again = gray(make_control_map("depth", image, depth_model=depth_model))
    assert np.array_equal(depth, again)
    other = gray(make_control_map("depth", rectangle(80, 48).rotate(90), depth_model=depth_model))
    assert not np.array_equal(depth, other)


def test_depth_needs_a_model():
    with pytest.raises(GenerationError, match="needs a depth-estimation model"):
        make_control_map("depth", rectangle())


def test_a_bad_depth_model_source_is_named(tmp_path):
    with pytest.raises(ModelLoadError) as caught:
        load_depth_model(tmp_path / "nowhere")
    assert str(caught.value) == f"Depth model {tmp_path / 'nowhere'}: no such folder."
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError) as caught:
        load_depth_model(tmp_path / "empty")
    assert str(caught.value).startswith(f"Depth model {tmp_path / 'empty'}")
    assert "cannot load a depth-estimation model" in str(caught.value)
    assert "\n" not in str(caught.value)


def test_control_image_is_fitted_to_the_picture_or_refused():
    fitted = prepare_control_image(rectangle(128, 72), 96, 56)  # 16:9 rounded to multiples of 8
    assert fitted.size == (96, 56) and fitted.mode == "RGB"
    with pytest.raises(GenerationError) as caught:
        prepare_control_image(rectangle(64, 64), 96, 56)
    assert "control image is 64×64" in str(caught.value)
    assert "picture is 96×56" in str(caught.value)
