"""Prompt weighting and long prompts: A1111 emphasis through compel, 77-token chunks, ``::``
multi-prompts, and what SD3 and FLUX do with them, on the tiny models' real text encoders."""

from __future__ import annotations

import pytest
import torch

from engine.catalogue import Catalogue, ModelEntry
from engine.loading import load_model
from engine.pool import ModelPool
from engine.prompt_text import Fragment, parse_emphasis, plain_text, split_multi_prompt
from engine.requests import GenerationRequest, Operation
from engine.weighting import make_encoder
from engine.worker import Engine

TIMEOUT = 60
LONG = ", ".join(f"a red fox number {i}" for i in range(10)) + ", at dusk"  # 157 tokens


@pytest.fixture(scope="module")
def models(model_dir):
    return {name: load_model(name, data_dir=model_dir) for name in ("tiny", "tiny-sdxl")}


def tokens_of(model, text: str) -> list[str]:
    return model.txt2img.tokenizer.tokenize(text)


def embed(model, prompt: str, negative: str = "", cfg: bool = False):
    with torch.inference_mode():
        return make_encoder(model).encode(prompt, negative, cfg)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("a (red:1.5) fox", [("a ", 1.0), ("red", 1.5), (" fox", 1.0)]),
        ("a ((red)) [fox]", [("a ", 1.0), ("red", 1.21), ("fox", 0.909091)]),
        ("x (a [b] c:1.3) d", [("x ", 1.0), ("a ", 1.3), ("b", 1.181818), (" c", 1.3), (" d", 1)]),
        (r"a \(red\) fox", [("a (red) fox", 1.0)]),
        ("a (red fox", [("a ", 1.0), ("red fox", 1.1)]),  # unclosed: to the end
        ("a red) fox at 10:30", [("a red) fox at 10:30", 1.0)]),  # unmatched: literal
    ],
)
def test_emphasis_syntax(text, fragments):
    assert parse_emphasis(text) == [Fragment(t, w) for t, w in fragments]


def test_multi_prompt_syntax():
    assert split_multi_prompt("a cat::2 a hat::1") == [Fragment("a cat", 2), Fragment("a hat", 1)]
    assert split_multi_prompt("hot:: dog") == [Fragment("hot", 1), Fragment("dog", 1)]
    assert split_multi_prompt("still life:: fruit::-0.5")[1] == Fragment("fruit", -0.5)
    assert plain_text("a (red:1.5) fox::2 [hat]") == "a red fox hat"


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_unweighted_prompts_encode_exactly_as_diffusers_does(models, name):
    model = models[name]
    encoded = embed(model, "a lighthouse at dusk", "blurry", cfg=True)
    with torch.inference_mode():
        reference = model.txt2img.encode_prompt(
            prompt="a lighthouse at dusk",
            device=model.device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=True,
            negative_prompt="blurry",
        )
    assert torch.equal(encoded.tensors["prompt_embeds"], reference[0])
    assert torch.equal(encoded.tensors["negative_prompt_embeds"], reference[1])
    if name == "tiny-sdxl":
        assert torch.equal(encoded.tensors["pooled_prompt_embeds"], reference[2])


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_a_weight_changes_the_embedding_only_where_the_word_is(models, name):
    model = models[name]
    plain = embed(model, "a red fox in snow").tensors["prompt_embeds"][0]
    weighted = embed(model, "a (red:1.5) fox in snow").tensors["prompt_embeds"][0]
    changed = (weighted - plain).abs().amax(dim=-1).nonzero().flatten().tolist()
    start = 1 + len(tokens_of(model, "a"))  # after the start marker and "a"
    assert changed == list(range(start, start + len(tokens_of(model, "red"))))
    # (red:1.5) pushes "red" further from the empty prompt's embedding, as compel does.
    assert not torch.equal(weighted, plain)


