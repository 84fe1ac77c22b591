"""The safety parts as the service and the bot use them: the learned second opinion (a tiny random
embedding model loaded through the real loader), and the image check as the backstop for
anything made from an uploaded photo."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from bot.core.errors import PolicyRefusal
from bot.core.grammar import Limits
from bot.core.service import Actor, Service, Upload
from engine.text_safety import build_tiny_text_model, load_text_classifier
from tests.harness import job_id_of

ANN = Actor(key="discord:1", name="ann", guild_id=100, channel_id=200)
SCENE = "a quiet harbour at dawn"


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return build_tiny_text_model(tmp_path_factory.mktemp("text") / "tiny-bert")


def photo() -> Upload:
    buffer = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(buffer, format="PNG")
    return Upload(buffer.getvalue(), "image/png")


@pytest.fixture
def make_service(make_service):
    """conftest's, with a classifier threshold of 0.99 unless a test says otherwise."""

    def make(text_classifier=None, threshold=0.99) -> Service:
        return make_service(
            text_classifier=text_classifier, text_classifier_threshold=threshold, limits=Limits()
        )

    return make


async def test_the_classifier_adds_a_refusal_and_audits_its_score(make_service, store, text_model):
    # The prompt is its own example sentence of nudity: similarity 1, whatever the weights.
    classify = load_text_classifier(
        str(text_model), prototypes={"nsfw": [SCENE], "minors": ["x"], "undress_photo": ["y"]}
    )
    service = make_service(classify)
    with pytest.raises(PolicyRefusal, match="age-restricted channels"):
        await service.imagine(ANN, SCENE)
    (refusal,) = await store.list_audit(action="refuse")
    assert refusal.detail["category"] == "nsfw" and refusal.detail["score"] > 0.99
    assert await store.count_jobs() == 0


async def test_the_classifier_never_lifts_a_refusal(make_service, text_model):
    classify = load_text_classifier(str(text_model))
    service = make_service(classify, threshold=1.0)  # it would flag nothing
    with pytest.raises(PolicyRefusal):
        await service.imagine(ANN, "a nude figure study")


async def test_a_failing_classifier_fails_closed_on_photos_and_open_otherwise(make_service, store):
    def broken(prompt):
        raise RuntimeError("the model crashed")

    service = make_service(broken)
    ok = await service.imagine(ANN, f"{SCENE} --count 1")  # no photo: the rules decide
    await service.finish(ok)
    with pytest.raises(PolicyRefusal, match="try again"):
        await service.imagine(ANN, SCENE, upload=photo())
    assert (await store.list_audit(action="refuse"))[0].detail["category"] == "unchecked"


async def test_a_flagged_edit_of_a_photo_is_withheld_even_where_nudity_is_allowed(h):
    service = h.service(classifier=lambda image: True)  # the image check flags everything
    async with h.bot(service):
        await h.text("admin set", {"nsfw": "age_restricted", "blur": True}, user=h.fake.owner_id)
        nsfw = h.fake.nsfw_channel_id
        plain = await h.done(
            await h.fake.slash("imagine", {"prompt": "a harbour --count 1"}, channel_id=nsfw)
        )
        assert "blurred by the image check" in plain["content"]  # the server's choice
        upload = h.fake.add_attachment(photo().data, "me.png", "image/png")
        edited = await h.done(
            await h.fake.slash(
                "imagine", {"prompt": "a harbour --count 1", "image": upload}, channel_id=nsfw
            )
        )
    assert "withheld by the image check" in edited["content"]  # no blur option for photos
    (attachment,) = edited["attachments"]
    assert not attachment["filename"].startswith("SPOILER_")
    job = await h.store.get_job(job_id_of(edited))
    assert job.from_photo and job.charged_images == 0


async def test_uploads_can_be_turned_off_and_their_risk_is_shown(h):
    async with h.bot():
        shown = await h.text("admin settings", user=h.fake.owner_id)
        assert "no image check is configured" in shown
        off = await h.text("admin set", {"uploads": False}, user=h.fake.owner_id)
        assert "start images (uploads): off" in off and "no image check" not in off
        upload = h.fake.add_attachment(photo().data, "me.png", "image/png")
        refused = await h.fake.slash("imagine", {"prompt": "a harbour", "image": upload})
        assert "does not allow start images" in await h.refused(refused)
