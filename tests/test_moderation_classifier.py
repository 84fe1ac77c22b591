"""The learned second opinion: the policy half (bot.core.moderation.second_opinion) and the
model half (engine.text_safety), the latter on a tiny random BERT loaded through the real
loader."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.moderation import (
    CLASSIFIER_CATEGORIES,
    HARD,
    Category,
    Verdict,
    check_prompt,
    classifier_scores,
    second_opinion,
)
from engine.loading import ModelLoadError
from engine.text_safety import PROTOTYPES, build_tiny_text_model, load_text_classifier

DATA = Path(__file__).parent / "data" / "moderation"
CASES = [
    *json.loads((DATA / "adversarial.json").read_text(encoding="utf-8"))["cases"],
    *json.loads((DATA / "innocent.json").read_text(encoding="utf-8"))["cases"],
]
LOW = {"minors": 0.1, "undress_photo": 0.2, "nsfw": 0.3}


def opinion(verdict: Verdict, scores, *, photo=False, nsfw_allowed=False, threshold=0.6):
    return second_opinion(
        verdict, scores, threshold=threshold, photo=photo, nsfw_allowed=nsfw_allowed
    )


# ---------------------------------------------------------------------------------------------
# The policy half


def test_a_score_over_the_threshold_adds_a_refusal():
    allowed = check_prompt("a woman relaxing on a beach")
    assert allowed.allowed
    verdict = opinion(allowed, {**LOW, "nsfw": 0.83})
    assert verdict == Verdict(
        False, Category.NSFW, hard=False, term="classifier: nsfw 0.83", score=0.83
    )
    assert verdict.message == Verdict(False, Category.NSFW).message


def test_what_a_score_refuses_follows_the_rules_order():
    allowed = Verdict(True)
    # Nudity is the server's call; on a photo it is undressing the photo; minors are always hard.
    assert opinion(allowed, {**LOW, "nsfw": 0.9}, nsfw_allowed=True) == Verdict(True, score=0.9)
    on_photo = opinion(allowed, {**LOW, "nsfw": 0.9}, photo=True, nsfw_allowed=True)
    assert (on_photo.category, on_photo.hard) == (Category.UNDRESS_PHOTO, True)
    undress = opinion(allowed, {**LOW, "undress_photo": 0.7})
    assert undress.category is Category.NSFW  # undressing, in a text prompt, is nudity
    minors = opinion(allowed, {"minors": 0.7, "undress_photo": 0.9, "nsfw": 0.9}, photo=True)
    assert (minors.category, minors.hard, minors.score) == (Category.MINORS, True, 0.7)
    # At the threshold refuses, under it passes; the audit gets the top score either way.
    assert not opinion(allowed, {**LOW, "nsfw": 0.6}).allowed
    assert opinion(allowed, {**LOW, "nsfw": 0.59}) == Verdict(True, score=0.59)


def test_the_classifier_never_lifts_a_refusal():
    refused = check_prompt("nude woman")
    kept = opinion(refused, LOW)
    assert (kept.allowed, kept.category, kept.term) == (False, Category.NSFW, "nude")
    assert kept.score == LOW["nsfw"]  # audited with the classifier's own score for it
    # Not even where the server allows NSFW, or with no scores at all.
    hard = check_prompt("nude child", nsfw_allowed=True)
    assert opinion(hard, LOW, nsfw_allowed=True).category is Category.MINORS
    assert opinion(hard, None, nsfw_allowed=True) == hard


def test_a_graver_classifier_verdict_replaces_a_milder_refusal():
    refused = check_prompt("nude woman")
    graver = opinion(refused, {**LOW, "minors": 0.9})
    assert (graver.category, graver.hard) == (Category.MINORS, True)
    # ... but a milder one never replaces a hard limit.
    hard = check_prompt("nude child")
    kept = opinion(hard, {**LOW, "nsfw": 0.95})
    assert (kept.category, kept.term) == (Category.MINORS, "child + nude")


def test_a_failed_classifier_fails_closed_on_photos_and_open_elsewhere():
    allowed = Verdict(True)
    closed = opinion(allowed, None, photo=True, nsfw_allowed=True)
    assert (closed.allowed, closed.category) == (False, Category.UNCHECKED)
    assert not closed.hard  # the user broke no rule: no hard-limit record against them
    assert "try again" in closed.message
    assert opinion(allowed, None) == allowed
    assert opinion(allowed, {**LOW, "nsfw": math.nan}, photo=True).category is (Category.UNCHECKED)
    assert opinion(allowed, {**LOW, "nsfw": math.nan}) == allowed


def test_engine_scores_keyed_by_name_are_read_as_categories():
    assert {c.value for c in CLASSIFIER_CATEGORIES} == set(PROTOTYPES)
    scores: dict[str, float] = {"nsfw": 0.9}  # what engine.text_safety returns
    assert opinion(Verdict(True), scores).category is Category.NSFW
    assert opinion(Verdict(True), {}).allowed  # no score: not flagged


def test_asking_a_failing_classifier_logs_and_returns_none(caplog):
    def broken(prompt: str) -> dict[str, float]:
        raise RuntimeError("CUDA out of memory")

    with caplog.at_level(logging.WARNING):
        assert classifier_scores(broken, "a cat") is None
    assert "text classifier failed" in caplog.text
    assert "CUDA out of memory" in caplog.text
    assert classifier_scores(lambda prompt: {"nsfw": 0.5}, "a cat") == {"nsfw": 0.5}


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(CASES),
    st.none() | st.dictionaries(st.sampled_from(["minors", "undress_photo", "nsfw"]), st.floats()),
    st.floats(-1, 1.5),
    st.booleans(),
)
def test_only_ever_adds_refusals(case, scores, threshold, nsfw_allowed):
    photo = bool(case.get("image"))
    rules = check_prompt(case["prompt"], has_image=photo, nsfw_allowed=nsfw_allowed)
    verdict = opinion(rules, scores, photo=photo, nsfw_allowed=nsfw_allowed, threshold=threshold)
    if not rules.allowed:
        assert not verdict.allowed
    if rules.hard:
        assert (verdict.category, verdict.term) == (rules.category, rules.term)
    assert verdict.allowed == (verdict.category is None)
    assert verdict.hard == (verdict.category in HARD)


# ---------------------------------------------------------------------------------------------
# The model half


@pytest.fixture(scope="session")
def tiny_text_model(tmp_path_factory) -> Path:
    return build_tiny_text_model(tmp_path_factory.mktemp("text-classifier") / "tiny")


@pytest.fixture(scope="session")
def classify(tiny_text_model):
    return load_text_classifier(str(tiny_text_model))


def test_the_tiny_model_loads_through_the_real_loader_and_scores(classify):
    scores = classify("a red fox in the snow")
    assert set(scores) == set(PROTOTYPES)
    assert all(-1.0 - 1e-4 <= s <= 1.0 + 1e-4 for s in scores.values())
    assert classify("a red fox in the snow") == scores  # deterministic
    assert classify("裸の女性") != scores
    assert set(classify("x" * 5000)) == set(PROTOTYPES)  # longer than any window


def test_the_classifier_adds_a_refusal_the_rules_missed(tiny_text_model):
    # A prototype equal to the prompt scores 1: the classifier flags what no term list holds.
    prompt = "a woman as nature intended"  # a known gap of the word lists
    classify = load_text_classifier(
        str(tiny_text_model), prototypes={"nsfw": [prompt], "minors": ["q"], "undress_photo": ["z"]}
    )
    rules = check_prompt(prompt)
    assert rules.allowed
    verdict = opinion(rules, classifier_scores(classify, prompt), threshold=0.999)
    assert (verdict.allowed, verdict.category) == (False, Category.NSFW)
    assert verdict.score == pytest.approx(1.0, abs=1e-4)
    assert opinion(rules, classify(prompt), threshold=0.999, nsfw_allowed=True).allowed


def test_the_classifier_cannot_remove_a_refusal(classify):
    rules = check_prompt("nude woman on a beach")
    verdict = opinion(rules, classify("nude woman on a beach"), threshold=2.0)  # flags nothing
    assert (verdict.allowed, verdict.category, verdict.term) == (False, Category.NSFW, "nude")
    assert verdict.score is not None


def test_a_request_after_long_filler_is_still_read(tiny_text_model):
    # 16-token windows overlap by 4, so they start every 10 tokens: after 40 filler tokens a
    # window starts exactly at the request, which then scores as the prototype itself.
    request = "a red fox"
    classify = load_text_classifier(
        str(tiny_text_model),
        prototypes={"nsfw": [request], "minors": ["q"], "undress_photo": ["z"]},
        max_tokens=16,
    )
    filler = "z " * 40
    assert classify(filler + request)["nsfw"] == pytest.approx(1.0, abs=1e-4)
    assert classify(filler)["nsfw"] < 0.999


def test_a_model_that_cannot_load_says_why_in_one_line(tmp_path):
    with pytest.raises(ModelLoadError) as missing:
        load_text_classifier(str(tmp_path / "no-such-model"))
    assert "no-such-model" in str(missing.value)
    assert "\n" not in str(missing.value)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError) as unreadable:
        load_text_classifier(str(broken))
    assert str(broken) in str(unreadable.value)
    assert "\n" not in str(unreadable.value)