@pytest.mark.parametrize("name", ["tiny", "tiny-sdxl"])
def test_a_150_token_prompt_is_not_cut(models, name):
    model = models[name]
    assert len(tokens_of(model, LONG)) > 150
    encoded = embed(model, LONG, "", cfg=True)
    embeds = encoded.tensors["prompt_embeds"]
    assert embeds.shape[1] % 77 == 0 and embeds.shape[1] >= 3 * 77  # 75-token chunks
    assert encoded.tensors["negative_prompt_embeds"].shape == embeds.shape
    assert encoded.dropped_tokens == 0
    # The last words still count: changing them changes the embedding.
    other = embed(model, LONG.replace("at dusk", "at noon"), "", cfg=True)
    assert not torch.equal(other.tensors["prompt_embeds"], embeds)


def test_a_multi_prompt_blends_its_parts_by_weight(models):
    model = models["tiny"]
    cat = embed(model, "a cat").tensors["prompt_embeds"]
    hat = embed(model, "a hat").tensors["prompt_embeds"]
    blend = embed(model, "a cat::3 a hat::1").tensors["prompt_embeds"]
    assert torch.allclose(blend, 0.75 * cat + 0.25 * hat, atol=1e-6)


@pytest.fixture(scope="module")
def engine(model_dir):
    names = {"tiny": "sd1", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}
    entries = [ModelEntry(name=n, source=n, family=f) for n, f in names.items()]
    engine = Engine(ModelPool(Catalogue(entries, "tiny"), data_dir=model_dir), preview_interval=0)
    engine.start()
    yield engine
    engine.stop()


def generate(engine, prompt, model="tiny", owner="ann", seeds=(1,)):
    request = GenerationRequest(
        Operation.TXT2IMG, prompt, "", 64, 64, 3, 7.0, "euler", seeds, owner=owner, model=model
    )
    return engine.submit(request)


def test_long_and_short_prompts_batch_and_stay_batch_invariant(engine, model_dir):
    engine_jobs = [("a fox", "ann"), (LONG, "bob"), ("a (red:1.4) fox", "cat")]
    alone = [generate(engine, p, owner=o).result(TIMEOUT) for p, o in engine_jobs]
    pool = ModelPool(Catalogue([ModelEntry("tiny", "tiny")], "tiny"), data_dir=model_dir)
    queued = Engine(pool, preview_interval=0, batch_max_images=8)
    handles = [generate(queued, p, owner=o) for p, o in engine_jobs]
    queued.start()
    try:
        together = [h.result(TIMEOUT) for h in handles]
    finally:
        queued.stop()
    for a, b in zip(alone, together, strict=True):
        assert a.images[0].tobytes() == b.images[0].tobytes()
    assert [r.batch_images for r in together] == [2, 1, 2]  # the long prompt ran on its own
    assert alone[0].images[0].tobytes() != alone[2].images[0].tobytes()  # weights count


@pytest.mark.parametrize(("model", "limit"), [("tiny-sd3", 77), ("tiny-flux", 256)])
def test_a_prompt_the_encoder_still_cuts_says_how_much_was_dropped(engine, model, limit):
    words = " ".join(f"w{i}" for i in range(200))  # 1 token per character in the tiny vocabulary
    result = generate(engine, f"{words} the end", model=model).result(TIMEOUT)
    assert result.dropped_tokens > 0 and result.dropped_text.endswith("the end")
    short = generate(engine, "a fox", model=model).result(TIMEOUT)
    assert (short.dropped_tokens, short.dropped_text) == (0, "")


@pytest.mark.parametrize("model", ["tiny-sd3", "tiny-flux"])
def test_families_without_weighting_read_the_words_and_say_so(engine, model):
    weighted = generate(engine, "a (red:1.5) fox", model=model).result(TIMEOUT)
    plain = generate(engine, "a red fox", model=model).result(TIMEOUT)
    assert weighted.images[0].tobytes() == plain.images[0].tobytes()
    assert any("do not weigh words" in note for note in weighted.notes)
    blended = generate(engine, "a red fox::2 a hat", model=model).result(TIMEOUT)
    assert blended.images[0].tobytes() != plain.images[0].tobytes()  # ::weights work everywhere
