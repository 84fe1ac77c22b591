"""The prompt grammar: a table of cases and hypothesis properties."""

from __future__ import annotations

import contextlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.core.errors import (
    EaselError,
    EmptyPrompt,
    InvalidInput,
    NotFound,
    ParameterOutOfRange,
    PromptSyntaxError,
    UnknownPreset,
)
from bot.core.grammar import (
    MIDJOURNEY_HABITS,
    SAMPLERS,
    SEED_MAX,
    Defaults,
    GenerationSpec,
    Limits,
    ParsedPrompt,
    aspect_to_size,
    check_default,
    expand_permutations,
    format_parsed,
    format_spec,
    parse_preset,
    parse_prompt,
    parse_prompts,
    resolve,
)
from bot.core.metadata import format_parameters, parse_parameters
from engine.catalogue import Catalogue, ModelEntry

VALID = [
    ("a red fox in snow", ParsedPrompt("a red fox in snow")),
    (
        "a red fox in snow --ar 3:2 --seed 42 --no people, text",
        ParsedPrompt("a red fox in snow", aspect=(3, 2), seed=42, negative="people, text"),
    ),
    # Phones turn "--" into an em dash.
    ("fox —ar 16:9 —seed 1", ParsedPrompt("fox", aspect=(16, 9), seed=1)),
    ("fox –-ar 16:9", ParsedPrompt("fox", aspect=(16, 9))),
    # Odd spacing collapses.
    ("  a   fox \n in\tsnow   --seed    5  ", ParsedPrompt("a fox in snow", seed=5)),
    ("fox --ar 16 : 9", ParsedPrompt("fox", aspect=(16, 9))),
    ("fox --AR 2:1 --Seed 3", ParsedPrompt("fox", aspect=(2, 1), seed=3)),
    ("fox --ar 32:18", ParsedPrompt("fox", aspect=(32, 18))),
    ("fox --guidance 4.5 --cfg-free", None),  # unknown parameter
    ("fox --cfg 4.5", ParsedPrompt("fox", guidance=4.5)),
    ("fox --guidance 0", ParsedPrompt("fox", guidance=0.0)),
    ("fox --steps 30 --sampler DPMPP_2M", ParsedPrompt("fox", steps=30, sampler="dpmpp_2m")),
    ("fox --strength 0.6", ParsedPrompt("fox", strength=0.6)),
    ("fox --strength 1", ParsedPrompt("fox", strength=1.0)),
    ("fox --tile", ParsedPrompt("fox", tile=True)),
    ("fox --count 1", ParsedPrompt("fox", count=1)),
    ("fox --seed 0", ParsedPrompt("fox", seed=0)),
    (f"fox --seed {SEED_MAX}", ParsedPrompt("fox", seed=SEED_MAX)),
    ("fox --no cars --no people", ParsedPrompt("fox", negative="cars, people")),
    # "--" inside words, and dashes that start no parameter, belong to the prompt.
    ("well--known fox -- at dusk — slowly", ParsedPrompt("well--known fox -- at dusk — slowly")),
    ("fox --seed +7", ParsedPrompt("fox", seed=7)),
    # Models, LoRAs (A1111's tag in the prompt, or --lora, several), --fast.
    ("fox --model sdxl-turbo", ParsedPrompt("fox", model="sdxl-turbo")),
    ("fox --lora grain", ParsedPrompt("fox", loras=(("grain", 1.0),))),
    (
        "fox --lora grain:0.5 --lora film:-1 --loras wood:2, ink",
        ParsedPrompt("fox", loras=(("grain", 0.5), ("film", -1.0), ("wood", 2.0), ("ink", 1.0))),
    ),
    (
        "a <lora:grain:0.8> fox <LORA:wood> in snow --lora ink:0.3",
        ParsedPrompt("a fox in snow", loras=(("grain", 0.8), ("wood", 1.0), ("ink", 0.3))),
    ),
    ("fox --fast", ParsedPrompt("fox", fast=True)),
    # Weights stay in the prompt for the engine; they are only checked here.
    ("a (red:1.5) fox, [blurry]", ParsedPrompt("a (red:1.5) fox, [blurry]")),
    ("a cat::2 a hat::-0.5", ParsedPrompt("a cat::2 a hat::-0.5")),
    ("{red, blue} car", ParsedPrompt("{red, blue} car")),  # parse_prompts expands these
]

