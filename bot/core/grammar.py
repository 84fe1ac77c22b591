"""The prompt grammar: ``a red fox in snow --ar 3:2 --seed 42 --no people, text``.

Pure code in two steps, like RoboDanny's converters:

* :func:`parse_prompt` splits text into the prompt and the parameters the user *typed*
  (:class:`ParsedPrompt`, every parameter optional), expanding ``--preset`` and taking A1111's
  ``<lora:NAME:0.8>`` out of the prompt; :func:`parse_prompts` first expands Midjourney's
  ``{red, blue} car`` permutations into one prompt each;
* :func:`resolve` fills what is absent from the model's own defaults (where the catalogue sets
  them), the user's, the server's, the installation's, the model family's and the built-in
  defaults, checks the limits and turns the aspect ratio into pixels (:class:`GenerationSpec`).

The prompt text keeps its weights for the engine: A1111's ``(word:1.3)``, ``(word)``,
``[word]`` and Midjourney's ``a cat::2 a hat`` (checked here with the engine's own parser,
:mod:`engine.prompt_text`).

:func:`format_spec` writes a spec back as text that parses and resolves to the same spec: the
"command that makes this image again". Every failure is a :class:`~bot.core.errors.InvalidInput`
whose message names the parameter and the allowed range.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, fields
from decimal import Decimal

from bot.core.errors import (
    EmptyPrompt,
    InvalidInput,
    NotFound,
    ParameterOutOfRange,
    PromptSyntaxError,
    UnknownPreset,
)
from engine.catalogue import ADAPTER_NAME, NAME_PATTERN, Catalogue, ModelEntry
from engine.prompt_text import PromptTextError, check_prompt_text
from engine.requests import (
    CONTROL_WEIGHT_MAX,
    IMAGE_WEIGHT_MAX,
    LORA_WEIGHT_MAX,
    ControlKind,
)

SEED_MAX = 2**32 - 1  # Midjourney's range, and what a CPU torch.Generator accepts happily.
MAX_COUNT = 4  # a 2×2 grid
GUIDANCE_MAX = 30.0
# Beyond 4:1 the models trained on squares produce repeated subjects; refuse rather than crop.
ASPECT_MAX = 4.0

# name → one-line description, shown in errors and help. lcm needs an LCM-distilled model or LoRA.
SAMPLERS: dict[str, str] = {
    "euler": "Euler",
    "euler_a": "Euler ancestral",
    "heun": "Heun",
    "dpmpp_2m": "DPM++ 2M",
    "dpmpp_2m_karras": "DPM++ 2M Karras",
    "ddim": "DDIM",
    "unipc": "UniPC",
    "lcm": "LCM (for LCM-distilled models)",
}

_ALIASES = {"guidance": "cfg", "aspect": "ar", "negative": "no", "tiled": "tile", "loras": "lora"}
_FLAGS = {"tile", "fast", "sref", "raw-control"}
_KNOWN = {
    "ar",
    "seed",
    "no",
    "steps",
    "cfg",
    "sampler",
    "strength",
    "tile",
    "count",
    "preset",
    "model",
    "lora",
    "fast",
    # Steering with an attached image (ControlNet, image prompts); see the README's "Steering".
    "control",
    "cw",
    "iw",
    "sref",
    "raw-control",
}
_REPEATABLE = {"no", "lora"}  # "--no cars --no people", "--lora a:0.5 --lora b"

# Midjourney's parameters (docs.midjourney.com, "Parameter List") and what comes nearest here.
_MODEL_HINT = "choose a model with --model NAME (/models lists them)"
MIDJOURNEY_HABITS: dict[str, str] = {
    "v": f"Easel has no Midjourney versions; {_MODEL_HINT}.",
    "version": f"Easel has no Midjourney versions; {_MODEL_HINT}.",
    "niji": f"--niji is Midjourney's anime model; here {_MODEL_HINT}.",
    "chaos": (
        "Easel has no --chaos: every image of a grid has its own seed already; for wider "
        "variety try {red, blue, green} permutations, or 🔄 for new seeds."
    ),
    "c": "Easel has no --chaos (--c): for variety try {red, blue} permutations or new seeds.",
    "stylize": (
        "Easel has no --stylize: the nearest is --cfg (lower follows the prompt less "
        "strictly, freer; higher follows it more closely)."
    ),
    "s": "Easel has no --stylize (--s): the nearest is --cfg (lower is freer, higher is closer).",
    "quality": "Easel has no --quality: the nearest is --steps (more steps, more detail and time).",
    "q": "Easel has no --q: the nearest is --steps (more steps, more detail and time).",
    "style": (
        "Easel has no --style: save parameters as a preset (/settings preset) and use "
        f"--preset NAME, or {_MODEL_HINT}."
    ),
    "weird": "Easel has no --weird: try another --model, or a LoRA with --lora NAME.",
    "repeat": "Easel has no --repeat: {a, b} permutations make several jobs at once.",
    "r": "Easel has no --r (repeat): {a, b} permutations make several jobs at once.",
}
_LORA_TAG = re.compile(r"<lora:([^<>]*)>", re.IGNORECASE)

# A parameter starts at the beginning or after whitespace with "--" or the em dash (U+2014)
# that phone keyboards substitute for "--", followed by a letter.
_PARAM_START = re.compile(r"(?:(?<=\s)|^)(?:--|\u2014|\u2013-?)(?=[A-Za-z])")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_RATIO = re.compile(r"^(\d{1,4})\s*:\s*(\d{1,4})$")
_INT = re.compile(r"^[+]?\d+$")
_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)$")
_PRESET_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Limits:
    """What the operator (and server admins, within it) allow."""

    max_steps: int = 50
    max_pixels: int = 1024 * 1024
    max_prompt_length: int = 1000
    max_count: int = MAX_COUNT
    max_loras: int = 4  # LoRAs in one job; each adds adapter work to every step
    max_permutations: int = 4  # prompts one {a, b} message may expand to (each is a job)


@dataclass(frozen=True)
class Defaults:
    """One layer of defaults (the user's, the server's, or the built-in ones). None = not set."""

    aspect: str | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    negative: str | None = None
    suffix: str | None = None  # appended to every prompt (user layer)
    count: int | None = None
    model: str | None = None  # a catalogue name (user's or server's choice)

    def over(self, lower: Defaults) -> Defaults:
        """This layer on top of ``lower``: set fields here win."""
        return Defaults(
            **{
                f.name: getattr(self, f.name)
                if getattr(self, f.name) is not None
                else getattr(lower, f.name)
                for f in fields(Defaults)
            }
        )


BUILTIN_DEFAULTS = Defaults(
    aspect="1:1", steps=25, guidance=7.0, sampler="euler_a", negative="", suffix="", count=4
)


@dataclass(frozen=True)
class ParsedPrompt:
    """What the user typed: the prompt, and only the parameters they gave."""

    prompt: str
    aspect: tuple[int, int] | None = None
    seed: int | None = None
    negative: str | None = None
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None
    strength: float | None = None
    tile: bool | None = None
    count: int | None = None
    model: str | None = None
    # (name, weight) pairs from --lora and <lora:NAME:weight>, in the order given.
    loras: tuple[tuple[str, float], ...] = ()
    fast: bool | None = None  # --fast: the model's few-step variant from the catalogue
    # With an attached image: --control NAME makes it a control map (--raw-control: it is one
    # already), --cw its weight; --iw makes it an image prompt of that weight, --sref its style.
    control: str | None = None
    control_weight: float | None = None
    image_weight: float | None = None
    style_only: bool | None = None
    raw_control: bool | None = None

    @property
    def steers(self) -> bool:
        """Whether an attached image steers the picture rather than being its start image."""
        return self.control is not None or self.image_weight is not None or bool(self.style_only)


@dataclass(frozen=True)
class GenerationSpec:
    """Everything that decides the pixels of a text-to-image grid."""

    prompt: str
    negative: str
    width: int
    height: int
    aspect: tuple[int, int]
    seed: int
    steps: int
    guidance: float
    sampler: str
    count: int
    tile: bool = False
    strength: float | None = None
    model: str = ""  # the catalogue name; "" when resolved without a catalogue (the default)
    loras: tuple[tuple[str, float], ...] = ()

    def image_seed(self, index: int) -> int:
        """Image *index* of a grid uses ``seed + index`` (wrapping), so it can be re-made alone."""
        return image_seed(self.seed, index)


def image_seed(seed: int, index: int) -> int:
    return (seed + index) % (SEED_MAX + 1)


PresetLookup = Callable[[str], str | None]


def _no_presets(name: str) -> str | None:
    return None


# ---------------------------------------------------------------------------------------------
# Parsing


def split_parameters(text: str) -> tuple[str, list[tuple[str, str]]]:
    """Split ``text`` into the prompt and ``[(name, raw value), ...]`` in the order typed."""
    starts = [m for m in _PARAM_START.finditer(text)]
    prompt = text[: starts[0].start()] if starts else text
    params: list[tuple[str, str]] = []
    for i, m in enumerate(starts):
        end = starts[i + 1].start() if i + 1 < len(starts) else len(text)
        chunk = text[m.end() : end]
        name_match = _NAME.match(chunk)
        assert name_match is not None  # guaranteed by the look-ahead in _PARAM_START
        name = name_match.group(0).lower()
        params.append((name, " ".join(chunk[name_match.end() :].split())))
    return " ".join(prompt.split()), params


def parse_prompt(
    text: str,
    *,
    presets: PresetLookup = _no_presets,
    limits: Limits = Limits(),
    allow_empty: bool = False,
) -> ParsedPrompt:
    """Parse what the user typed after ``/imagine``. Raises :class:`InvalidInput` subclasses.
    ``allow_empty``: parameters alone are enough (/blend's optional text)."""
    if len(text) > limits.max_prompt_length:
        raise ParameterOutOfRange(
            f"The prompt is {len(text)} characters long; the limit is {limits.max_prompt_length}."
        )
    prompt, params = split_parameters(text)
    prompt, tagged = _lora_tags(prompt, limits)
    explicit = _parse_params(params, limits, allow_preset=True)
    preset_name = explicit.pop("preset", None)
    values: dict[str, object] = {}
    if preset_name is not None:
        preset_text = presets(preset_name)
        if preset_text is None:
            raise UnknownPreset(
                f"There is no preset called '{preset_name}'. Save one with /settings first."
            )
        preset_prompt, preset_params = split_parameters(preset_text)
        if preset_prompt:
            raise PromptSyntaxError(f"Preset '{preset_name}' must hold only parameters.")
        values.update(_parse_params(preset_params, limits, allow_preset=False))
    values.update(explicit)  # explicit parameters win over the preset
    if tagged:
        values["loras"] = _merge_loras(tagged, values.get("loras", ()), limits)  # type: ignore[arg-type]
    if not prompt and not allow_empty:
        raise EmptyPrompt("The prompt is empty: describe what to draw before any --parameters.")
    if prompt:
        _check_text(prompt, "prompt")
    if values.get("negative"):
        _check_text(str(values["negative"]), "--no")
    return ParsedPrompt(prompt=prompt, **values)  # type: ignore[arg-type]


def parse_prompts(
    text: str,
    *,
    presets: PresetLookup = _no_presets,
    limits: Limits = Limits(),
) -> list[ParsedPrompt]:
    """Expand Midjourney's permutations (``a {red, blue} car --ar {1:1, 16:9}``: every
    combination, parameters included) and parse each prompt: one job each, in order."""
    return [
        parse_prompt(one, presets=presets, limits=limits)
        for one in expand_permutations(text, limits.max_permutations)
    ]


def expand_permutations(text: str, limit: int = 4) -> list[str]:
    r"""``a {red, blue} car`` → ``["a red car", "a blue car"]``. Options may nest (``{a, {b,
    c}}``); ``\,`` ``\{`` ``\}`` are literal. Raises if there would be more than ``limit``."""
    if "{" not in text and "}" not in text:
        return [text]
    options, end = _options(text, 0, top=True)
    assert end == len(text)
    if len(options) > limit:
        raise ParameterOutOfRange(
            f"The {{…}} options make {len(options)} prompts; the limit is {limit}."
        )
    return [" ".join(o.split()) for o in options]


def _options(text: str, i: int, *, top: bool = False) -> tuple[list[str], int]:
    """The expansions of ``text[i:]`` up to the end (top) or the closing brace/comma of the
    group it is in; returns them and where it stopped."""
    results = [""]
    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in "{},":
            results = [r + text[i + 1] for r in results]
            i += 2
            continue
        if c == "{":
            group: list[str] = []
            i += 1
            while True:
                option, i = _options(text, i)
                group.extend(option)
                if i >= len(text):
                    raise PromptSyntaxError("A '{' has no matching '}': close the options.")
                if text[i] == "}":
                    i += 1
                    break
                i += 1  # a comma: the next option
            if len(results) * len(group) > 1000:  # refused anyway: do not build them all first
                raise ParameterOutOfRange("The {…} options make far too many prompts.")
            results = [r + g.strip() for r in results for g in group]
            continue
        if c == "}" or (c == "," and not top):
            if top:
                raise PromptSyntaxError("A '}' has no matching '{'.")
            return results, i
        results = [r + c for r in results]
        i += 1
    return results, i


def _check_text(text: str, where: str) -> None:
    try:
        check_prompt_text(text)
    except PromptTextError as exc:
        message = str(exc)
        raise PromptSyntaxError(f"In the {where}, {message[0].lower()}{message[1:]}") from None


def _lora_tags(prompt: str, limits: Limits) -> tuple[str, tuple[tuple[str, float], ...]]:
    """Take A1111's ``<lora:NAME>`` / ``<lora:NAME:WEIGHT>`` out of the prompt."""
    found: list[tuple[str, float]] = []
    for m in _LORA_TAG.finditer(prompt):
        name, _, weight = m.group(1).partition(":")
        if ":" in weight:
            raise PromptSyntaxError(
                f"<lora:{_clip(m.group(1))}>: Easel takes one weight, as in <lora:NAME:0.8>."
            )
        found.append(_parse_lora_item("lora", f"{name}:{weight}" if weight else name))
    if not found:
        return prompt, ()
    return " ".join(_LORA_TAG.sub(" ", prompt).split()), _merge_loras(found, (), limits)


def _merge_loras(
    first: Iterable[tuple[str, float]], second: Iterable[tuple[str, float]], limits: Limits
) -> tuple[tuple[str, float], ...]:
    merged: list[tuple[str, float]] = []
    for name, weight in [*first, *second]:
        if any(n.casefold() == name.casefold() for n, _ in merged):
            raise PromptSyntaxError(f"LoRA '{name}' is given twice; keep one.")
        merged.append((name, weight))
    if len(merged) > limits.max_loras:
        raise ParameterOutOfRange(
            f"{len(merged)} LoRAs were given; the limit is {limits.max_loras} per job."
        )
    return tuple(merged)


def parse_preset(text: str, *, limits: Limits = Limits()) -> str:
    """Check a preset's text (parameters only) and return it normalised, for saving."""
    prompt, params = split_parameters(text)
    if prompt:
        raise PromptSyntaxError(
            "A preset holds only parameters, such as '--ar 16:9 --steps 30'; "
            f"'{_clip(prompt)}' is not one."
        )
    if not params:
        raise EmptyPrompt("A preset needs at least one parameter, such as '--ar 16:9'.")
    _parse_params(params, limits, allow_preset=False)
    return " ".join(f"--{name} {value}".strip() for name, value in params)


def check_preset_name(name: str) -> str:
    name = name.strip().lower()
    if not _PRESET_NAME.match(name):
        raise PromptSyntaxError(
            "A preset name is 1 to 32 letters, digits, '-' or '_', starting with a letter or digit."
        )
    return name


def _parse_params(
    params: Iterable[tuple[str, str]], limits: Limits, *, allow_preset: bool
) -> dict[str, object]:
    out: dict[str, object] = {}
    for raw_name, value in params:
        name = _ALIASES.get(raw_name, raw_name)
        if name == "preset" and not allow_preset:
            raise PromptSyntaxError("A preset cannot use another preset.")
        if name not in _KNOWN:
            if name in MIDJOURNEY_HABITS:
                raise PromptSyntaxError(MIDJOURNEY_HABITS[name])
            known = ", ".join(f"--{k}" for k in sorted(_KNOWN))
            raise PromptSyntaxError(f"Unknown parameter --{raw_name}. Known parameters: {known}.")
        if name in _FLAGS:
            if value:
                raise PromptSyntaxError(
                    f"--{raw_name} takes no value; put '{_clip(value)}' before the parameters."
                )
            key, parsed = _FIELD.get(name, name), True
        else:
            if not value:
                raise PromptSyntaxError(f"--{raw_name} needs a value: {_HELP[name]}.")
            key, parsed = _FIELD[name], _PARSERS[name](raw_name, value, limits)
        if key in out:
            if name not in _REPEATABLE:
                raise PromptSyntaxError(f"--{raw_name} is given twice; keep one.")
            if key == "negative":  # "--no cars --no people" reads naturally as both
                parsed = f"{out[key]}, {parsed}"
            else:
                parsed = _merge_loras(out[key], parsed, limits)  # type: ignore[arg-type]
        out[key] = parsed
    return out


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _int(name: str, value: str, low: int, high: int) -> int:
    if not _INT.match(value):
        raise PromptSyntaxError(
            f"--{name} takes a whole number from {low} to {high}, not '{_clip(value)}'."
        )
    number = int(value) if len(value) < 30 else high + 1  # huge: skip the bignum, it's out anyway
    if not low <= number <= high:
        raise ParameterOutOfRange(f"--{name} must be from {low} to {high}; {_clip(value)} is not.")
    return number


def _float(name: str, value: str, low: float, high: float, *, low_open: bool = False) -> float:
    if not _FLOAT.match(value) or len(value) > 30:
        raise PromptSyntaxError(
            f"--{name} takes a number from {_num(low)} to {_num(high)}, not '{_clip(value)}'."
        )
    number = float(value)
    if not (low < number if low_open else low <= number) or number > high:
        bound = f"above {_num(low)}" if low_open else f"from {_num(low)}"
        raise ParameterOutOfRange(f"--{name} must be {bound} to {_num(high)}; {value} is not.")
    return number + 0.0  # normalise -0.0


def _parse_aspect(name: str, value: str, limits: Limits) -> tuple[int, int]:
    m = _RATIO.match(value)
    if not m:
        raise PromptSyntaxError(
            f"--{name} takes a ratio width:height such as 16:9 or 2:3, not '{_clip(value)}'."
        )
    w, h = int(m.group(1)), int(m.group(2))
    if w == 0 or h == 0:
        raise ParameterOutOfRange(f"--{name} {value}: both sides of the ratio must be above 0.")
    if max(w / h, h / w) > ASPECT_MAX:
        raise ParameterOutOfRange(
            f"--{name} {value} is too extreme; ratios from 1:4 to 4:1 are allowed."
        )
    return w, h  # kept as typed, so the remake command reads like the user's own


def _parse_model(name: str, value: str, limits: Limits) -> str:
    if not NAME_PATTERN.match(value) or ".." in value:
        raise PromptSyntaxError(
            f"--{name} takes a model's name, such as --{name} sdxl (/models lists them), "
            f"not '{_clip(value)}'."
        )
    return value


def _parse_lora_item(name: str, item: str) -> tuple[str, float]:
    lora, _, weight = item.strip().partition(":")
    lora = lora.strip()
    if not ADAPTER_NAME.match(lora):
        raise PromptSyntaxError(
            f"--{name} takes NAME or NAME:WEIGHT, such as --{name} watercolor:0.8; "
            f"'{_clip(item)}' is not one."
        )
    if not weight.strip():
        return lora, 1.0
    value = weight.strip()
    if not _FLOAT.match(value) or len(value) > 30:
        raise PromptSyntaxError(
            f"The weight of LoRA '{lora}' must be a number from -{LORA_WEIGHT_MAX:g} to "
            f"{LORA_WEIGHT_MAX:g}, not '{_clip(value)}'."
        )
    number = float(value) + 0.0
    if abs(number) > LORA_WEIGHT_MAX:
        raise ParameterOutOfRange(
            f"The weight of LoRA '{lora}' must be from -{LORA_WEIGHT_MAX:g} to "
            f"{LORA_WEIGHT_MAX:g}; {value} is not."
        )
    return lora, number


def _parse_control(name: str, value: str, limits: Limits) -> str:
    kind = value.strip().lower()
    if kind not in set(ControlKind):
        kinds = ", ".join(k.value for k in ControlKind)
        raise PromptSyntaxError(
            f"Unknown control type '{_clip(value)}' for --{name}; choose one of {kinds}."
        )
    return kind


def _parse_loras(name: str, value: str, limits: Limits) -> tuple[tuple[str, float], ...]:
    items = [i for i in re.split(r"[,\s]+", value) if i]
    return _merge_loras((_parse_lora_item(name, i) for i in items), (), limits)


def _parse_sampler(name: str, value: str, limits: Limits) -> str:
    sampler = value.lower()
    if sampler not in SAMPLERS:
        raise PromptSyntaxError(
            f"Unknown sampler '{_clip(value)}'. Samplers: {', '.join(SAMPLERS)}."
        )
    return sampler


_FIELD = {
    "ar": "aspect",
    "seed": "seed",
    "no": "negative",
    "steps": "steps",
    "cfg": "guidance",
    "sampler": "sampler",
    "strength": "strength",
    "count": "count",
    "preset": "preset",
    "model": "model",
    "lora": "loras",
    "control": "control",
    "cw": "control_weight",
    "iw": "image_weight",
    "sref": "style_only",
    "raw-control": "raw_control",
}
_PARSERS: dict[str, Callable[[str, str, Limits], object]] = {
    "ar": _parse_aspect,
    "seed": lambda n, v, lim: _int(n, v, 0, SEED_MAX),
    "no": lambda n, v, lim: v,
    "steps": lambda n, v, lim: _int(n, v, 1, lim.max_steps),
    "cfg": lambda n, v, lim: _float(n, v, 0.0, GUIDANCE_MAX),
    "sampler": _parse_sampler,
    "strength": lambda n, v, lim: _float(n, v, 0.0, 1.0, low_open=True),
    "count": lambda n, v, lim: _int(n, v, 1, lim.max_count),
    "preset": lambda n, v, lim: check_preset_name(v),
    "model": _parse_model,
    "lora": _parse_loras,
    "control": _parse_control,
    "cw": lambda n, v, lim: _float(n, v, 0.0, CONTROL_WEIGHT_MAX),
    "iw": lambda n, v, lim: _float(n, v, 0.0, IMAGE_WEIGHT_MAX),
}
_HELP = {
    "ar": "a ratio width:height such as 16:9",
    "seed": f"a whole number from 0 to {SEED_MAX}",
    "no": "the things to keep out of the image, such as 'people, text'",
    "steps": "a whole number of sampling steps",
    "cfg": f"a number from 0 to {GUIDANCE_MAX:g}",
    "sampler": "one of " + ", ".join(SAMPLERS),
    "strength": "a number above 0 up to 1",
    "count": f"a whole number from 1 to {MAX_COUNT}",
    "preset": "the name of a saved preset",
    "model": "a model's name (/models lists them)",
    "lora": "a LoRA's name, or NAME:WEIGHT such as watercolor:0.8",
    "control": "a control type: " + ", ".join(k.value for k in ControlKind),
    "cw": f"a control weight from 0 to {CONTROL_WEIGHT_MAX:g}",
    "iw": f"an image weight from 0 to {IMAGE_WEIGHT_MAX:g}",
}


_DEFAULT_FLAGS = {
    "aspect": "ar",
    "steps": "steps",
    "guidance": "cfg",
    "sampler": "sampler",
    "model": "model",
}


def check_default(name: str, value: object, limits: Limits = Limits()) -> object:
    """A default (aspect, steps, guidance, sampler or model), checked exactly as if it were
    typed as its parameter; returns it in normal form ("16:9", 30, 7.5, "ddim", "sdxl"). A
    model's existence is the catalogue's to check (:func:`find_model`)."""
    parsed = parse_prompt(f"x --{_DEFAULT_FLAGS[name]} {value}", limits=limits)
    if name == "aspect":
        assert parsed.aspect is not None
        return f"{parsed.aspect[0]}:{parsed.aspect[1]}"
    return getattr(parsed, name)


DEFAULT_PARAMETERS = tuple(_DEFAULT_FLAGS)


# ---------------------------------------------------------------------------------------------
# Resolving


def aspect_to_size(
    aspect: tuple[int, int], native_side: int, limits: Limits, multiple: int = 8
) -> tuple[int, int]:
    """A width × height near the model's native pixel count, multiples of ``multiple`` (8 for
    the VAE's downsampling; 16 for SD3 and FLUX, whose transformers take 2×2 patches), within
    limits."""
    w, h = aspect
    pixels = min(native_side * native_side, limits.max_pixels)
    width = _round_to(math.sqrt(pixels * w / h), multiple)
    height = _round_to(math.sqrt(pixels * h / w), multiple)
    while width * height > limits.max_pixels:  # rounding up may cross the limit
        if width >= height and width > multiple:
            width -= multiple
        elif height > multiple:
            height -= multiple
        else:
            break
    return width, height


def _round_to(x: float, multiple: int) -> int:
    # diffusers checks that sides divide by the VAE's (and patch's) factor.
    return max(multiple, round(x / multiple) * multiple)


def find_model(catalogue: Catalogue, name: str) -> ModelEntry:
    """The catalogue's model ``name`` ("" is the default), or a NotFound naming the models."""
    entry = catalogue.find(name)
    if entry is None:
        raise NotFound(
            f"There is no model called '{name}'. Models: {', '.join(catalogue.names())}."
        )
    return entry


def _entry_layers(entry: ModelEntry) -> tuple[Defaults, Defaults]:
    """A model's defaults: those its catalogue entry sets (above the user's and the server's:
    a turbo model's 2 steps are not a taste), and its family's (below the installation's)."""
    own = Defaults(
        steps=entry.default_steps,
        guidance=entry.default_guidance,
        sampler=entry.default_sampler,
    )
    family = Defaults(steps=entry.steps, guidance=entry.guidance, sampler=entry.sampler)
    return own, family


def resolve(
    parsed: ParsedPrompt,
    *,
    layers: Iterable[Defaults] = (),
    native_side: int = 512,
    limits: Limits = Limits(),
    rng: random.Random | None = None,
    models: Catalogue | None = None,
    loras: Collection[str] | None = None,
) -> GenerationSpec:
    """Fill absent parameters from ``layers`` (highest priority first), then the built-ins.

    With ``models`` (the engine's catalogue), the model is ``--model``, else the layers' model,
    else the catalogue's default; ``--fast`` switches to its fast entry; the model's defaults
    join the layers (:func:`_entry_layers`) and its native size replaces ``native_side``. A
    sampler from the defaults that the model cannot run gives way to the model's own; a typed
    one is refused. With ``loras`` (the names installed), unknown LoRAs are refused."""
    stack = list(layers)
    chosen = parsed.model or next((d.model for d in stack if d.model), None) or ""
    entry = None
    multiple = 8
    if models is not None:
        entry = find_model(models, chosen)
        if parsed.fast:
            if entry.fast is None:
                raise InvalidInput(
                    f"Model '{entry.name}' has no fast variant; --fast needs one in the model "
                    "catalogue (its 'fast' field)."
                )
            entry = find_model(models, entry.fast)
        own, family = _entry_layers(entry)
        stack = [own, *stack, family]
        native_side = entry.native_side
        multiple = entry.size_multiple
    elif parsed.fast:
        raise InvalidInput("--fast needs a model catalogue with a fast model.")
    d = BUILTIN_DEFAULTS
    for layer in reversed(stack):
        d = layer.over(d)
    assert d.aspect is not None and d.steps is not None and d.guidance is not None
    aspect = parsed.aspect or _parse_aspect("ar", d.aspect, limits)
    steps = parsed.steps if parsed.steps is not None else min(d.steps, limits.max_steps)
    count = parsed.count if parsed.count is not None else min(d.count or 4, limits.max_count)
    prompt = parsed.prompt
    if d.suffix and not prompt.endswith(d.suffix):
        prompt = f"{prompt} {d.suffix}"
    width, height = aspect_to_size(aspect, native_side, limits, multiple)
    seed = parsed.seed if parsed.seed is not None else (rng or random).randint(0, SEED_MAX)
    sampler = parsed.sampler or d.sampler or "euler_a"
    if entry is not None and entry.samplers and sampler not in entry.samplers:
        if parsed.sampler is not None:
            family = entry.family_info
            raise InvalidInput(family.sampler_problem(sampler, entry.name) or "")
        sampler = entry.sampler
    if loras is not None:
        installed = {n.casefold() for n in loras}
        for name, _ in parsed.loras:
            if name.casefold() not in installed:
                listed = ", ".join(sorted(loras)[:25]) or "none are installed"
                raise NotFound(f"There is no LoRA called '{name}'. LoRAs: {listed}.")
    return GenerationSpec(
        prompt=prompt,
        negative=parsed.negative if parsed.negative is not None else (d.negative or ""),
        width=width,
        height=height,
        aspect=aspect,
        seed=seed,
        steps=steps,
        guidance=parsed.guidance if parsed.guidance is not None else d.guidance,
        sampler=sampler,
        count=count,
        tile=bool(parsed.tile),
        strength=parsed.strength,
        model=entry.name if entry is not None else (chosen or ""),
        loras=parsed.loras,
    )


# ---------------------------------------------------------------------------------------------
# Formatting


def _num(x: float) -> str:
    """Shortest text that reads back as ``x``, never in exponent notation (the parser's form)."""
    return str(int(x)) if float(x).is_integer() else format(Decimal(repr(float(x))), "f")


def format_parsed(parsed: ParsedPrompt) -> str:
    """Text that parses back to ``parsed``."""
    parts = [parsed.prompt]
    if parsed.aspect is not None:
        parts.append(f"--ar {parsed.aspect[0]}:{parsed.aspect[1]}")
    if parsed.seed is not None:
        parts.append(f"--seed {parsed.seed}")
    if parsed.steps is not None:
        parts.append(f"--steps {parsed.steps}")
    if parsed.guidance is not None:
        parts.append(f"--cfg {_num(parsed.guidance)}")
    if parsed.sampler is not None:
        parts.append(f"--sampler {parsed.sampler}")
    if parsed.strength is not None:
        parts.append(f"--strength {_num(parsed.strength)}")
    if parsed.count is not None:
        parts.append(f"--count {parsed.count}")
    if parsed.tile:
        parts.append("--tile")
    if parsed.model is not None:
        parts.append(f"--model {parsed.model}")
    parts.extend(f"--lora {name}:{_num(weight)}" for name, weight in parsed.loras)
    if parsed.fast:
        parts.append("--fast")
    parts.extend(_steering_parts(parsed))
    if parsed.negative:
        parts.append(f"--no {parsed.negative}")
    return " ".join(parts)


def _steering_parts(parsed: ParsedPrompt) -> list[str]:
    parts = []
    if parsed.control is not None:
        parts.append(f"--control {parsed.control}")
    if parsed.raw_control:
        parts.append("--raw-control")
    if parsed.control_weight is not None:
        parts.append(f"--cw {_num(parsed.control_weight)}")
    if parsed.image_weight is not None:
        parts.append(f"--iw {_num(parsed.image_weight)}")
    if parsed.style_only:
        parts.append("--sref")
    return parts


def spec_to_parsed(spec: GenerationSpec) -> ParsedPrompt:
    """Every field explicit, so the text remakes the spec whatever the defaults are later."""
    return ParsedPrompt(
        prompt=spec.prompt,
        aspect=spec.aspect,
        seed=spec.seed,
        negative=spec.negative or None,
        steps=spec.steps,
        guidance=spec.guidance,
        sampler=spec.sampler,
        strength=spec.strength,
        tile=spec.tile or None,
        count=spec.count,
        model=spec.model or None,
        loras=spec.loras,
    )


def format_spec(spec: GenerationSpec) -> str:
    """The command that makes this grid again: ``resolve(parse_prompt(text))`` gives ``spec``."""
    return format_parsed(spec_to_parsed(spec))
