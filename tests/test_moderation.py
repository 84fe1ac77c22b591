"""Prompt moderation: adversarial and innocent corpora, the policy rules, blocklists, properties.

The corpora live in tests/data/moderation/. To see the rates:
``python -m pytest tests/test_moderation.py -q -s -k rates``.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.moderation import (
    BlocklistTermInvalid,
    BlockPattern,
    Category,
    Verdict,
    check_prompt,
    compile_blocklist_term,
    normalise,
)
from bot.core.moderation.terms import Group as _Group
from bot.core.moderation.terms import lexicons

_LEXICON = lexicons().words
_NEGATIVE_LEXICON = lexicons().negative_words

DATA = Path(__file__).parent / "data" / "moderation"
ADVERSARIAL = json.loads((DATA / "adversarial.json").read_text(encoding="utf-8"))
INNOCENT = json.loads((DATA / "innocent.json").read_text(encoding="utf-8"))
REFUSE_CASES = ADVERSARIAL["cases"]
KNOWN_GAPS = ADVERSARIAL["known_gaps"]
PASS_CASES = INNOCENT["cases"]
HARD = {Category.MINORS, Category.UNDRESS_PHOTO}


def _id(case: dict) -> str:
    image = "+image" if case.get("image") else ""
    negative = f" --no {case['negative']}" if case.get("negative") else ""
    return ascii(case["prompt"] + negative)[1:50] + image


def _check(case: dict, *, nsfw_allowed: bool = False) -> Verdict:
    return check_prompt(
        case["prompt"],
        case.get("negative", ""),
        has_image=case.get("image", False),
        nsfw_allowed=nsfw_allowed,
    )


# ---------------------------------------------------------------------------------------------
# The corpora


def test_corpus_sizes():
    assert len(REFUSE_CASES) >= 150
    assert len(PASS_CASES) >= 100
    assert {c["category"] for c in REFUSE_CASES} == {"nsfw", "minors", "undress_photo"}


@pytest.mark.parametrize("case", REFUSE_CASES, ids=_id)
def test_adversarial_prompt_is_refused(case):
    expected = Category(case["category"])
    verdict = _check(case)
    assert not verdict.allowed, normalise(case["prompt"])
    assert verdict.category == expected
    assert verdict.hard == (expected in HARD)
    assert verdict.term
    # Where the server and channel allow NSFW, only the hard limits still refuse.
    relaxed = _check(case, nsfw_allowed=True)
    if expected in HARD:
        assert (relaxed.category, relaxed.hard) == (expected, True)
    else:
        assert relaxed.allowed


@pytest.mark.parametrize("case", PASS_CASES, ids=_id)
def test_innocent_prompt_passes(case):
    verdict = _check(case)
    assert verdict.allowed, (verdict, normalise(case["prompt"]))
    assert verdict == Verdict(allowed=True)


@pytest.mark.parametrize("case", KNOWN_GAPS, ids=_id)
def test_known_gap_is_still_a_gap(case):
    """A gap that starts being caught belongs in "cases": move it there."""
    assert case["why"]
    assert _check(case).category != Category(case["category"])


def test_rates():
    refused = sum(_check(c).category == Category(c["category"]) for c in REFUSE_CASES)
    passed = sum(_check(c).allowed for c in PASS_CASES)
    total = len(REFUSE_CASES) + len(KNOWN_GAPS)
    print(
        f"\nadversarial refused: {refused}/{len(REFUSE_CASES)} "
        f"({refused / len(REFUSE_CASES):.1%}); "
        f"known gaps: {len(KNOWN_GAPS)} ({len(KNOWN_GAPS) / total:.1%} of {total}); "
        f"innocent passed: {passed}/{len(PASS_CASES)} ({passed / len(PASS_CASES):.1%})"
    )
    assert refused == len(REFUSE_CASES)
    assert passed == len(PASS_CASES)
    assert len(KNOWN_GAPS) < 0.05 * total


# ---------------------------------------------------------------------------------------------
# The term lists


def test_listed_phrases_are_in_normalised_form():
    for lexicon in (_LEXICON, _NEGATIVE_LEXICON):
        wrong = [p for p in lexicon.phrases if normalise(p) != p]
        assert not wrong


@pytest.mark.parametrize(
    ("group", "category"),
    [
        (_Group.INHERENT, Category.MINORS),
        (_Group.EXPLICIT, Category.NSFW),
        (_Group.SUGGESTIVE, None),
        (_Group.PHOTO_ONLY, None),
        (_Group.MINOR, None),
        (_Group.SAFE, None),
    ],
)
def test_every_listed_phrase_alone(group, category):
    phrases = [p for p, g in _LEXICON.phrases.items() if g is group]
    assert phrases
    wrong = [p for p in phrases if check_prompt(p).category != category]
    assert not wrong


@pytest.mark.parametrize("group", [_Group.EXPLICIT, _Group.SUGGESTIVE, _Group.PHOTO_ONLY])
def test_every_undressing_phrase_on_a_photo(group):
    phrases = [p for p, g in _LEXICON.phrases.items() if g is group]
    refused = {p: check_prompt(p, has_image=True).category for p in phrases}
    assert all(category is Category.UNDRESS_PHOTO for category in refused.values())


@pytest.mark.parametrize("group", [_Group.EXPLICIT, _Group.SUGGESTIVE])
def test_every_sexual_phrase_with_a_minor(group):
    phrases = [p for p, g in _LEXICON.phrases.items() if g is group]
    wrong = [p for p in phrases if check_prompt(f"a child, {p}").category is not Category.MINORS]
    assert not wrong


# ---------------------------------------------------------------------------------------------
# The rules


def test_minor_term_alone_passes_even_with_a_photo():
    assert check_prompt("children playing in a park", has_image=True).allowed
    assert check_prompt("a 12 year old boy playing football", nsfw_allowed=True).allowed


def test_minor_and_sexual_term_anywhere_in_the_prompt():
    verdict = check_prompt("a portrait of a teenager in a garden, soft light, (nude:1.2)")
    assert verdict == Verdict(False, Category.MINORS, hard=True, term="teenager + nude")


def test_ages_of_eighteen_and_over_are_not_minors():
    assert check_prompt("nude 18yo woman").category is Category.NSFW
    assert check_prompt("nude woman, 25 years old", nsfw_allowed=True).allowed
    assert check_prompt("nude 17yo").category is Category.MINORS


def test_suggestive_words_pass_alone_but_not_with_a_minor_or_a_photo():
    assert check_prompt("a sexy red sports car").allowed
    assert check_prompt("a sexy teenager").category is Category.MINORS
    assert check_prompt("make her sexy", has_image=True).category is Category.UNDRESS_PHOTO


def test_photo_only_words_pass_without_a_photo():
    assert check_prompt("x-ray of a hand").allowed
    assert check_prompt("x-ray of a hand", has_image=True).category is Category.UNDRESS_PHOTO


def test_negative_prompt_terms_do_not_trigger():
    assert check_prompt("a cat", "nudity, children").allowed
    assert check_prompt("a cat", "nsfw, nude, naked, porn, loli, 12yo").allowed
    assert check_prompt("a cat", "nudity", has_image=True).allowed


def test_negative_prompt_banning_clothes_asks_for_nudity():
    assert check_prompt("a woman", "clothes").category is Category.NSFW
    assert check_prompt("a woman", "clothes", nsfw_allowed=True).allowed
    assert check_prompt("a child", "clothes", nsfw_allowed=True).category is Category.MINORS
    assert check_prompt("a portrait", "clothes", has_image=True).category is (
        Category.UNDRESS_PHOTO
    )
    assert check_prompt("a laundry room", "clothes hanger").allowed


def test_nsfw_allowed_lets_nsfw_pass_but_never_the_hard_limits():
    assert check_prompt("nude woman", nsfw_allowed=True).allowed
    assert check_prompt("nude child", nsfw_allowed=True).category is Category.MINORS
    assert check_prompt("nude", has_image=True, nsfw_allowed=True).category is (
        Category.UNDRESS_PHOTO
    )


def test_precedence_minors_then_photo_then_nsfw_then_blocklist():
    blocked = ["woman", "child"]
    assert check_prompt("nude child", has_image=True, blocklist=blocked).category is (
        Category.MINORS
    )
    assert check_prompt("nude woman", has_image=True, blocklist=blocked).category is (
        Category.UNDRESS_PHOTO
    )
    assert check_prompt("nude woman", blocklist=blocked).category is Category.NSFW
    verdict = check_prompt("nude woman", nsfw_allowed=True, blocklist=blocked)
    assert verdict == Verdict(False, Category.BLOCKLIST, term="woman")


def test_messages():
    assert Verdict(True).message == ""
    messages = {Verdict(False, c).message for c in Category}
    assert len(messages) == len(Category)
    assert all(m.endswith(".") and "nude" not in m for m in messages)
    assert "minors" in Verdict(False, Category.MINORS, hard=True).message


# ---------------------------------------------------------------------------------------------
# normalise


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("A  Red\tFox\n", "a red fox"),
        ("1920s photo, 3:2, 4k, 35mm, 1080p", "1920s photo 3 2 4k 35mm 1080p"),
        ("(nude:1.4), ((naked)), [nsfw], {nude}, nude++", "nude naked nsfw nude nude"),
        ("<lora:nude_v2:0.8>", "lora nude v2"),
        ("n u d e / n.u.d.e / n-u-d-e / n_u_d_e", "nude nude nude nude"),
        ("a n u d e woman", "a nude woman"),
        ("c h i l d  n u d e", "child nude"),
        ("n00d nak3d s3x l0li und3rage n@ked $ex", "nood naked sex loli underage naked sex"),
        ("dr4g0n", "dragon"),  # no listed word: the default reading
        ("naaaked nuuude seeex", "naked nude sex"),  # doubled letters stay: "rapped", "seeks"
        ("nаkеd ΝΑΚΕD ｎｕｄｅ 𝐧𝐮𝐝𝐞 ⓝⓤⓓⓔ", "naked naked nude nude nude"),
        (
            "nu\u200bde na\u200cked s\u200de\u200dx p\u2060orn \ufeffnude",
            "nude naked sex porn nude",
        ),
        ("n\u0338\u0321u\u0334d\u0337e\u0335 café", "nude cafe"),
        ("Привет мир", "privet mir"),  # ordinary Cyrillic is transliterated, not "unmasked"
        ("kid's", "kids"),
        ("12 y.o. / 12-year-old / 1 2 y o", "12 y o 12 year old 12yo"),
        ("", ""),
        ("!!! ... ***", ""),
    ],
)
def test_normalise(text, expected):
    assert normalise(text) == expected


# ---------------------------------------------------------------------------------------------
# Blocklists


@pytest.mark.parametrize(
    ("term", "text", "matches"),
    [
        ("drag*n", "a dragon", True),
        ("drag*n", "the dragoon charges", True),
        ("drag*n", "dragn", True),  # * is zero or more
        ("drag*n", "a drag queen", False),  # * stays within a word
        ("drag*n", "snapdragon", False),  # whole words only
        ("*ragon", "snapdragon", True),
        ("red dress", "a red  dress", True),
        ("red dress", "A RED-DRESS", True),
        ("red dress", "reddress", False),
        ("Red  Dress", "a red dress", True),
        ("red *", "a red car", True),
        ("red *", "red", False),
        ("red*dress", "red dress", False),
        ("**dragon**", "dragons", True),
        ("dragon", "dr4g0n", True),
        ("dragon", "drаgon", True),  # Cyrillic а
        ("c++", "c++ code", True),
        ("a.b", "a.b", True),
        ("(x)[y]{2}\\d+|?", "x y 2 d", True),
    ],
)
def test_blocklist_term(term, text, matches):
    assert compile_blocklist_term(term).matches(text) is matches


@pytest.mark.parametrize("term", ["", "   ", "*", "**", " * ", "!!!", "?"])
def test_blocklist_term_invalid(term):
    with pytest.raises(BlocklistTermInvalid) as raised:
        compile_blocklist_term(term)
    assert str(raised.value)
    assert "blocklist term" in str(raised.value)


def test_blocklist_applies_to_prompt_and_negative():
    assert check_prompt("a red dress", blocklist=["red dress"]).category is Category.BLOCKLIST
    verdict = check_prompt("a cat", "red dress", blocklist=["red dress"])
    assert verdict == Verdict(False, Category.BLOCKLIST, term="red dress")
    assert check_prompt("a blue dress", blocklist=["red dress"]).allowed


def test_blocklist_accepts_compiled_patterns_and_skips_invalid_terms():
    pattern = compile_blocklist_term("drag*n")
    assert isinstance(pattern, BlockPattern)
    assert pattern.normalised == "drag*n"
    assert check_prompt("a dragon", blocklist=[pattern]).term == "drag*n"
    assert check_prompt("a dragon", blocklist=["", "*"]).allowed


def test_blocklist_wildcards_do_not_backtrack_catastrophically():
    pattern = compile_blocklist_term("a*a*a*a*a*a*b")
    start = time.perf_counter()
    assert not pattern.matches_normalised("a" * 5000)
    assert not pattern.matches_normalised(" ".join(["a" * 50] * 100))
    assert time.perf_counter() - start < 0.5


# ---------------------------------------------------------------------------------------------
# Properties and speed

_TRICKY = st.sampled_from(
    [
        *"nudeakxsilo0134@$!|.-_ ()[]{}:+'*",
        *("\u200b", "\u200d", "\ufeff", "\u0301", "\u0338"),
        *("а", "е", "о", "р", "с", "ѕ", "Ν", "ｎ"),
        *("nude", "child", "12", "yo", "year old", "remove", "her", "clothes", "x", "ray"),
    ]
)


@settings(max_examples=200, deadline=None)
@given(st.text() | st.lists(_TRICKY).map("".join))
def test_normalise_is_total_plain_and_idempotent(text):
    once = normalise(text)
    assert re.fullmatch(r"(?:[a-z0-9]+(?: [a-z0-9]+)*)?", once)
    assert normalise(once) == once


@settings(max_examples=100, deadline=None)
@given(
    st.text() | st.lists(_TRICKY).map("".join),
    st.text(max_size=30),
    st.booleans(),
    st.booleans(),
    st.lists(st.text(max_size=12), max_size=3),
)
def test_check_prompt_never_raises(prompt, negative, has_image, nsfw_allowed, blocklist):
    verdict = check_prompt(
        prompt, negative, has_image=has_image, nsfw_allowed=nsfw_allowed, blocklist=blocklist
    )
    assert verdict.allowed == (verdict.category is None)
    assert verdict.hard == (verdict.category in HARD)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1))
def test_blocklist_compiles_or_explains(term):
    try:
        pattern = compile_blocklist_term(term)
    except BlocklistTermInvalid as error:
        assert str(error)
    else:
        pattern.matches(term)


def test_check_prompt_is_fast_on_long_prompts():
    prompts = [
        ("a lighthouse on a rocky coast at dusk, (volumetric light:1.2), 35mm, 4k, " * 20)[:1000],
        ("n00d s3x l0li 4k 1080p a b c d e n.a.k.e.d r2d2 remove her clothes " * 20)[:1000],
        ("ｎｕｄｅ nаkеd wοman, n̸̡u̴d̷e̵, Привет мир, 日本語のテキスト, émigré café " * 15)[:1000],
    ]
    blocklist = [compile_blocklist_term(t) for t in ("drag*n", "red dress", "*bad*")]
    for prompt in prompts:
        check_prompt(prompt)  # warm the caches
        runs = 50
        start = time.perf_counter()
        for _ in range(runs):
            check_prompt(prompt, "blurry, low quality", blocklist=blocklist)
        mean = (time.perf_counter() - start) / runs
        assert mean < 0.005, f"{mean * 1e3:.2f} ms for {prompt[:30]!r}"