INVALID = [
    ("", EmptyPrompt, "empty"),
    ("   ", EmptyPrompt, "empty"),
    ("--ar 16:9", EmptyPrompt, "empty"),
    ("fox --foo 1", PromptSyntaxError, "Unknown parameter --foo"),
    ("fox --ar", PromptSyntaxError, "--ar needs a value"),
    ("fox --ar 16x9", PromptSyntaxError, "--ar takes a ratio"),
    ("fox --ar 0:1", ParameterOutOfRange, "above 0"),
    ("fox --ar 5:1", ParameterOutOfRange, "1:4 to 4:1"),
    ("fox --seed -1", PromptSyntaxError, "--seed takes a whole number from 0 to 4294967295"),
    ("fox --seed 4294967296", ParameterOutOfRange, "--seed must be from 0 to 4294967295"),
    ("fox --seed " + "9" * 400, ParameterOutOfRange, "--seed must be from 0"),
    ("fox --seed 1.5", PromptSyntaxError, "whole number"),
    ("fox --seed 42 more words", PromptSyntaxError, "'42 more words'"),
    ("fox --seed 1 --seed 2", PromptSyntaxError, "--seed is given twice"),
    ("fox --steps 0", ParameterOutOfRange, "--steps must be from 1 to 50"),
    ("fox --steps 51", ParameterOutOfRange, "--steps must be from 1 to 50"),
    ("fox --cfg 31", ParameterOutOfRange, "--cfg must be from 0 to 30"),
    ("fox --cfg nan", PromptSyntaxError, "--cfg takes a number"),
    ("fox --cfg inf", PromptSyntaxError, "--cfg takes a number"),
    ("fox --cfg 1e400", PromptSyntaxError, "--cfg takes a number"),
    ("fox --guidance -1", ParameterOutOfRange, "--guidance must be from 0 to 30"),
    ("fox --strength 0", ParameterOutOfRange, "--strength must be above 0 to 1"),
    ("fox --strength 1.01", ParameterOutOfRange, "--strength must be above 0 to 1"),
    ("fox --sampler plms", PromptSyntaxError, "Unknown sampler 'plms'"),
    ("fox --count 5", ParameterOutOfRange, "--count must be from 1 to 4"),
    ("fox --count 0", ParameterOutOfRange, "--count must be from 1 to 4"),
    ("fox --tile yes", PromptSyntaxError, "--tile takes no value"),
    ("fox --no", PromptSyntaxError, "--no needs a value"),
    ("fox --preset", PromptSyntaxError, "--preset needs a value"),
    ("fox --preset nope", UnknownPreset, "no preset called 'nope'"),
    ("fox --preset Bad!Name", PromptSyntaxError, "preset name"),
    ("x" * 1001, ParameterOutOfRange, "the limit is 1000"),
    ("fox --model", PromptSyntaxError, "--model needs a value"),
    ("fox --model ../../etc", PromptSyntaxError, "--model takes a model's name"),
    ("fox --model a --model b", PromptSyntaxError, "--model is given twice"),
    ("fox --lora", PromptSyntaxError, "--lora needs a value"),
    ("fox --lora a:x", PromptSyntaxError, "The weight of LoRA 'a' must be a number"),
    ("fox --lora a:4.5", ParameterOutOfRange, "The weight of LoRA 'a' must be from -4 to 4"),
    ("fox --lora bad/name", PromptSyntaxError, "--lora takes NAME or NAME:WEIGHT"),
    ("fox --lora a --lora A:2", PromptSyntaxError, "LoRA 'A' is given twice"),
    ("a <lora:a> fox --lora a", PromptSyntaxError, "LoRA 'a' is given twice"),
    ("fox --lora a,b,c,d,e", ParameterOutOfRange, "5 LoRAs were given; the limit is 4"),
    ("a <lora:a:1:0.5> fox", PromptSyntaxError, "one weight, as in <lora:NAME:0.8>"),
    ("a <lora:a:lots> fox", PromptSyntaxError, "The weight of LoRA 'a' must be a number"),
    ("fox --fast yes", PromptSyntaxError, "--fast takes no value"),
    ("a (red:7) fox", PromptSyntaxError, "In the prompt, the emphasis weight 7 is out of range"),
    ("fox --no (cars:9)", PromptSyntaxError, "In the --no, the emphasis weight 9"),
    ("a cat::-2 a hat", PromptSyntaxError, "the ::weights add up to 0 or less"),
    ("a cat::500", PromptSyntaxError, "::weights go from -100 to 100"),
    ("fox --v 6", PromptSyntaxError, "no Midjourney versions; choose a model with --model"),
    ("fox --niji 6", PromptSyntaxError, "choose a model with --model NAME"),
    ("fox --chaos 40", PromptSyntaxError, "has no --chaos"),
    ("fox --stylize 250", PromptSyntaxError, "the nearest is --cfg"),
    ("fox --s 250", PromptSyntaxError, "the nearest is --cfg"),
    ("fox --q 2", PromptSyntaxError, "the nearest is --steps"),
    ("fox --style raw", PromptSyntaxError, "--preset NAME"),
]


