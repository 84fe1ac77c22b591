"""Models of every family from a catalogue: the catalogue file, switching and eviction in one
engine, batching and fairness across models, SD3 and FLUX through the real loader, few-step
jobs varied and upscaled. Tiny random models of each family; real pipelines."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import threading

import pytest
import torch
from PIL import Image

from engine.catalogue import (
    Catalogue,
    CatalogueError,
    ModelEntry,
    checkpoint_family,
    detect_family,
    load_catalogue,
    read_safetensors_header,
)
from engine.loading import load_model
from engine.pool import ModelPool
from engine.preview import latents_to_preview
from engine.requests import (
    GenerationError,
    GenerationRequest,
    NotAvailable,
    Operation,
    UnknownModel,
    img2img_steps,
)
from engine.worker import Engine

TIMEOUT = 60
FAMILIES = {"tiny": "sd1", "tiny-sdxl": "sdxl", "tiny-sd3": "sd3", "tiny-flux": "flux"}


def request(model="tiny", seeds=(1,), owner="ann", **kw) -> GenerationRequest:
    values = dict(
        operation=Operation.TXT2IMG,
        prompt="a lighthouse at dusk",
        negative="",
        width=64,
        height=64,
        steps=3,
        guidance=7.0,
        sampler="euler",
        seeds=tuple(seeds),
        owner=owner,
        model=model,
    )
    values.update(kw)
    return GenerationRequest(**values)


def pixels(result) -> list[bytes]:
    return [image.tobytes() for image in result.images]


def catalogue(*names: str, **extra: ModelEntry) -> Catalogue:
    entries = [ModelEntry(name=n, source=n, family=FAMILIES[n]) for n in names]
    return Catalogue([*entries, *extra.values()], names[0])


@pytest.fixture(scope="module")
def shared_pool(model_dir):
    """All four tiny families, loaded once for the module (no budget: nothing is unloaded)."""
    return ModelPool(catalogue(*FAMILIES), data_dir=model_dir)


@pytest.fixture
def make_engine():
    engines: list[Engine] = []

    def make(pool, start=True, **kw) -> Engine:
        engine = Engine(pool, **{"preview_interval": 0.0, **kw})
        if start:
            engine.start()
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop()


# -- the catalogue file (no torch) ---------------------------------------------------------------


def test_the_catalogue_and_the_grammar_import_without_torch():
    code = (
        "import sys, engine.catalogue, engine.requests, engine.prompt_text, bot.core.grammar; "
        "sys.exit('torch' in sys.modules or 'diffusers' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


MODELS_TOML = """
default = "base"

[models.base]
source = "tiny"
description = "The tiny SD 1.x model"
steps = 12
fast = "quick"

[models.quick]
source = "tiny"
few_step = true
steps = 2
guidance = 1.0
sampler = "lcm"
nsfw_only = true

