"""ControlNet, image prompts, /blend, /describe and Upscale (Subtle)/(Creative) as users reach them:
the service and the CLI over real SQLite, real files, the real engine and helpers on tiny random
companions (ControlNets, IP-Adapter, captioner, depth model, upscaler) built locally."""

from __future__ import annotations

import io
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from bot.core.errors import BadImage, InvalidInput, PolicyRefusal, PromptSyntaxError, Refused
from bot.core.grammar import Defaults, Limits
from bot.core.models import JobKind, JobState
from bot.core.service import Actor, Service, ServiceConfig, Upload
from engine.catalogue import ExtraModels
from engine.loading import load_model
from engine.ops.helpers import Helpers
from engine.pool import ModelPool
from engine.worker import Engine
from tests.harness import WAIT, custom_ids, job_id_of
from tests.test_cli import environment, run  # noqa: F401 - the easel command's fixtures

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)


def png(image: Image.Image) -> Upload:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return Upload(buffer.getvalue(), "image/png")


def rectangle(width: int = 64, height: int = 64, left: int | None = None) -> Image.Image:
    rgb = np.zeros((height, width, 3), np.uint8)
    left = width // 3 if left is None else left
    rgb[height // 4 : 3 * height // 4, left : left + width // 3] = (255, 200, 40)
    return Image.fromarray(rgb)


def swatch(seed: int, size: tuple[int, int] = (64, 64)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def companions(tmp_path_factory):
    """An engine over its own tiny model (ControlNets and the IP-Adapter attach to its U-Net)
    with every companion, and the helpers; shared by this module's tests."""
    model_dir = tmp_path_factory.mktemp("vision-models")
    model = load_model("tiny", data_dir=model_dir)
    extras = ExtraModels.tiny(max_upscale_pixels=512 * 512)
    pool = ModelPool.of(model, data_dir=model_dir, extras=extras)
    engine = Engine(pool, preview_interval=0, max_per_owner=20, queue_size=50)
    engine.start()
    helpers = Helpers(extras, data_dir=model_dir)
    yield engine, helpers
    engine.stop()
    helpers.close()


@pytest.fixture
def service(store, files, companions):
    engine, helpers = companions
    config = ServiceConfig(
        limits=Limits(max_pixels=64 * 64),
        defaults=Defaults(steps=3, sampler="euler"),
        max_queued_per_user=20,
        max_upscale_pixels=512 * 512,
    )
    return Service(store, files, engine, config, helpers=helpers)


async def done(service: Service, submission) -> tuple:
    outcome = await service.finish(submission)
    return outcome.job, [service.image_bytes(i) for i in outcome.images]


async def charged(service: Service, store) -> tuple[int, int]:
    """(jobs recorded, images charged) for ANN."""
    user = await service.user(ANN)
    return await store.count_jobs(user_id=user.id), await service.images_used_today(user)


async def test_the_control_map_changes_the_output_and_is_recorded(service, files):
    text = "a lighthouse --seed 7 --count 2"
    job, edges = await done(
        service, await service.imagine(ANN, f"{text} --control canny", upload=png(rectangle()))
    )
    _, moved = await done(
        service,
        await service.imagine(ANN, f"{text} --control canny", upload=png(rectangle(left=4))),
    )
    _, plain = await done(service, await service.imagine(ANN, text))
    again, same = await done(
        service, await service.imagine(ANN, f"{text} --control canny", upload=png(rectangle()))
    )
    assert edges != moved and edges != plain
    assert same == edges  # the same request, the same images
    assert job.kind is JobKind.CONTROL and job.from_photo
    assert job.params["control"] == "canny" and job.params["control_weight"] == 1.0
    # The canny map of the rectangle was kept: white edges where its sides are, black inside.
    edges_map = np.asarray(files.open(job.params["control_image"]).convert("L"))
    assert edges_map[32, 19:24].max() == 255 and edges_map[32, 27:36].max() == 0
    assert job.params["control_input"] == again.params["control_input"]
    assert "--control canny --raw-control --cw 1" in service.remake_command(job)
    assert service.remake_command(job).startswith("easel imagine ")


async def test_control_weight_zero_equals_no_control(service):
    text = "a lighthouse --seed 3 --count 1"
    _, zero = await done(
        service,
        await service.imagine(ANN, f"{text} --control canny --cw 0", upload=png(rectangle())),
    )
    _, plain = await done(service, await service.imagine(ANN, text))
    assert zero == plain


async def test_depth_control_and_a_ready_made_map(service):
    text = "a vase --seed 5 --count 1"
    job, depth = await done(
        service, await service.imagine(ANN, f"{text} --control depth", upload=png(swatch(1)))
    )
    _, raw = await done(
        service,
        await service.imagine(
            ANN, f"{text} --control depth --raw-control", upload=png(rectangle())
        ),
    )
    assert job.kind is JobKind.CONTROL and depth != raw


async def test_an_image_prompt_steers_without_being_a_start_image(service):
    text = "a garden --seed 11 --count 1"
    job, steered = await done(
        service, await service.imagine(ANN, f"{text} --iw 1.5", upload=png(swatch(2)))
    )
    _, plain = await done(service, await service.imagine(ANN, text))
    assert job.kind is JobKind.IMAGINE and job.init_image_path is None
    assert job.params["image_weight"] == 1.5 and len(job.params["image_prompts"]) == 1
    assert steered != plain and job.from_photo
    # Without --iw/--control an attachment is still an img2img start image.
    start = await service.imagine(ANN, text, upload=png(swatch(2)))
    assert start.job.kind is JobKind.IMG2IMG
    await service.finish(start)


async def test_blend_of_two_and_five_images_records_their_order(service):
    pictures = [swatch(i) for i in range(5)]
    two, first = await done(service, await service.blend(ANN, [png(p) for p in pictures[:2]]))
    _, again = await done(
        service,
        await service.blend(ANN, [png(p) for p in pictures[:2]], f"--seed {two.spec.seed}"),
    )
    five, grid = await done(
        service, await service.blend(ANN, [png(p) for p in pictures], "a landscape --seed 4")
    )
    assert two.kind is JobKind.BLEND and len(first) == 4 and again == first and grid != first
    assert len(two.params["inputs"]) == 2 and len(five.params["inputs"]) == 5
    assert len(set(five.params["inputs"])) == 5
    swapped = await service.blend(ANN, [png(p) for p in reversed(pictures)], "a landscape --seed 4")
    assert swapped.job.params["inputs"] == list(reversed(five.params["inputs"]))
    await service.finish(swapped)
    assert two.params["image_weight"] == 2.0 and five.params["image_weight"] == 1.0
    command = service.remake_command(five)
    assert command.startswith("easel blend uploads/") and "--prompt=" in command
    # A reroll keeps the images that steer it.
    reroll = await service.reroll(ANN, five.id)
    assert reroll.job.params["image_prompts"] == five.params["image_prompts"]
    rerolled, _ = await done(service, reroll)
    assert service.remake_command(rerolled).startswith("easel blend uploads/")


async def test_describe_gives_four_distinct_prompts_and_imagine_this_runs(service):
    described = await service.describe(ANN, png(swatch(9, (96, 64))))
    assert len(described.prompts) == 4
    assert len({p.casefold() for p in described.prompts}) == 4
    job = described.job
    assert job.kind is JobKind.DESCRIBE and job.state is JobState.DONE and job.from_photo
    assert job.params["aspect"] == "3:2"
    again = await service.describe(ANN, png(swatch(9, (96, 64))))
    assert again.prompts == described.prompts
    made, images = await done(service, await service.imagine_described(ANN, job.id, 2))
    assert made.spec.prompt.startswith(described.prompts[2])
    assert made.spec.aspect == (3, 2) and made.from_photo and len(images) == 4
    with pytest.raises(InvalidInput, match="A description has nothing to reroll"):
        await service.reroll(ANN, job.id)


async def test_a_description_the_policy_refuses_is_never_shown(service, store):
    image = png(swatch(9, (96, 64)))
    first = (await service.describe(ANN, image)).prompts
    others = {w for p in first[1:] for w in p.casefold().split()}
    word = next(w for w in first[0].casefold().split() if w not in others and w.isalpha())
    await store.add_block_term(ANN.guild_id, word, "discord:9")
    shown = (await service.describe(ANN, image)).prompts
    assert first[0] not in shown and set(first[1:]) <= set(shown)
    assert all(word not in p.casefold().split() for p in shown)
    for term in {w for p in first for w in p.casefold().split() if w.isalpha()} - {word}:
        await store.add_block_term(ANN.guild_id, term, "discord:9")
    with pytest.raises(PolicyRefusal, match="None of the descriptions of this image"):
        await service.describe(ANN, image)


async def test_forget_me_deletes_the_uploads_that_steered(service, files):
    blend = await service.blend(ANN, [png(swatch(20)), png(swatch(21))], "--seed 1")
    control = await service.imagine(ANN, "a cat --control canny", upload=png(swatch(22)))
    for submission in (blend, control):
        await service.finish(submission)
    uploads = [*blend.job.params["image_prompts"], control.job.params["control_image"]]
    assert all(files.path(p).exists() for p in uploads)
    # Another member's 🔄 of the blend names the same files: they go all the same.
    bob = Actor(key="discord:2", name="bob", guild_id=100, channel_id=200)
    await service.finish(await service.reroll(bob, blend.job.id))
    await service.forget_me(ANN)
    assert not any(files.path(p).exists() for p in uploads)


@pytest.mark.parametrize("factor", [2, 4])
async def test_upscale_subtle_gives_exactly_factor_times_the_size(service, factor):
    grid, _ = await done(service, await service.imagine(ANN, "a boat --seed 2 --count 1"))
    job, (data,) = await done(
        service, await service.upscale(ANN, grid.id, 0, mode="subtle", factor=factor)
    )
    image = Image.open(io.BytesIO(data))
    assert image.size == (64 * factor, 64 * factor)
    assert job.params == {"mode": "subtle", "factor": factor}
    assert service.remake_command(job) == (
        f"easel upscale {grid.id} 1 --mode subtle --factor {factor}"
    )
    creative, (data,) = await done(service, await service.upscale(ANN, grid.id, 0))
    assert Image.open(io.BytesIO(data)).size == (128, 128) and creative.params == {}


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda s: s.blend(ANN, [png(swatch(1))]),
            InvalidInput,
            "/blend takes 2 to 5 images; 1 was given.",
        ),
        (
            lambda s: s.blend(ANN, [png(swatch(i)) for i in range(6)]),
            InvalidInput,
            "/blend takes 2 to 5 images; 6 were given.",
        ),
        (
            lambda s: s.blend(ANN, [png(swatch(1)), Upload(b"GIF89a", "image/gif")]),
            BadImage,
            "Image 2 of the blend must be PNG, JPEG or WebP; this file is image/gif.",
        ),
        (
            lambda s: s.imagine(ANN, "a cat --control pose2", upload=png(swatch(1))),
            PromptSyntaxError,
            "choose one of canny, depth, lineart, scribble, pose",
        ),
        (
            lambda s: s.imagine(ANN, "a cat --control canny", upload=png(swatch(1, (128, 64)))),
            InvalidInput,
            "use an image of the same shape or set --ar to match it",
        ),
        (
            lambda s: s.imagine(ANN, "a cat --control canny"),
            InvalidInput,
            "attach one",
        ),
        (
            lambda s: s.imagine(ANN, "a cat --control pose", upload=png(swatch(1))),
            InvalidInput,
            "pose",
        ),
        (
            lambda s: s.describe(ANN, Upload(b"not a picture", "image/png")),
            BadImage,
            "The image to describe is not a picture Easel can read.",
        ),
        (
            lambda s: s.imagine(ANN, "a cat --iw 1", upload=Upload(b"x", "text/plain")),
            BadImage,
            "The image prompt must be PNG, JPEG or WebP",
        ),
    ],
)
async def test_bad_input_gets_a_specific_message_and_charges_nothing(
    service, store, call, error, message
):
    before = await charged(service, store)
    with pytest.raises(error) as info:
        await call(service)
    assert message in str(info.value)
    assert await charged(service, store) == before


