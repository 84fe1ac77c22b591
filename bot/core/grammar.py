"""The prompt grammar: ``a red fox in snow --ar 3:2 --seed 42 --no people, text``.

Pure code in two steps, like RoboDanny's converters:

* :func:`parse_prompt` splits text into the prompt and the parameters the user *typed*
  (:class:`ParsedPrompt`, every parameter optional), expanding ``--preset``;
* :func:`resolve` fills what is absent from the user's, then the server's, then the built-in
  defaults, checks the limits and turns the aspect ratio into pixels (:class:`GenerationSpec`).

:func:`format_spec` writes a spec back as text that parses and resolves to the same spec: the
"command that makes this image again". Every failure is a :class:`~bot.core.errors.InvalidInput`
whose message names the parameter and the allowed range.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields
from decimal import Decimal

from bot.core.errors import (
    EmptyPrompt,
    ParameterOutOfRange,
    PromptSyntaxError,
    UnknownPreset,
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

_ALIASES = {"guidance": "cfg", "aspect": "ar", "negative": "no", "tiled": "tile"}
_FLAGS = {"tile"}
_KNOWN = {"ar", "seed", "no", "steps", "cfg", "sampler", "strength", "tile", "count", "preset"}

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


@dataclass(frozen=True)
class GenerationSpec:
    """Everything that decides the pixels of a text-to-image grid (the model aside)."""

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
) -> ParsedPrompt:
    """Parse what the user typed after ``/imagine``. Raises :class:`InvalidInput` subclasses."""
    if len(text) > limits.max_prompt_length:
        raise ParameterOutOfRange(
            f"The prompt is {len(text)} characters long; the limit is {limits.max_prompt_length}."
        )
    prompt, params = split_parameters(text)
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
    if not prompt:
        raise EmptyPrompt("The prompt is empty: describe what to draw before any --parameters.")
    return ParsedPrompt(prompt=prompt, **values)  # type: ignore[arg-type]


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
            known = ", ".join(f"--{k}" for k in sorted(_KNOWN))
            raise PromptSyntaxError(f"Unknown parameter --{raw_name}. Known parameters: {known}.")
        if name in _FLAGS:
            if value:
                raise PromptSyntaxError(
                    f"--{raw_name} takes no value; put '{_clip(value)}' before the parameters."
                )
            key, parsed = "tile", True
        else:
            if not value:
                raise PromptSyntaxError(f"--{raw_name} needs a value: {_HELP[name]}.")
            key, parsed = _FIELD[name], _PARSERS[name](raw_name, value, limits)
        if key in out:
            if key == "negative":  # "--no cars --no people" reads naturally as both
                parsed = f"{out[key]}, {parsed}"
            else:
                raise PromptSyntaxError(f"--{raw_name} is given twice; keep one.")
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
}


_DEFAULT_FLAGS = {"aspect": "ar", "steps": "steps", "guidance": "cfg", "sampler": "sampler"}


def check_default(name: str, value: object, limits: Limits = Limits()) -> object:
    """A default (aspect, steps, guidance or sampler), checked exactly as if it were typed as
    its parameter; returns it in normal form ("16:9", 30, 7.5, "ddim")."""
    parsed = parse_prompt(f"x --{_DEFAULT_FLAGS[name]} {value}", limits=limits)
    if name == "aspect":
        assert parsed.aspect is not None
        return f"{parsed.aspect[0]}:{parsed.aspect[1]}"
    return getattr(parsed, name)


DEFAULT_PARAMETERS = tuple(_DEFAULT_FLAGS)


# ---------------------------------------------------------------------------------------------
# Resolving


def aspect_to_size(aspect: tuple[int, int], native_side: int, limits: Limits) -> tuple[int, int]:
    """A width × height near the model's native pixel count, multiples of 8, within limits."""
    w, h = aspect
    pixels = min(native_side * native_side, limits.max_pixels)
    width = _round8(math.sqrt(pixels * w / h))
    height = _round8(math.sqrt(pixels * h / w))
    while width * height > limits.max_pixels:  # rounding up may cross the limit
        width, height = (width - 8, height) if width >= height else (width, height - 8)
    return width, height


def _round8(x: float) -> int:
    # The VAE downsamples by 8, so sides must be multiples of 8 (diffusers checks this too).
    return max(8, round(x / 8) * 8)


def resolve(
    parsed: ParsedPrompt,
    *,
    layers: Iterable[Defaults] = (),
    native_side: int = 512,
    limits: Limits = Limits(),
    rng: random.Random | None = None,
) -> GenerationSpec:
    """Fill absent parameters from ``layers`` (highest priority first), then the built-ins."""
    d = BUILTIN_DEFAULTS
    for layer in reversed(list(layers)):
        d = layer.over(d)
    assert d.aspect is not None and d.steps is not None and d.guidance is not None
    aspect = parsed.aspect or _parse_aspect("ar", d.aspect, limits)
    steps = parsed.steps if parsed.steps is not None else min(d.steps, limits.max_steps)
    count = parsed.count if parsed.count is not None else min(d.count or 4, limits.max_count)
    prompt = parsed.prompt
    if d.suffix and not prompt.endswith(d.suffix):
        prompt = f"{prompt} {d.suffix}"
    width, height = aspect_to_size(aspect, native_side, limits)
    seed = parsed.seed if parsed.seed is not None else (rng or random).randint(0, SEED_MAX)
    return GenerationSpec(
        prompt=prompt,
        negative=parsed.negative if parsed.negative is not None else (d.negative or ""),
        width=width,
        height=height,
        aspect=aspect,
        seed=seed,
        steps=steps,
        guidance=parsed.guidance if parsed.guidance is not None else d.guidance,
        sampler=parsed.sampler or d.sampler or "euler_a",
        count=count,
        tile=bool(parsed.tile),
        strength=parsed.strength,
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
    if parsed.negative:
        parts.append(f"--no {parsed.negative}")
    return " ".join(parts)


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
    )


def format_spec(spec: GenerationSpec) -> str:
    """The command that makes this grid again: ``resolve(parse_prompt(text))`` gives ``spec``."""
    return format_parsed(spec_to_parsed(spec))