[models.flux]
source = "tiny-flux"
description = "FLUX in miniature"
"""


def test_a_catalogue_file_names_models_with_their_defaults(tmp_path):
    path = tmp_path / "models.toml"
    path.write_text(MODELS_TOML)
    cat = load_catalogue(path, "tiny")
    assert [e.name for e in cat] == ["base", "quick", "flux"]
    assert cat.default.name == "base" and cat.find("") is cat.default
    base, quick, flux = cat.entries()
    assert (base.family, base.steps, base.guidance, base.sampler) == ("sd1", 12, 7.0, "euler_a")
    assert (quick.steps, quick.guidance, quick.sampler, quick.few_step) == (2, 1.0, "lcm", True)
    assert quick.nsfw_only and not base.nsfw_only and base.fast == "quick"
    # Unset defaults are the family's: FLUX.1 runs 4 flow-matching steps without guidance.
    assert (flux.family, flux.steps, flux.guidance, flux.sampler) == ("flux", 4, 0.0, "euler")
    assert flux.samplers == ("euler",) and flux.size_multiple == 16
    assert cat.find("FLUX") is flux  # names are case-insensitive
    assert cat.sharing(base) == [base, quick]  # same weights: loaded once


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[models.a]\nsource = 'tiny'\nsampeler = 'ddim'", "model 'a', field 'sampeler': unknown"),
        ("[models.a]\nsource = 'tiny'\nsteps = '20'", "field 'steps': must be a whole number"),
        ("[models.a]\nsource = 'tiny'\nsteps = true", "field 'steps': must be a whole number"),
        ("[models.a]\nsource = 'tiny'\nsteps = 0", "field 'steps': must be from 1 to 500"),
        ("[models.a]\nsource = 'tiny'\nfamily = 'sd4'", "field 'family': 'sd4' is not one of"),
        ("[models.a]\nsource = 'tiny'\nfamily = 'sdxl'", "says sdxl, but the weights are sd1"),
        ("[models.a]\nsource = 'tiny-flux'\nsampler = 'ddim'", "'ddim' is not one of euler"),
        ("[models.a]\nsource = 'tiny'\nfast = 'b'", "field 'fast': there is no model 'b'"),
        ("[models.a]\ndescription = 'x'", "field 'source': missing"),
        ("[models.a]\nsource = 'tiny'\nnative_size = 100", "multiple of 8 from 64 to 4096"),
        ("[models.a]\nsource = 'tiny'\nloras = { grain = 9 }", "weight of 'grain' must be"),
        ("[models.'my model']\nsource = 'tiny'", "'my model' is not a usable model name"),
        ("default = 'b'\n[models.a]\nsource = 'tiny'", "default model 'b' is not in the"),
        ("[models.a]\nsource = 'tiny'\n[models.A]\nsource = 'tiny'", "two models are called"),
        ("[models]", "no models"),
        ("[models.a\nsource = 'tiny'", "is not valid TOML"),
    ],
)
def test_catalogue_errors_name_the_file_the_model_and_the_field(tmp_path, text, fragment):
    path = tmp_path / "models.toml"
    path.write_text(text)
    with pytest.raises(CatalogueError) as info:
        load_catalogue(path, "tiny")
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_easel_model_alone_is_a_one_entry_catalogue(tmp_path):
    assert load_catalogue(None, "tiny").default.name == "tiny"
    hub = load_catalogue(None, "stabilityai/sdxl-turbo").default
    assert (hub.name, hub.source, hub.family) == ("stabilityai/sdxl-turbo", hub.source, None)
    file = tmp_path / "My Model v2.safetensors"
    file.write_bytes(_safetensors({"model.diffusion_model.out.2.weight": [4, 320, 3, 3]}))
    cat = load_catalogue(None, str(file))
    entry = cat.default
    # A path is never the name users type and jobs record; the name is the file's stem.
    assert entry.name == "My-Model-v2" and entry.source == str(file) and entry.family == "sd1"
    assert cat.find(str(file)) is entry  # jobs recorded under the path still find it
    with pytest.raises(CatalogueError, match="Cannot read the model catalogue"):
        load_catalogue(tmp_path / "missing.toml", "tiny")


def _safetensors(shapes: dict[str, list[int]]) -> bytes:
    """A safetensors file of zero-filled float16 tensors (the format: a length-prefixed JSON
    header, then the data)."""
    header, offset = {}, 0
    for name, shape in shapes.items():
        size = 2 * int(torch.tensor(shape).prod())
        header[name] = {"dtype": "F16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + bytes(offset)


# Key names and shapes of each family's original checkpoints (as diffusers recognises them).
CHECKPOINTS = {
    "sd1": {"model.diffusion_model.output_blocks.11.0.skip_connection.weight": [1, 1]},
    "sd2": {
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": [4, 1024]
    },
    "sdxl": {"conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": [4]},
    "sd3": {"model.diffusion_model.joint_blocks.0.context_block.adaLN_modulation.1.bias": [4]},
    "flux": {"double_blocks.0.img_attn.norm.key_norm.scale": [4]},
}


@pytest.mark.parametrize("family", sorted(CHECKPOINTS))
def test_single_file_checkpoints_of_each_family_are_recognised(tmp_path, family):
    path = tmp_path / f"{family}.safetensors"
    path.write_bytes(_safetensors(CHECKPOINTS[family]))
    assert checkpoint_family(read_safetensors_header(path)) == family
    assert detect_family(str(path)) == family


def test_checkpoints_easel_cannot_run_say_what_they_are(tmp_path):
    refiner = {"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": [4]}
    with pytest.raises(ValueError, match="SDXL refiner"):
        checkpoint_family(refiner)
    with pytest.raises(ValueError, match="not a Stable Diffusion, SDXL, SD3 or FLUX"):
        checkpoint_family({"lora_unet_down.weight": [4]})


# -- one engine, several models ------------------------------------------------------------------


def test_models_are_listed_without_loading_anything(model_dir, tmp_path):
    pool = ModelPool(catalogue("tiny", "tiny-flux"), data_dir=model_dir, lora_dir=tmp_path)
    engine = Engine(pool)
    assert [(m.name, m.family, m.steps, m.native_side) for m in engine.models()] == [
        ("tiny", "sd1", 25, 64),
        ("tiny-flux", "flux", 4, 64),
    ]
    assert engine.info.name == "tiny" and engine.info.identity == ""  # not loaded yet
    assert engine.loras() == () and engine.embeddings() == ()
    assert pool.loaded() == [] and pool.loads == 0


def test_switching_between_two_families_in_one_process(shared_pool, make_engine):
    engine = make_engine(shared_pool)
    first = engine.submit(request("tiny", seeds=(1, 2))).result(TIMEOUT)
    other = engine.submit(request("tiny-sd3", seeds=(1, 2))).result(TIMEOUT)
    again = engine.submit(request("tiny", seeds=(1, 2))).result(TIMEOUT)
    assert pixels(again) == pixels(first) != pixels(other)
    assert (first.repro["model"], first.repro["family"]) == ("tiny", "sd1")
    assert (other.repro["model"], other.repro["family"]) == ("tiny-sd3", "sd3")
    assert other.repro["scheduler"] == "FlowMatchEulerDiscreteScheduler"
    assert {m.name for m in shared_pool.loaded()} >= {"tiny", "tiny-sd3"}
    assert engine.info.identity.startswith("sha256:")  # the default model, now loaded


def test_idle_models_are_unloaded_to_stay_within_the_memory_budget(model_dir, make_engine):
    sizes = ModelPool(catalogue("tiny", "tiny-sdxl"), data_dir=model_dir)
    sizes.acquire("tiny")
    sizes.acquire("tiny-sdxl")
    tiny_bytes, xl_bytes = (m.size_bytes for m in reversed(sizes.loaded()))
    budget = max(tiny_bytes, xl_bytes) + 1  # room for one model at a time
    pool = ModelPool(catalogue("tiny", "tiny-sdxl"), data_dir=model_dir, memory_budget=budget)
    engine = make_engine(pool)
    first = engine.submit(request("tiny")).result(TIMEOUT)
    engine.submit(request("tiny-sdxl")).result(TIMEOUT)
    assert [m.name for m in pool.loaded()] == ["tiny-sdxl"] and pool.used_bytes() <= budget
    again = engine.submit(request("tiny")).result(TIMEOUT)
    assert [m.name for m in pool.loaded()] == ["tiny"]
    assert (pool.loads, pool.evictions) == (3, 2)
    assert pixels(again) == pixels(first)  # reloaded from disk, the same model
    health = engine.health().extra
    assert health["models_loaded"] == ["tiny"] and health["model_evictions"] == 2

    roomy = ModelPool(catalogue("tiny", "tiny-sdxl"), data_dir=model_dir, memory_budget=10**12)
    roomy_engine = make_engine(roomy)
    for model in ("tiny", "tiny-sdxl", "tiny", "tiny-sdxl"):
        roomy_engine.submit(request(model)).result(TIMEOUT)
    assert (roomy.loads, roomy.evictions) == (2, 0)  # switching back costs nothing


def test_a_batch_never_mixes_models(shared_pool, make_engine):
    engine = make_engine(shared_pool, start=False, batch_max_images=8)
    handles = [
        engine.submit(request(model, seeds=(i,), owner=owner))
        for i, (model, owner) in enumerate(
            [("tiny", "ann"), ("tiny-sdxl", "bob"), ("tiny", "cat"), ("tiny-sdxl", "dan")]
        )
    ]
    engine.start()
    results = [h.result(TIMEOUT) for h in handles]
    assert [r.repro["model"] for r in results] == ["tiny", "tiny-sdxl", "tiny", "tiny-sdxl"]
    assert [r.batch_images for r in results] == [2, 2, 2, 2]  # two calls, one per model
    for req, result in zip(
        [request("tiny", seeds=(0,)), request("tiny-sdxl", seeds=(1,))], results, strict=False
    ):
        assert pixels(engine.submit(req).result(TIMEOUT)) == pixels(result)  # alone = batched


def test_turns_stay_round_robin_across_models(shared_pool, make_engine):
    """Grouping by the loaded model would save switches but starve whoever wants another."""
    engine = make_engine(shared_pool, start=False, batch_max_images=0)
    order: list[str] = []
    lock = threading.Lock()

    def track(name):
        def on_progress(p):
            if p.step == 0:
                with lock:
                    order.append(name)

        return on_progress

    jobs = [("ann", "tiny", "a1"), ("ann", "tiny", "a2"), ("bob", "tiny-flux", "b1")]
    jobs += [("cat", "tiny", "c1"), ("bob", "tiny-flux", "b2")]
    handles = [
        engine.submit(request(model, owner=owner), on_progress=track(name))
        for owner, model, name in jobs
    ]
    engine.start()
    for handle in handles:
        handle.result(TIMEOUT)
    assert order == ["a1", "b1", "c1", "a2", "b2"]


def test_a_remake_uses_the_recorded_model(shared_pool, make_engine):
    engine = make_engine(shared_pool)
    made = engine.submit(request("TINY-SD3", seeds=(5, 6))).result(TIMEOUT)
    recorded = made.repro["model"]
    assert recorded == "tiny-sd3"  # the catalogue's name, whatever the case typed
    engine.submit(request("tiny-flux")).result(TIMEOUT)  # another model in between
    remade = engine.submit(request(recorded, seeds=(6,))).result(TIMEOUT)
    assert pixels(remade) == pixels(made)[1:]  # image 2 of the grid, alone
    assert remade.repro["model_identity"] == made.repro["model_identity"]


def test_requests_a_model_cannot_run_are_refused_before_queueing(shared_pool, make_engine):
    engine = make_engine(shared_pool, start=False)
    with pytest.raises(UnknownModel, match=r"no model called 'sdxl-turbo'\. Models: tiny, "):
        engine.submit(request("sdxl-turbo"))
    with pytest.raises(NotAvailable, match=r"'tiny-flux' \(FLUX.1\) runs with the sampler euler"):
        engine.submit(request("tiny-flux", sampler="euler_a"))
    with pytest.raises(NotAvailable, match=r"--tile is not available for model 'tiny-sd3'"):
        engine.submit(request("tiny-sd3", tile=True))
    with pytest.raises(NotAvailable, match="multiples of 16, not 72×64"):
        engine.submit(request("tiny-flux", width=72))
    assert isinstance(NotAvailable("x"), GenerationError)  # the service's InvalidInput
    assert engine.snapshot() == []


def test_a_model_that_cannot_load_fails_its_jobs_and_nothing_else(model_dir, make_engine):
    broken = ModelEntry(name="broken", source="/nowhere/model.safetensors", family="sd1")
    pool = ModelPool(catalogue("tiny", broken=broken), data_dir=model_dir)
    engine = make_engine(pool)
    with pytest.raises(GenerationError, match="'broken': there is no file or folder /nowhere"):
        engine.submit(request("broken")).result(TIMEOUT)
    assert len(engine.submit(request("tiny", owner="bob")).result(TIMEOUT).images) == 1
    assert "no file or folder" in engine.health().last_error


# -- SD3 and FLUX through the real loader ---------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny-sd3", "tiny-flux"])
def test_transformer_families_load_generate_preview_and_reproduce(model_dir, make_engine, name):
    model = load_model(name, data_dir=model_dir)
    assert model.family == FAMILIES[name] and getattr(model.txt2img, "unet", None) is None
    assert type(model.denoiser).__name__.endswith("Transformer2DModel")
    assert model.img2img.transformer is model.txt2img.transformer  # shared weights
    engine = make_engine(model, preview_interval=1e-9)
    previews: list[Image.Image] = []
    req = request(name, seeds=(3, 4), steps=4, negative="fog", guidance=3.0)
    first = engine.submit(req, on_progress=lambda p: p.preview and previews.append(p.preview))
    result = first.result(TIMEOUT)
    assert [i.size for i in result.images] == [(64, 64), (64, 64)]
    assert len(previews) == 3 and all(p.size == (256, 256) for p in previews)
    assert pixels(engine.submit(req).result(TIMEOUT)) == pixels(result)
    assert pixels(engine.submit(request(name, seeds=(4,), steps=4, negative="fog", guidance=3.0))
                  .result(TIMEOUT)) == pixels(result)[1:]  # fmt: skip
    if name == "tiny-flux":
        assert "take no negative prompt" in " ".join(result.notes)
    upscaled = engine.submit(
        request(
            name,
            operation=Operation.UPSCALE,
            width=128,
            height=128,
            steps=4,
            strength=0.5,
            init_images=(result.images[0],),
        )
    ).result(TIMEOUT)
    assert upscaled.images[0].size == (128, 128)


@pytest.mark.parametrize(("family", "shape"), [("sd3", (16, 8, 12)), ("flux", (16, 8, 8))])
def test_previews_of_16_channel_latents(family, shape):
    preview = latents_to_preview(torch.randn(*shape), family)
    assert preview.mode == "RGB" and max(preview.size) == 256
    with pytest.raises(ValueError, match="16 latent channels"):
        latents_to_preview(torch.randn(4, 8, 8), family)


@pytest.mark.parametrize("name", ["tiny-sdxl", "tiny-sd3", "tiny-flux"])
def test_every_family_is_batch_invariant_on_the_cpu(shared_pool, make_engine, name):
    requests = [
        request(name, seeds=(1, 2), owner="a"),
        request(name, seeds=(3,), owner="b", prompt="a blue whale"),
        request(name, seeds=(4, 5, 6), owner="c", prompt="tea", negative="blurry"),
    ]
    engine = make_engine(shared_pool, start=False, batch_max_images=8)
    handles = [engine.submit(r) for r in requests]
    engine.start()
    batched = [h.result(TIMEOUT) for h in handles]
    assert [r.batch_images for r in batched] == [6, 6, 6]
    for req, result in zip(requests, batched, strict=True):
        assert pixels(engine.submit(req).result(TIMEOUT)) == pixels(result)


# -- few-step models ------------------------------------------------------------------------------


def test_img2img_steps_make_a_few_denoising_steps_run():
    assert img2img_steps(2, 0.35) == 6 and int(6 * 0.35) == 2
    assert img2img_steps(1, 0.3) == 4 and int(4 * 0.3) == 1
    assert img2img_steps(4, 0.3) == 7 and int(7 * 0.3) == 2
    assert img2img_steps(25, 0.35) == 25  # enough steps already: unchanged
    for steps in range(1, 9):
        for tenths in range(1, 11):
            strength = tenths / 10
            total = img2img_steps(steps, strength)
            assert int(total * strength) >= min(steps, 2) and total >= steps


def test_a_two_step_job_can_be_varied_and_upscaled(shared_pool, make_engine):
    engine = make_engine(shared_pool)
    turbo = dict(steps=2, guidance=0.0, sampler="euler_a")
    source = engine.submit(request("tiny-sdxl", **turbo)).result(TIMEOUT).images[0]
    raw = request(
        "tiny-sdxl", operation=Operation.IMG2IMG, strength=0.35, init_images=(source,), **turbo
    )
    assert "leaves no step to run; raise --steps (to 6)" in raw.problem()
    with pytest.raises(GenerationError, match="leaves no step to run"):
        engine.submit(raw)
    for operation, size, strength in [(Operation.IMG2IMG, 64, 0.35), (Operation.UPSCALE, 128, 0.3)]:
        steps = img2img_steps(2, strength)
        seen: list[tuple[int, int]] = []
        varied = engine.submit(
            request(
                "tiny-sdxl",
                operation=operation,
                seeds=(7,),
                width=size,
                height=size,
                strength=strength,
                init_images=(source,),
                **{**turbo, "steps": steps},
            ),
            on_progress=lambda p, seen=seen: seen.append((p.step, p.total)),
        ).result(TIMEOUT)
        assert varied.images[0].size == (size, size)
        assert varied.images[0].tobytes() != source.resize((size, size)).tobytes()
        assert [s for s, _ in seen] == [0, 1, 2] and {t for _, t in seen} == {2}