async def test_an_upscale_beyond_the_limit_is_refused(service, store):
    grid, _ = await done(service, await service.imagine(ANN, "a boat --seed 2 --count 1"))
    small = Service(
        service.store,
        service.files,
        service.engine,
        ServiceConfig(defaults=Defaults(steps=3), max_upscale_pixels=128 * 128),
        helpers=service.helpers,
    )
    before = await charged(service, store)
    with pytest.raises(InvalidInput, match="above this server's limit of 16,384 pixels"):
        await small.upscale(ANN, grid.id, 0, mode="subtle", factor=4)
    with pytest.raises(InvalidInput, match="not ×3"):
        await small.upscale(ANN, grid.id, 0, mode="subtle", factor=3)
    assert await charged(service, store) == before


# -- the easel command ----------------------------------------------------------------------------

TINY_COMPANIONS = {
    "EASEL_CONTROLNET_CANNY": "tiny",
    "EASEL_IP_ADAPTER": "tiny",
    "EASEL_UPSCALER_MODEL": "tiny",
    "EASEL_CAPTION_MODEL": "tiny",
    "EASEL_DEPTH_MODEL": "tiny",
    "EASEL_DEFAULT_SAMPLER": "euler",
    "EASEL_DEFAULT_STEPS": "3",
    "EASEL_MAX_PIXELS": str(64 * 64),
}


