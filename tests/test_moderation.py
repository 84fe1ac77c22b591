"""Prompt moderation: adversarial and innocent corpora in every language, the term lists, the
policy rules, blocklists, properties.

The corpora live in tests/data/moderation/, the term lists in bot/core/moderation/terms/. To see
the rates per language: ``python -m pytest tests/test_moderation.py -q -s -k rates``.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.moderation import (
    HARD,
    BlocklistTermInvalid,
    BlockPattern,
    Category,
    Verdict,
    check_prompt,
    compile_blocklist_term,
    normalise,
)
from bot.core.moderation.fold import fold_native, native_text
from bot.core.moderation.terms import Group, Lexicon, lexicons, parse_language

DATA = Path(__file__).parent / "data" / "moderation"
ADVERSARIAL = json.loads((DATA / "adversarial.json").read_text(encoding="utf-8"))
INNOCENT = json.loads((DATA / "innocent.json").read_text(encoding="utf-8"))
REFUSE_CASES = ADVERSARIAL["cases"]
KNOWN_GAPS = ADVERSARIAL["known_gaps"]
PASS_CASES = INNOCENT["cases"]
# The languages the issue asks for, each with its own terms file and corpus cases.
LANGUAGES = ["en", "es", "pt", "fr", "de", "it", "ru", "pl", "tr", "nl", "ja", "zh", "ko", "ar"]
LEXICONS = lexicons()
PROMPT_LEXICONS: list[Lexicon] = [LEXICONS.prompt.words, *LEXICONS.prompt.native]


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


def _phrases(*groups: Group) -> list[str]:
    """Every listed prompt phrase of ``groups``, in every lexicon (ASCII words, native scripts)."""
    return [p for lexicon in PROMPT_LEXICONS for p, g in lexicon.phrases.items() if g in groups]


# ---------------------------------------------------------------------------------------------
# The corpora


def test_corpus_sizes():
    assert len(REFUSE_CASES) >= 300
    assert len(PASS_CASES) >= 200
    assert {c["category"] for c in REFUSE_CASES} == {"nsfw", "minors", "undress_photo"}
    files = {language.code for language in LEXICONS.languages}
    langs = {c["lang"] for c in [*REFUSE_CASES, *KNOWN_GAPS, *PASS_CASES]}
    assert langs <= files | {"mixed"}
    assert set(LANGUAGES) <= files


@pytest.mark.parametrize("lang", [*LANGUAGES, "mixed"])
def test_every_language_exercises_every_rule(lang):
    """Each language: nudity, both hard limits (one on a photo), and innocent traps."""
    refused = Counter(c["category"] for c in REFUSE_CASES if c["lang"] == lang)
    assert refused["nsfw"] >= 4
    assert refused["minors"] >= 3
    assert refused["undress_photo"] >= 1
    assert all(c["image"] for c in REFUSE_CASES if c["category"] == "undress_photo")
    innocent = [c for c in PASS_CASES if c["lang"] == lang]
    assert len(innocent) >= 5
    if lang != "mixed":
        assert refused["undress_photo"] >= 4
        assert sum("trap" in c for c in innocent) >= 3
        assert any(c.get("image") for c in innocent)  # an ordinary edit of a photo passes


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
    """Refusal and false-refusal rates per language, printed for the release notes."""
    rows = []
    for lang in [*LANGUAGES, "mixed", "all"]:
        refuse = [c for c in REFUSE_CASES if lang in (c["lang"], "all")]
        innocent = [c for c in PASS_CASES if lang in (c["lang"], "all")]
        gaps = [c for c in KNOWN_GAPS if lang in (c["lang"], "all")]
        refused = sum(_check(c).category == Category(c["category"]) for c in refuse)
        false = sum(not _check(c).allowed for c in innocent)
        rows.append((lang, refused, len(refuse), false, len(innocent), len(gaps)))
    print("\nlang  adversarial refused   innocent falsely refused   known gaps")
    for lang, refused, total, false, innocent, gaps in rows:
        print(
            f"{lang:<5} {refused:>4}/{total:<4} {refused / total:>7.1%}   "
            f"{false:>4}/{innocent:<4} {false / innocent:>7.1%}   {gaps:>3}"
        )
    *_, (_, refused, total, false, innocent, gaps) = rows
    assert refused == total
    assert false == 0
    assert gaps < 0.05 * (total + gaps)


def test_the_issues_examples():
    """The prompts the report found accepted, as a new user would type them."""
    for prompt in [
        "femme nue sur la plage",
        "голая женщина на пляже",
        "裸の女性",
        "donna nuda",
        "mulher nua",
        "naakte vrouw",
        "çıplak kadın",
    ]:
        assert check_prompt(prompt).category is Category.NSFW, prompt
        assert check_prompt(prompt, nsfw_allowed=True).allowed, prompt
    for prompt in ["quita la ropa de esta mujer", "enlève ses vêtements", "zieh sie aus"]:
        verdict = check_prompt(prompt, has_image=True, nsfw_allowed=True)
        assert verdict.category is Category.UNDRESS_PHOTO, prompt
    verdict = check_prompt("сними с неё одежду", has_image=True, nsfw_allowed=True)
    assert verdict.category is Category.UNDRESS_PHOTO
    for prompt in ["nue-propriété", "zieh dich warm an", "niño jugando"]:
        assert check_prompt(prompt, has_image=True).allowed, prompt


def test_transliterated_and_romanised_prompts():
    assert check_prompt("golaya zhenshchina").term == "golaya"
    assert check_prompt("hadaka no onna").term == "hadaka"
    assert check_prompt("luoti nvren").term == "luoti"
    assert check_prompt("golaya devochka").category is Category.MINORS
    assert check_prompt("hadaka no joshikousei", nsfw_allowed=True).category is Category.MINORS


def test_mixed_languages_combine_into_one_verdict():
    # A minor in one language and nudity in another are still the hard limit.
    verdict = check_prompt("a cute 小学生 girl, desnuda", nsfw_allowed=True)
    assert verdict == Verdict(False, Category.MINORS, hard=True, term="小学生 + desnuda")
    assert check_prompt("schoolgirl, голая").term == "schoolgirl + golaya"
    assert check_prompt("make her ヌード", has_image=True).category is Category.UNDRESS_PHOTO


def test_native_scripts_are_matched_in_their_own_form():
    # Transliterated, "ヌード" is "nudo", Italian for naked: the noodles must not read as that.
    assert normalise("ヌード・カラー", native=False) == ""
    assert check_prompt("ヌード・カラーのリップ").allowed
    # Spaces, dots and invisible characters between Chinese or Japanese characters are ignored,
    # their own commas are not.
    assert native_text("全 裸.的\u200b女人") == " 全裸的女人 "
    assert native_text("これは、だから") == " これは だから "
    assert native_text("ｾｯｸｽ") == " セックス "  # halfwidth katakana
    assert native_text("عـــارية") == " عارية "  # the tatweel
    assert native_text("١٢ سنة") == " 12 سنة "  # Arabic-Indic digits
    assert native_text("plain ascii, café") == ""


# ---------------------------------------------------------------------------------------------
# The term lists


def test_listed_phrases_are_in_the_form_prompts_are_read_in():
    for lexicon in (LEXICONS.prompt.words, LEXICONS.negative.words):
        wrong = [p for p in lexicon.phrases if normalise(p) != p]
        assert not wrong
    for lexicon in [*LEXICONS.prompt.native, *LEXICONS.negative.native]:
        wrong = [p for p in lexicon.phrases if native_text(p).strip() != p.strip()]
        assert not wrong
        assert all(fold_native(p) == p for p in lexicon.phrases)


@pytest.mark.parametrize("code", LANGUAGES)
def test_every_language_lists_every_group(code):
    language = next(lang for lang in LEXICONS.languages if lang.code == code)
    for group in (Group.EXPLICIT, Group.SUGGESTIVE, Group.PHOTO_ONLY, Group.MINOR):
        assert language.phrases[group], group
    assert language.phrases[Group.INHERENT]
    assert language.phrases[Group.NEGATIVE_CLOTHING]


@pytest.mark.parametrize(
    ("group", "category"),
    [
        (Group.INHERENT, Category.MINORS),
        (Group.EXPLICIT, Category.NSFW),
        (Group.SUGGESTIVE, None),
        (Group.PHOTO_ONLY, None),
        (Group.MINOR, None),
        (Group.SAFE, None),
    ],
)
def test_every_listed_phrase_alone(group, category):
    phrases = _phrases(group)
    assert phrases
    wrong = [p for p in phrases if check_prompt(p).category != category]
    assert not wrong


@pytest.mark.parametrize("group", [Group.EXPLICIT, Group.SUGGESTIVE, Group.PHOTO_ONLY])
def test_every_undressing_phrase_on_a_photo(group):
    wrong = [
        p
        for p in _phrases(group)
        if check_prompt(p, has_image=True).category is not (Category.UNDRESS_PHOTO)
    ]
    assert not wrong


@pytest.mark.parametrize("group", [Group.EXPLICIT, Group.SUGGESTIVE])
def test_every_sexual_phrase_with_a_minor(group):
    wrong = [
        p
        for p in _phrases(group)
        if check_prompt(f"a child, {p}").category is not (Category.MINORS)
    ]
    assert not wrong


def test_no_phrase_hides_a_minor_or_sexual_term_it_starts_with():
    """At each position the longest phrase wins. A sexual phrase that starts with a minor term
    ("nacktes Kind" read as minor) would hide the other half of the hard limit: such phrases
    belong in "inherent"."""
    sexual = {Group.EXPLICIT, Group.SUGGESTIVE, Group.PHOTO_ONLY}
    for lexicon in PROMPT_LEXICONS:
        sep = " " if lexicon.mode == "words" else ""
        for phrase, group in lexicon.phrases.items():
            tokens = phrase.split(" ") if sep else phrase
            for end in range(1, len(tokens)):
                inner = lexicon.phrases.get(sep.join(tokens[:end]))
                hides_minor = group in sexual and inner is Group.MINOR
                hides_sexual = group is Group.MINOR and inner in sexual - {Group.PHOTO_ONLY}
                assert not (hides_minor or hides_sexual), (phrase, group, inner)


def test_a_term_file_is_checked_when_read():
    good = parse_language(
        "xx",
        """
        name = "Test"
        [lists]
        whose = ["her", "{his,their}"]
        [terms]
        explicit = ["nud{e,es}", "{,take} off {@whose} clothes", "{16..17} yo"]
        """,
    )
    assert good.phrases[Group.EXPLICIT] == {
        "nude",
        "nudes",
        *(
            f"{verb}off {whose} clothes".strip()
            for verb in ("", "take ")
            for whose in ("her", "his", "their")
        ),
        "16 yo",
        "17 yo",
    }
    bad = {
        "[terms]\nexplicit = ['{@nothing}']": "no list named 'nothing'",
        "[terms]\nexplicit = ['nu{d{e}}']": "nested braces",
        "[terms]\nnaughty = ['x']": "unknown keys ['naughty']",
        "match = 'substrings'\n[terms]\nexplicit = ['nude']": "letters of no native script",
        "[terms]\nexplicit = ['nude$']": "needs match = 'word_starts'",
        "prefixes = ['al']\n[terms]\nexplicit = ['x']": "prefixes only apply",
        "[terms]\nexplicit = ['!!!']": "nothing to match",
    }
    for text, message in bad.items():
        with pytest.raises(ValueError, match=re.escape(message)) as raised:
            parse_language("xx", text)
        assert "terms/xx.toml" in str(raised.value)


def test_word_starts_and_word_ends():
    """Korean and Arabic terms match at a word's start; "$" makes one end the word too."""
    assert check_prompt("알몸으로").category is Category.NSFW  # a particle follows
    assert check_prompt("해야한다", has_image=True).allowed  # "야한" inside a word
    assert check_prompt("العري").category is Category.NSFW  # "ال" + "عري$"
    assert check_prompt("عريس").allowed  # a groom: "عري" must end the word
    assert check_prompt("والعارية").category is Category.NSFW  # two clitics glued on


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
        ("l'enfant, un'adolescente, d’une", "l enfant un adolescente d une"),  # elisions
        ("голая женщина, çıplak kadın, Mädchen", "golaya zhenshchina ciplak kadin madchen"),
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