@pytest.mark.parametrize(("text", "expected"), [c for c in VALID if c[1] is not None])
def test_valid_prompts(text, expected):
    assert parse_prompt(text) == expected


@pytest.mark.parametrize(("text", "error", "fragment"), INVALID)
def test_invalid_prompts_name_the_problem(text, error, fragment):
    with pytest.raises(error) as info:
        parse_prompt(text)
    assert fragment in str(info.value)
    assert isinstance(info.value, InvalidInput)


def test_every_midjourney_habit_names_an_easel_equivalent():
    for name, message in MIDJOURNEY_HABITS.items():
        with pytest.raises(PromptSyntaxError) as info:
            parse_prompt(f"fox --{name} 1")
        assert str(info.value) == message
        assert "--" in message or "{" in message  # names what to use instead


def test_unknown_parameter_lists_the_known_ones():
    known = r"--ar, --cfg, --control, --count, --cw, --fast, --iw, --lora, --model"
    with pytest.raises(PromptSyntaxError, match=known):
        parse_prompt("fox --cfg-free 1")


def test_preset_expands_and_explicit_parameters_win():
    presets = {"wide": "--ar 21:9 --steps 12 --no blur"}
    parsed = parse_prompt("fox --preset wide --steps 30", presets=presets.get)
    assert parsed == ParsedPrompt("fox", aspect=(21, 9), steps=30, negative="blur")


def test_presets_hold_only_parameters_and_do_not_nest():
    assert parse_preset("  --ar 16:9   --steps 30 ") == "--ar 16:9 --steps 30"
    with pytest.raises(PromptSyntaxError, match="only parameters"):
        parse_preset("a fox --ar 16:9")
    with pytest.raises(PromptSyntaxError, match="another preset"):
        parse_prompt("fox --preset a", presets={"a": "--preset b"}.get)
    with pytest.raises(ParameterOutOfRange):
        parse_preset("--steps 999")


def test_limits_come_from_settings():
    limits = Limits(max_steps=10, max_prompt_length=20)
    with pytest.raises(ParameterOutOfRange, match="from 1 to 10"):
        parse_prompt("fox --steps 11", limits=limits)
    with pytest.raises(ParameterOutOfRange, match="limit is 20"):
        parse_prompt("a fox in the snow at dusk", limits=limits)


def test_defaults_layer_user_over_server_over_builtin():
    user = Defaults(steps=12, suffix="watercolour")
    server = Defaults(steps=40, aspect="16:9", sampler="ddim", negative="blurry")
    spec = resolve(parse_prompt("fox"), layers=[user, server], rng=random.Random(1))
    assert (spec.steps, spec.aspect, spec.sampler, spec.negative) == (12, (16, 9), "ddim", "blurry")
    assert spec.prompt == "fox watercolour"
    explicit = resolve(parse_prompt("fox --steps 5 --ar 1:1 --no cars"), layers=[user, server])
    assert (explicit.steps, explicit.aspect, explicit.negative) == (5, (1, 1), "cars")
    builtin = resolve(parse_prompt("fox"))
    assert (builtin.steps, builtin.guidance, builtin.sampler, builtin.count) == (
        25,
        7.0,
        "euler_a",
        4,
    )


def test_missing_seed_is_random_but_recorded():
    a = resolve(parse_prompt("fox"), rng=random.Random(1))
    b = resolve(parse_prompt("fox"), rng=random.Random(2))
    assert a.seed != b.seed and 0 <= a.seed <= SEED_MAX


