"""A server's own models as members use them: a models.toml with two tiny models of different
families and a LoRA, through the service, the fake Discord and the `easel` command."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bot.core.errors import InvalidInput, NotFound, Refused, TooManyJobs
from bot.core.grammar import Defaults, Limits
from bot.core.metadata import parse_parameters
from bot.core.models import GuildSettings, JobKind, NsfwRule
from bot.core.service import Actor, Service, ServiceConfig
from engine.catalogue import load_catalogue
from engine.pool import ModelPool
from engine.tiny import build_tiny_lora
from engine.worker import Engine
from tests.harness import WAIT, job_id_of

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
NSFW_HERE = Actor(key="discord:1", name="ann", guild_id=100, channel_id=201, nsfw_channel=True)
CATALOGUE = """
default = "sd"

[models.sd]
source = "tiny"
family = "sd1"
description = "the tiny SD 1.x"

[models.xl]
source = "tiny-sdxl"
family = "sdxl"
description = "the tiny SDXL"
steps = 3

[models.turbo]
source = "tiny"
family = "sd1"
description = "a two-step model"
few_step = true
steps = 2
guidance = 0.0

[models.after-dark]
source = "tiny"
family = "sd1"
nsfw_only = true
"""


@pytest.fixture(scope="module")
def setup(model_dir, tmp_path_factory):
    """The catalogue file, a LoRA folder with one tiny LoRA, and a pool over them (module-wide:
    loading two families takes seconds)."""
    root = tmp_path_factory.mktemp("catalogue")
    (root / "models.toml").write_text(CATALOGUE)
    loras = root / "loras"
    loras.mkdir()
    build_tiny_lora(model_dir, loras, "ink")
    pool = ModelPool(
        load_catalogue(root / "models.toml", "tiny"), data_dir=model_dir, lora_dir=loras
    )
    return root, pool


@pytest.fixture
def service(setup, store, files):
    _, pool = setup
    engine = Engine(pool, preview_interval=0)
    engine.start()
    config = ServiceConfig(defaults=Defaults(steps=4), max_queued_per_user=3)
    yield Service(store, files, engine, config)
    engine.stop()


async def run(service, text, actor=ANN):
    return await service.finish(await service.imagine(actor, text))


async def test_a_member_picks_a_model_and_its_remake_uses_it(service, store, files):
    plain = await run(service, "a lighthouse --seed 3 --count 1")
    xl = await run(service, "a lighthouse --seed 3 --count 1 --model xl")
    assert (plain.job.model, xl.job.model) == ("sd", "xl")
    assert xl.job.spec.steps == 3  # the model's own default
    assert plain.job.repro["family"] == "sd1" and xl.job.repro["family"] == "sdxl"
    assert plain.images[0].sha256 != xl.images[0].sha256
    remake = service.remake_command(xl.job)
    assert "--model xl" in remake
    again = await run(service, remake)
    assert again.images[0].sha256 == xl.images[0].sha256  # the same model made it again
    with Image.open(files.path(xl.images[0].path)) as png:
        assert parse_parameters(png.text["parameters"])["Model"] == "xl"


async def test_defaults_from_settings_and_the_server(service, store):
    await service.update_settings(ANN, model="xl")
    assert (await run(service, "a fox --count 1")).job.model == "xl"
    await service.update_settings(ANN, model="")
    await store.save_guild_settings(100, GuildSettings(model="turbo"))
    assert (await run(service, "a fox --count 1")).job.model == "turbo"
    with pytest.raises(NotFound, match="no model called 'nope'"):
        await service.update_settings(ANN, model="nope")
    with pytest.raises(NotFound, match="Models: sd, xl, turbo, after-dark"):
        await service.imagine(ANN, "a fox --model nope")


async def test_a_model_for_age_restricted_channels_only(service, store):
    with pytest.raises(Refused, match="age-restricted channels only"):
        await service.imagine(ANN, "a fox --model after-dark")
    await store.save_guild_settings(100, GuildSettings(nsfw_rule=NsfwRule.AGE_RESTRICTED))
    done = await run(service, "a fox --model after-dark --count 1", actor=NSFW_HERE)
    assert done.job.model == "after-dark"
    assert "after-dark" not in [m.name for m in service.models(ANN, GuildSettings()).models]


async def test_a_lora_is_recorded_and_written_into_the_png(service, files):
    plain = await run(service, "a fox --seed 9 --count 1")
    inked = await run(service, "a fox <lora:ink:0.8> --seed 9 --count 1")
    assert inked.job.spec.loras == (("ink", 0.8),)
    assert inked.images[0].sha256 != plain.images[0].sha256
    with Image.open(files.path(inked.images[0].path)) as png:
        params = parse_parameters(png.text["parameters"])
    assert "<lora:ink:0.8>" in params["prompt"] and params["Lora hashes"].startswith("ink: ")
    assert "--lora ink:0.8" in service.remake_command(inked.job)
    with pytest.raises(NotFound, match="no LoRA called 'ghost'"):
        await service.imagine(ANN, "a fox --lora ghost:1")


async def test_a_two_step_job_can_be_varied_and_upscaled(service):
    grid = await run(service, "a fox --model turbo --seed 4")
    assert grid.job.spec.steps == 2
    varied = await service.finish(await service.vary(ANN, grid.job.id, 0, strong=False))
    upscaled = await service.finish(await service.upscale(ANN, grid.job.id, 0))
    assert varied.job.kind is JobKind.VARIATION and len(varied.images) == 4
    assert varied.job.spec.steps * varied.job.spec.strength >= 2
    assert upscaled.images[0].width == 2 * grid.images[0].width


async def test_permutations_make_a_job_each_checked_first(service, store):
    prompts = await service.permutations(ANN, "a {red, blue} car --count 1")
    assert prompts == ["a red car --count 1", "a blue car --count 1"]
    for text in prompts:
        await run(service, text)
    assert await store.count_jobs() == 2
    with pytest.raises(InvalidInput, match="make 5 prompts; the limit is 4"):
        await service.permutations(ANN, "a {1, 2, 3, 4, 5} car")
    held = [await service.imagine(ANN, "a slow car --steps 40") for _ in range(2)]
    with pytest.raises(TooManyJobs, match="make 2 jobs"):  # one slot left, two prompts
        await service.permutations(ANN, "a {red, blue} car")
    for submission in held:
        await service.finish(submission)


def test_a_catalogue_with_a_path_only_shows_the_name(tmp_path):
    catalogue = load_catalogue(None, str(tmp_path / "secret" / "my-model.safetensors"))
    assert catalogue.default.name == "my-model"


@pytest.fixture
async def bot_setup(setup, fake, store, files, tmp_path):
    from bot.client import EaselBot

    _, pool = setup
    engine = Engine(pool, preview_interval=0.01)
    engine.start()
    config = ServiceConfig(defaults=Defaults(steps=4), limits=Limits(), max_queued_per_user=10)
    bot = EaselBot(Service(store, files, engine, config), data_dir=tmp_path, progress_interval=0.05)
    async with fake.run_client(bot):
        yield fake
    engine.stop()


async def test_models_through_discord(bot_setup, store):
    fake = bot_setup
    listed = await fake.slash("models")
    text = (await listed.wait_for_followup(timeout=WAIT))["content"]
    assert "`sd`" in text and "`xl`" in text and "`ink`" in text and "after-dark" not in text
    assert "default here" in text
    typed = await fake.autocomplete("imagine", {"prompt": "a fox", "model": "x"}, focused="model")
    await typed.wait_for_response(WAIT)
    assert [c["value"] for c in typed.response_data["choices"]] == ["xl"]
    # An age-restricted channel of a server whose rule keeps such content out: the models for
    # age-restricted channels only are not offered there either (the service refuses them).
    dark = await fake.autocomplete(
        "imagine",
        {"prompt": "a fox", "model": "a"},
        focused="model",
        channel_id=fake.nsfw_channel_id,
    )
    await dark.wait_for_response(WAIT)
    assert "after-dark" not in [c["value"] for c in dark.response_data["choices"]]
    interaction = await fake.slash("imagine", {"prompt": "a fox --count 1", "model": "xl"})
    done = await fake.wait_for_message(
        lambda m: m["id"] == interaction.original_id and m["components"], timeout=WAIT
    )
    assert (await store.get_job(job_id_of(done))).model == "xl"
    two = await fake.slash("imagine", {"prompt": "a {red, blue} fox --count 1"})
    await fake.wait_for_message(
        lambda m: m["id"] == two.original_id and "make 2 prompts" in (m["content"] or ""),
        timeout=WAIT,
    )
    results = []
    for _ in range(2):
        results.append(
            await fake.wait_for_message(
                lambda m: (
                    m["id"] in two.followup_ids
                    and m["components"]
                    and m["id"] not in [r["id"] for r in results]
                ),
                timeout=WAIT,
            )
        )
    prompts = sorted([(await store.get_job(job_id_of(r))).spec.prompt for r in results])
    assert prompts == ["a blue fox", "a red fox"]


def test_easel_models_lists_the_catalogue(setup, tmp_path):
    root, _ = setup
    env = {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "EASEL_DATA_DIR": str(tmp_path),
        "EASEL_MODELS_FILE": str(root / "models.toml"),
        "EASEL_LORA_DIR": str(root / "loras"),
        "HF_HUB_OFFLINE": "1",
        "PATH": "/usr/bin:/bin",
    }
    out = subprocess.run(
        [sys.executable, "-m", "bot", "models"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "sd (default): sd1" in out.stdout and "xl: sdxl" in out.stdout
    assert "LoRAs: ink" in out.stdout
