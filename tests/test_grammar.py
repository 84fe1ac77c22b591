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
    ParameterOutOfRange,
    PromptSyntaxError,
    UnknownPreset,
)
from bot.core.grammar import (
    SAMPLERS,
    SEED_MAX,
    Defaults,
    GenerationSpec,
    Limits,
    ParsedPrompt,
    aspect_to_size,
    format_parsed,
    format_spec,
    parse_preset,
    parse_prompt,
    resolve,
)
from bot.core.metadata import format_parameters, parse_parameters

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


def test_unknown_parameter_lists_the_known_ones():
    with pytest.raises(PromptSyntaxError, match=r"--ar, --cfg, --count, --fast, --lora, --model"):
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