@pytest.mark.parametrize(
    ("aspect", "native", "expected"),
    [
        ((1, 1), 512, (512, 512)),
        ((16, 9), 512, (680, 384)),
        ((2, 3), 1024, (840, 1256)),
        ((1, 1), 64, (64, 64)),
        ((4, 1), 512, (1024, 256)),
    ],
)
def test_aspect_ratio_keeps_the_native_pixel_count(aspect, native, expected):
    w, h = aspect_to_size(aspect, native, Limits(max_pixels=4096 * 4096))
    assert (w, h) == expected
    assert w % 8 == 0 and h % 8 == 0


def test_aspect_ratio_respects_max_pixels():
    w, h = aspect_to_size((16, 9), 1024, Limits(max_pixels=512 * 512))
    assert w * h <= 512 * 512 and w % 8 == 0 and h % 8 == 0 and w > h


def test_image_seeds_wrap():
    spec = resolve(parse_prompt(f"fox --seed {SEED_MAX}"))
    assert [spec.image_seed(i) for i in range(3)] == [SEED_MAX, 0, 1]


def test_format_spec_is_the_command_that_remakes_it():
    spec = resolve(parse_prompt("a fox —ar 3:2 --seed 9 --no people --tile"), native_side=64)
    text = format_spec(spec)
    expected = "a fox --ar 3:2 --seed 9 --steps 25 --cfg 7 --sampler euler_a --count 4 --tile"
    assert text == expected + " --no people"
    assert resolve(parse_prompt(text), native_side=64) == spec


def test_png_parameters_round_trip():
    text = format_parameters(
        prompt="a fox, at dusk",
        negative="people",
        steps=4,
        sampler="euler_a",
        guidance=7.5,
        seed=42,
        width=64,
        height=48,
        model="hub/model:rev",
        strength=0.35,
        tile=True,
    )
    back = parse_parameters(text)
    assert back["prompt"] == "a fox, at dusk" and back["negative"] == "people"
    assert (back["Seed"], back["Size"], back["Sampler"], back["CFG scale"]) == (
        "42",
        "64x48",
        "Euler a",
        "7.5",
    )
    assert back["Model"] == "hub/model:rev" and back["Denoising strength"] == "0.35"


# -- properties --------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(st.text())
def test_parsing_arbitrary_text_raises_only_domain_errors(text):
    with contextlib.suppress(EaselError):
        parse_prompt(text, presets={"p": "--ar 2:1"}.get)


params_text = st.lists(
    st.sampled_from(
        [
            "--ar",
            "--seed",
            "--no",
            "--steps",
            "--cfg",
            "--sampler",
            "--count",
            "--tile",
            "--strength",
            "—ar",
            "--preset",
            "--x",
        ]
    ).flatmap(lambda p: st.tuples(st.just(p), st.text(" 0123456789:.-abc", max_size=6))),
    max_size=5,
)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20), params_text)
def test_parameter_soup_raises_only_domain_errors(prompt, params):
    text = prompt + "".join(f" {p} {v}" for p, v in params)
    with contextlib.suppress(EaselError):
        parse_prompt(text, presets={"p": "--ar 2:1"}.get)


words = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1)
    .map(lambda s: " ".join(s.replace("-", "").replace("\u2014", "").replace("\u2013", "").split()))
    # Weight syntax (":" in "(word:1.5)", "::", "<lora:…>") is generated apart, kept valid.
    .map(lambda s: s.replace(":", " ").replace("<", " ").strip())
    .filter(bool)
)

specs = st.builds(
    lambda prompt, neg, aspect, seed, steps, cfg, sampler, count, tile, strength: resolve(
        ParsedPrompt(
            prompt,
            aspect=aspect,
            seed=seed,
            negative=neg or None,
            steps=steps,
            guidance=cfg,
            sampler=sampler,
            count=count,
            tile=tile or None,
            strength=strength,
        )
    ),
    words,
    st.one_of(st.just(""), words),
    st.tuples(st.integers(1, 4), st.integers(1, 4)),
    st.integers(0, SEED_MAX),
    st.integers(1, 50),
    # Numbers as users type them (decimals), which is what the parser produces.
    st.integers(0, 3000).map(lambda x: x / 100),
    st.sampled_from(sorted(SAMPLERS)),
    st.integers(1, 4),
    st.booleans(),
    st.one_of(st.none(), st.integers(1, 1000).map(lambda x: x / 1000)),
)