def test_the_easel_command_blends_describes_steers_and_upscales(run, tmp_path):  # noqa: F811
    for number in range(3):
        swatch(number).save(tmp_path / f"in{number}.png")
    rectangle().save(tmp_path / "shape.png")

    described = run("describe", "in0.png", **TINY_COMPANIONS)
    assert described.returncode == 0, described.stderr
    lines = described.stdout.splitlines()
    assert [line[:3] for line in lines] == ["1. ", "2. ", "3. ", "4. "]
    assert len({line[3:] for line in lines}) == 4

    blended = run("blend", "in0.png", "in1.png", "in2.png", "--prompt=--seed 5", **TINY_COMPANIONS)
    assert blended.returncode == 0, blended.stderr
    assert "(blend)" in blended.stdout and "Remake: easel blend uploads/" in blended.stdout
    assert Image.open(tmp_path / "out" / "job2_grid.png").size == (128, 128)

    steered = run(
        "imagine", "a tower --control canny --cw 0.8 --seed 1", "--image", "shape.png",
        **TINY_COMPANIONS,
    )  # fmt: skip
    assert steered.returncode == 0, steered.stderr
    assert "(control)" in steered.stdout and "--control canny --raw-control --cw 0.8" in (
        steered.stdout
    )

    upscaled = run("upscale", "3", "1", "--mode", "subtle", "--factor", "4", **TINY_COMPANIONS)
    assert upscaled.returncode == 0, upscaled.stderr
    assert Image.open(tmp_path / "out" / "job4_1.png").size == (256, 256)


