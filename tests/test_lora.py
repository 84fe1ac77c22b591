"""LoRAs and textual-inversion embeddings from their folders, through diffusers and PEFT, on
tiny models; the LoRA files are made with PEFT (engine.tiny), the embeddings here."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from engine.catalogue import Catalogue, ModelEntry
from engine.pool import ModelPool
from engine.requests import GenerationError, GenerationRequest, NotAvailable, Operation, UnknownLora
from engine.tiny import build_tiny_lora
from engine.worker import Engine

TIMEOUT = 60
FAMILIES = {"tiny": "sd1", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}


@pytest.fixture(scope="module")
def folders(model_dir, tmp_path_factory):
    loras = tmp_path_factory.mktemp("loras")
    build_tiny_lora(model_dir, loras, "grain")
    build_tiny_lora(model_dir, loras, "wood", seed=2)
    build_tiny_lora(model_dir, loras, "flux-grain", model="tiny-flux")
    (loras / "with space.safetensors").write_bytes((loras / "wood.safetensors").read_bytes())
    embeddings = tmp_path_factory.mktemp("embeddings")
    torch.manual_seed(3)
    # Two vectors for one token, the width of the tiny models' CLIP encoders (32).
    save_file({"emb_params": torch.randn(2, 32)}, embeddings / "shiny-style.safetensors")
    save_file(
        {"clip_l": torch.randn(1, 32), "clip_g": torch.randn(1, 32)},
        embeddings / "xl-style.safetensors",
    )
    return loras, embeddings


@pytest.fixture
def engine(model_dir, folders):
    loras, embeddings = folders
    entries = [ModelEntry(name=n, source=n, family=f) for n, f in FAMILIES.items()]
    # An entry with its own LoRA shares the weights of the entry with the same source.
    entries.append(ModelEntry(name="grainy", source="tiny", family="sd1", loras=(("grain", 1.0),)))
    pool = ModelPool(
        Catalogue(entries, "tiny"), data_dir=model_dir, lora_dir=loras, embeddings_dir=embeddings
    )
    engine = Engine(pool, preview_interval=0)
    engine.start()
    yield engine
    engine.stop()


def run(engine, model="tiny", prompt="a lighthouse at dusk", **kw) -> list[bytes]:
    return [i.tobytes() for i in result(engine, model, prompt, **kw).images]


def result(engine, model="tiny", prompt="a lighthouse at dusk", **kw):
    values = dict(
        operation=Operation.TXT2IMG,
        prompt=prompt,
        negative="",
        width=64,
        height=64,
        steps=3,
        guidance=7.0,
        sampler="euler",
        seeds=(1, 2),
        model=model,
    )
    values.update(kw)
    return engine.submit(GenerationRequest(**values)).result(TIMEOUT)


@pytest.mark.parametrize("model", ["tiny", "tiny-flux"])
def test_a_lora_changes_the_output_and_leaves_no_trace(engine, model):
    lora = "grain" if model == "tiny" else "flux-grain"
    before = run(engine, model)
    with_lora = result(engine, model, loras=((lora, 1.0),))
    assert [i.tobytes() for i in with_lora.images] != before
    assert with_lora.repro["loras"][0][:2] == [lora, 1.0]
    assert with_lora.repro["loras"][0][2].startswith("sha256:")
    assert run(engine, model, loras=((lora, 0.5),)) not in (before, with_lora)
    assert run(engine, model, loras=((lora, 0.0),)) == before  # weight 0 is no LoRA
    assert run(engine, model) == before  # bit for bit the job before it


def test_several_loras_and_their_order_of_loading(engine):
    both = run(engine, loras=(("grain", 1.0), ("wood", 0.7)))
    assert both not in (run(engine, loras=(("grain", 1.0),)), run(engine, loras=(("wood", 0.7),)))
    assert run(engine, loras=(("grain", 1.0), ("wood", 0.7))) == both  # loaded once, cached


def test_unknown_lora_and_bad_weight_get_specific_messages(engine):
    with pytest.raises(
        UnknownLora, match=r"no LoRA called 'nope'\. LoRAs: flux-grain, grain, wood"
    ):
        run(engine, loras=(("nope", 1.0),))
    with pytest.raises(GenerationError, match=r"weight 9; weights go from -4 to 4"):
        run(engine, loras=(("grain", 9.0),))
    with pytest.raises(GenerationError, match="given twice"):
        run(engine, loras=(("grain", 1.0), ("GRAIN", 0.5)))


def test_a_lora_for_another_model_is_refused(engine):
    with pytest.raises(NotAvailable, match=r"LoRA 'grain' (cannot be used with|does not fit)"):
        run(engine, "tiny-sdxl", loras=(("grain", 1.0),))
    run(engine, "tiny-sdxl")  # and the model works on


def test_a_catalogue_entry_with_its_own_lora_shares_the_weights(engine):
    grainy = result(engine, "grainy")
    assert [i.tobytes() for i in grainy.images] == run(engine, loras=(("grain", 1.0),))
    assert grainy.repro["model"] == "grainy" and grainy.repro["loras"][0][0] == "grain"
    assert engine.pool.loads == 1  # "tiny" and "grainy": one set of weights


def test_lora_and_embedding_folders_are_listed(engine, folders):
    assert [(e.name, e.kind) for e in engine.loras()] == [
        ("flux-grain", "lora"),
        ("grain", "lora"),
        ("wood", "lora"),
    ]  # "with space" cannot be typed, so it is not listed
    assert all(e.size > 0 for e in engine.loras())
    assert [(e.name, e.family) for e in engine.embeddings()] == [
        ("shiny-style", None),
        ("xl-style", "sdxl"),
    ]


@pytest.mark.parametrize(("model", "token"), [("tiny", "shiny-style"), ("tiny-sdxl", "xl-style")])
def test_an_embedding_is_used_by_its_token(engine, model_dir, model, token):
    prompt = f"a lighthouse, {token}"
    styled = result(engine, model, prompt=prompt)
    assert styled.repro["embeddings"][0][0] == token
    # The same words where no embedding is installed: the token is just letters there.
    entries = [ModelEntry(name=model, source=model, family=FAMILIES[model])]
    bare = Engine(ModelPool(Catalogue(entries, model), data_dir=model_dir), preview_interval=0)
    bare.start()
    try:
        assert run(bare, model, prompt=prompt) != [i.tobytes() for i in styled.images]
        assert run(bare, model, prompt="a lighthouse") == run(engine, model, prompt="a lighthouse")
    finally:
        bare.stop()


def test_an_embedding_a_model_cannot_use_is_read_as_a_word(engine):
    flux = result(engine, "tiny-flux", prompt="a lighthouse, shiny-style")
    assert any("read it as a plain word" in note for note in flux.notes)
    assert flux.repro["embeddings"] == []