@settings(max_examples=300, deadline=None)
@given(specs)
def test_parse_of_format_is_the_same_spec(spec: GenerationSpec):
    assert resolve(parse_prompt(format_spec(spec))) == spec


@settings(max_examples=300, deadline=None)
@given(specs)
def test_parsed_round_trip(spec: GenerationSpec):
    parsed = parse_prompt(format_spec(spec))
    assert parse_prompt(format_parsed(parsed)) == parsed


# -- permutations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a car", ["a car"]),
        ("a {red, blue} car", ["a red car", "a blue car"]),
        ("a {red,{dark, light} blue} car", ["a red car", "a dark blue car", "a light blue car"]),
        (r"a {x\, y, z} car", ["a x, y car", "a z car"]),
        ("{a, b} {c, d}", ["a c", "a d", "b c", "b d"]),
        ("a {} car", ["a car"]),
        ("fox --ar {1:1, 16:9}", ["fox --ar 1:1", "fox --ar 16:9"]),
    ],
)
def test_permutations_expand_in_order(text, expected):
    assert expand_permutations(text) == expected


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("a {red, blue car", PromptSyntaxError, "has no matching '}'"),
        ("a red} car", PromptSyntaxError, "'}' has no matching '{'"),
        ("{a, b, c} {d, e}", ParameterOutOfRange, "make 6 prompts; the limit is 4"),
        ("{a,b,c,d,e,f,g,h,i,j} " * 4, ParameterOutOfRange, "far too many"),
    ],
)
def test_bad_permutations_are_refused(text, error, fragment):
    with pytest.raises(error, match=fragment):
        expand_permutations(text, 4)


def test_parse_prompts_makes_one_prompt_per_permutation():
    prompts = parse_prompts("a {red, blue} fox --ar {1:1, 2:1} --seed 3")
    assert [(p.prompt, p.aspect) for p in prompts] == [
        ("a red fox", (1, 1)),
        ("a red fox", (2, 1)),
        ("a blue fox", (1, 1)),
        ("a blue fox", (2, 1)),
    ]
    assert {p.seed for p in prompts} == {3}
    with pytest.raises(ParameterOutOfRange, match="the limit is 2"):
        parse_prompts("{a, b, c} fox", limits=Limits(max_permutations=2))


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.lists(st.text("xyz ", min_size=1, max_size=3), min_size=1, max_size=3), max_size=3)
)
def test_permutations_are_the_product_of_the_options(groups):
    text = " ".join("{" + ", ".join(options) + "}" for options in groups) or "plain"
    expected = 1
    for options in groups:
        expected *= len(options)
    assert len(expand_permutations(text, limit=10**6)) == expected


# -- models ------------------------------------------------------------------------------------

CATALOGUE = Catalogue(
    [
        ModelEntry("sd15", "tiny", "sd1", fast="sd15-lcm"),
        ModelEntry(
            "sd15-lcm",
            "tiny",
            "sd1",
            few_step=True,
            default_steps=4,
            default_guidance=1.0,
            default_sampler="lcm",
        ),
        ModelEntry("schnell", "tiny-flux", "flux", native_size=1024),
        ModelEntry("mystery", "some/hub-model"),  # family unknown until loaded
    ],
    "sd15",
)


def test_resolve_picks_the_model_and_its_defaults():
    user = Defaults(steps=40, sampler="ddim")
    spec = resolve(parse_prompt("fox"), layers=[user], models=CATALOGUE)
    assert (spec.model, spec.steps, spec.sampler) == ("sd15", 40, "ddim")  # the user's taste
    assert (spec.width, spec.height) == (64, 64)  # the tiny model's native size
    fast = resolve(parse_prompt("fox --fast"), layers=[user], models=CATALOGUE)
    # A few-step model's own defaults win over the user's: 40 LCM steps would spoil it.
    assert (fast.model, fast.steps, fast.guidance, fast.sampler) == ("sd15-lcm", 4, 1.0, "lcm")
    typed = resolve(parse_prompt("fox --model SD15-LCM --steps 6"), layers=[user], models=CATALOGUE)
    assert (typed.model, typed.steps) == ("sd15-lcm", 6)  # typed parameters win over everything
    chosen = resolve(parse_prompt("fox"), layers=[Defaults(model="schnell")], models=CATALOGUE)
    assert chosen.model == "schnell"