# -- Discord, end to end through the fake server -------------------------------------------------


def gif() -> bytes:
    buffer = io.BytesIO()
    swatch(3).save(buffer, format="GIF")
    return buffer.getvalue()


def attach(h, image: Image.Image, name: str) -> dict:
    return h.fake.add_attachment(png(image).data, name, "image/png")


@pytest.fixture
def vision_service(h, companions):
    engine, helpers = companions
    config = ServiceConfig(
        limits=Limits(max_pixels=64 * 64),
        defaults=Defaults(steps=3, sampler="euler"),
        max_queued_per_user=20,
    )
    return Service(h.store, h.files, engine, config, helpers=helpers)


async def test_describe_then_imagine_this_makes_a_grid(h, vision_service):
    async with h.bot(vision_service):
        asked = await h.fake.slash("describe", {"image": attach(h, swatch(9, (96, 64)), "a.png")})
        described = await h.fake.wait_for_message(
            lambda m: m["id"] == asked.original_id and m["components"], timeout=WAIT
        )
        buttons = custom_ids(described)
        assert len(buttons) == 4 and all(b.startswith("easel:describe:") for b in buttons)
        numbered = [line for line in described["content"].splitlines() if line[:2] == "**"]
        assert len(numbered) == 4
        pressed = await h.fake.click(described, buttons[1])
        grid = await h.done(pressed)
    job = await h.store.get_job(job_id_of(grid))
    parent = await h.store.get_job(job.parent_job_id)
    assert parent.kind is JobKind.DESCRIBE and job.spec.prompt == parent.params["prompts"][1]
    assert job.spec.aspect == (3, 2) and job.from_photo
    assert len(await h.store.get_images(job.id)) == 4