def test_blocklist_entries_in_scripts_without_spaces_are_found_inside_words():
    blocked = [compile_blocklist_term("裸体"), "ヌード", "알몸"]
    for prompt in ["美丽的裸体女人", "ヌードモデル", "여자의 알몸을"]:
        verdict = check_prompt(prompt, nsfw_allowed=True, blocklist=blocked)
        assert verdict.category is Category.BLOCKLIST, prompt
    assert check_prompt("a cat", "ヌードモデル", blocklist=blocked).category is Category.BLOCKLIST
    assert check_prompt("美丽的女人", blocklist=blocked).allowed
    # A mixed entry keeps matching whole words only: "red" must be there too.
    assert not compile_blocklist_term("red 裸体").matches("裸体女人")
    assert compile_blocklist_term("red 裸体").matches("red 裸体")


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
        *("l'", "nue", "nudo", "golaya", "naga", "kind"),
        *"裸のヌードエロ子供歳二十、。・ｾｯｸｽ알몸아이 عاريةـ١",
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
        ("夕暮れの岩場の灯台 海滩上的灯塔 해질녘 바위 해안의 등대 منارة على ساحل " * 20)[:1000],
        ("femme nue, голая женщина, çıplak kadın, naakte vrouw, l'enfant, 12-jährige " * 15)[:1000],
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