def test_a_family_default_gives_way_to_the_installation_and_fits_the_family():
    installation = Defaults(steps=8)
    flux = resolve(
        parse_prompt("fox --model schnell --ar 16:9"),
        layers=[Defaults(sampler="euler_a"), installation],
        models=CATALOGUE,
    )
    # FLUX runs only with euler: a default sampler it cannot run gives way to its own.
    assert (flux.steps, flux.sampler, flux.guidance) == (8, "euler", 0.0)
    assert flux.width % 16 == 0 and flux.height % 16 == 0 and flux.width > flux.height
    assert flux.width * flux.height <= 1024 * 1024
    with pytest.raises(InvalidInput, match=r"'schnell' \(FLUX.1\) runs with the sampler euler"):
        resolve(parse_prompt("fox --model schnell --sampler ddim"), models=CATALOGUE)
    unknown = resolve(parse_prompt("fox --model mystery --sampler ddim"), models=CATALOGUE)
    assert unknown.sampler == "ddim"  # the family is not known yet: the engine checks later


def test_models_and_loras_that_do_not_exist_are_named():
    with pytest.raises(NotFound, match=r"no model called 'sdxl'\. Models: sd15, sd15-lcm,"):
        resolve(parse_prompt("fox --model sdxl"), models=CATALOGUE)
    with pytest.raises(InvalidInput, match="'schnell' has no fast variant"):
        resolve(parse_prompt("fox --model schnell --fast"), models=CATALOGUE)
    with pytest.raises(InvalidInput, match="--fast needs a model catalogue"):
        resolve(parse_prompt("fox --fast"))
    with pytest.raises(NotFound, match=r"no LoRA called 'ink'\. LoRAs: film, grain"):
        resolve(parse_prompt("fox --lora ink"), loras=["grain", "film"])
    spec = resolve(parse_prompt("fox --lora GRAIN:0.5"), loras=["grain"], models=CATALOGUE)
    assert spec.loras == (("GRAIN", 0.5),)


def test_model_is_a_default_like_the_others():
    assert check_default("model", "sdxl-turbo") == "sdxl-turbo"
    with pytest.raises(PromptSyntaxError, match="model's name"):
        check_default("model", "not a name")


def test_format_spec_remakes_model_and_loras():
    spec = resolve(
        parse_prompt("a <lora:grain:0.5> fox --fast --seed 9 --lora film:-1"),
        models=CATALOGUE,
    )
    text = format_spec(spec)
    assert text.startswith("a fox --ar 1:1 --seed 9 --steps 4 --cfg 1 --sampler lcm --count 4")
    assert text.endswith("--model sd15-lcm --lora grain:0.5 --lora film:-1")
    assert resolve(parse_prompt(text), models=CATALOGUE) == spec


# Prompt text with the weighting syntax users type, kept valid.
weighted_words = st.builds(
    lambda w, kind, x: {
        0: f"({w}:{x})",
        1: f"({w})",
        2: f"[{w}]",
        3: f"{w}::{x}",
        4: w,
    }[kind],
    st.from_regex(r"[a-z]{1,8}", fullmatch=True),
    st.integers(0, 4),
    st.integers(1, 500).map(lambda x: _n(x / 100)),
)


def _n(x: float) -> str:
    return str(int(x)) if x.is_integer() else str(x)


lora_lists = st.lists(
    st.tuples(
        st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
        st.integers(-400, 400).map(lambda x: x / 100),
    ),
    max_size=4,
    unique_by=lambda t: t[0],
)
model_names = st.one_of(
    st.none(),
    st.from_regex(r"[a-z0-9][a-z0-9_-]{0,12}(/[a-z0-9][a-z0-9_-]{0,12})?", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(specs, st.lists(weighted_words, min_size=1, max_size=5), model_names, lora_lists)
def test_parse_of_format_is_the_same_spec_with_models_loras_and_weights(
    spec: GenerationSpec, prompt_words, model, loras
):
    from dataclasses import replace

    spec = replace(spec, prompt=" ".join(prompt_words), model=model or "", loras=tuple(loras))
    assert resolve(parse_prompt(format_spec(spec))) == spec
    parsed = parse_prompt(format_spec(spec))
    assert parse_prompt(format_parsed(parsed)) == parsed
