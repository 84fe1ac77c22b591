"""/describe's captioner: a tiny BLIP loaded through transformers, several decodings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.describe import clean_caption, load_captioner
from engine.loading import ModelLoadError
from engine.requests import GenerationError
from engine.tiny_extras import build_tiny_captioner, build_tiny_depth_model


@pytest.fixture(scope="module")
def captioner_folder(tmp_path_factory):
    return build_tiny_captioner(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="module")
def captioner(captioner_folder):
    return load_captioner(captioner_folder)


def photo(seed: int = 0) -> Image.Image:
    rgb = np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(rgb)


def key(caption: str) -> str:
    return " ".join("".join(c if c.isalnum() else " " for c in caption.lower()).split())


def test_four_distinct_candidate_prompts(captioner):
    prompts = captioner.describe(photo(), 4)
    assert len(prompts) == 4
    assert all(p.strip() == p and p for p in prompts)
    assert len({key(p) for p in prompts}) == 4


def test_descriptions_are_deterministic(captioner):
    assert captioner.describe(photo(), 4) == captioner.describe(photo(), 4)
    before = torch.random.get_rng_state()
    captioner.describe(photo(1), 4)
    assert torch.equal(before, torch.random.get_rng_state())  # nobody else's randomness moved


def test_another_image_is_described_differently(captioner):
    assert captioner.describe(photo(0), 4) != captioner.describe(photo(2), 4)


def test_fewer_distinct_captions_are_not_padded_with_repeats(captioner_folder):
    # A captioner that nearly always stops at once: its best caption is empty and every sampled
    # one too; only beam search's forced alternatives ("bridge", ...) say anything.
    mute = load_captioner(captioner_folder)
    stop = mute.processor.tokenizer.sep_token_id
    with torch.no_grad():
        mute.model.text_decoder.cls.predictions.bias[stop] = 1e4
    prompts = mute.describe(photo(), 4)
    assert 0 < len(prompts) < 4
    assert "" not in prompts and len({key(p) for p in prompts}) == len(prompts)


def test_bad_requests_and_sources(captioner, tmp_path):
    with pytest.raises(GenerationError, match="at least one description"):
        captioner.describe(photo(), 0)
    with pytest.raises(ModelLoadError, match="no-blip-here: no such folder"):
        load_captioner(tmp_path / "no-blip-here")
    depth_folder = build_tiny_depth_model(tmp_path)  # a model, but not a captioner
    with pytest.raises(ModelLoadError) as caught:
        load_captioner(depth_folder)
    assert str(caught.value).startswith(
        f"Caption model {depth_folder}: not a BLIP captioning model; "
    )
    assert "its configuration names 'depth_anything'" in str(caught.value)


def test_captions_are_tidied_into_prompts():
    assert clean_caption("arafed man in a hat .") == "man in a hat"
    assert clean_caption("  there is a dog   on it ' s bed. ") == "there is a dog on it's bed"