async def test_a_controlled_result_shows_its_control_map(h, vision_service):
    async with h.bot(vision_service):
        interaction = await h.fake.slash(
            "imagine",
            {
                "prompt": "a tower --seed 2",
                "image": attach(h, rectangle(), "r.png"),
                "control": "canny",
            },
        )
        grid = await h.done(interaction)
    job = await h.store.get_job(job_id_of(grid))
    assert job.kind is JobKind.CONTROL and job.params["control"] == "canny"
    picture, control = grid["attachments"]
    assert Image.open(io.BytesIO(h.fake.attachment_bytes(picture))).size == (128, 128)
    shown = Image.open(io.BytesIO(h.fake.attachment_bytes(control)))
    assert control["filename"].endswith("_control.png")
    assert np.array_equal(np.asarray(shown), np.asarray(h.files.open(job.params["control_image"])))


async def test_blend_two_attachments_makes_a_grid(h, vision_service):
    async with h.bot(vision_service):
        interaction = await h.fake.slash(
            "blend",
            {
                "image1": attach(h, swatch(1), "one.png"),
                "image2": attach(h, swatch(2), "two.png"),
                "prompt": "a meadow --seed 3",
            },
        )
        grid = await h.done(interaction)
        refused = await h.fake.slash(
            "blend",
            {
                "image1": attach(h, swatch(1), "one.png"),
                "image2": h.fake.add_attachment(gif(), "x.gif", "image/gif"),
            },
        )
        message = await h.refused(refused)
    job = await h.store.get_job(job_id_of(grid))
    assert job.kind is JobKind.BLEND and len(job.params["inputs"]) == 2
    assert len(await h.store.get_images(job.id)) == 4
    assert "Image 2 of the blend must be PNG, JPEG or WebP" in message
    assert await h.store.count_jobs() == 1


async def test_a_request_refused_at_admission_keeps_none_of_its_uploads(service, files):
    """Out of quota: /blend and a steered /imagine are refused after their uploads were saved,
    and no job names those files, so /forget-me could never find them: they go at once."""
    service.config = replace(service.config, daily_images_per_user=0)
    with pytest.raises(Refused):
        await service.blend(ANN, [png(swatch(30)), png(swatch(31))], "--seed 1")
    with pytest.raises(Refused):
        await service.imagine(ANN, "a cat --control canny", upload=png(swatch(32)))
    assert not [p for p in files.path("uploads").rglob("*") if p.is_file()]
