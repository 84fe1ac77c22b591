"""The prompt's own syntax, shared by the grammar (which checks it) and the text encoders (which
apply it). No torch here.

* Emphasis, as in AUTOMATIC1111's web UI (its wiki, "Attention/emphasis"): ``(word)`` weighs
  ×1.1, ``((word))`` ×1.21, ``[word]`` ÷1.1, ``(word:1.5)`` sets 1.5 times the weight; ``\\(``
  and ``\\)`` are literal brackets. An unclosed bracket weighs the rest of the prompt; a closing
  bracket with no opening one is literal text.
* Multi-prompts, as in Midjourney (its docs, "Multi-Prompts"): ``a cat::2 a hat`` is two
  concepts, "a cat" at weight 2 and "a hat" at weight 1; ``::`` alone separates with weight 1.
  Negative weights are allowed as long as the weights add up to more than 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BRACKET_FACTOR = 1.1  # A1111: each ( ) multiplies by 1.1, each [ ] divides by it
EMPHASIS_MAX = 5.0  # (word:w) beyond this makes noise on every model; refuse it up front
MULTI_WEIGHT_MAX = 100.0

_MULTI = re.compile(r"::\s*([+-]?(?:\d+\.?\d*|\.\d+))?")
_EXPLICIT = re.compile(r":\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)")
_TOKEN = re.compile(r"\\[()\[\]\\]|[()\[\]]|:\s*[+-]?(?:\d+\.?\d*|\.\d+)\s*\)|[^\\()\[\]:]+|[\\:]")


class PromptTextError(ValueError):
    """The prompt's weights cannot be used; ``str()`` says which, for users."""


@dataclass(frozen=True)
class Fragment:
    text: str
    weight: float


def split_multi_prompt(text: str) -> list[Fragment]:
    """``a cat::2 a hat::1`` → [("a cat", 2), ("a hat", 1)]; text without ``::`` is one part.
    Empty parts are dropped. Raises :class:`PromptTextError` for weights that cannot work."""
    parts: list[Fragment] = []
    start = 0
    for m in _MULTI.finditer(text):
        weight = float(m.group(1)) if m.group(1) is not None else 1.0
        parts.append(Fragment(" ".join(text[start : m.start()].split()), weight))
        start = m.end()
    parts.append(Fragment(" ".join(text[start:].split()), 1.0))
    parts = [p for p in parts if p.text]
    if len(parts) > 1 or "::" in text:
        for p in parts:
            if abs(p.weight) > MULTI_WEIGHT_MAX:
                raise PromptTextError(
                    f"the weight {p.weight:g} of '{p.text}' is too large; "
                    f"::weights go from -{MULTI_WEIGHT_MAX:g} to {MULTI_WEIGHT_MAX:g}."
                )
        if parts and sum(p.weight for p in parts) <= 0:
            raise PromptTextError(
                "the ::weights add up to 0 or less; their total must be above 0 "
                "(as in 'a still life:: fruit::-0.5')."
            )
    return parts or [Fragment("", 1.0)]


def parse_emphasis(text: str) -> list[Fragment]:
    """A1111 emphasis → fragments with their weights; neighbours of equal weight are merged.
    Never fails: anything that is not emphasis syntax is text."""
    out: list[list[object]] = []  # [text, weight] pairs, weights multiplied in place
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for item in out[start:]:
            item[1] = float(item[1]) * factor  # type: ignore[arg-type]

    for m in _TOKEN.finditer(text):
        token = m.group(0)
        if token[0] == "\\" and len(token) == 2:
            out.append([token[1], 1.0])
        elif token == "(":
            round_open.append(len(out))
        elif token == "[":
            square_open.append(len(out))
        elif token[0] == ":" and token.endswith(")") and round_open:
            explicit = _EXPLICIT.match(token)
            assert explicit is not None
            scale(round_open.pop(), float(explicit.group(1)))
        elif token == ")" and round_open:
            scale(round_open.pop(), BRACKET_FACTOR)
        elif token == "]" and square_open:
            scale(square_open.pop(), 1 / BRACKET_FACTOR)
        else:
            out.append([token, 1.0])
    for start in round_open:
        scale(start, BRACKET_FACTOR)
    for start in square_open:
        scale(start, 1 / BRACKET_FACTOR)
    merged: list[Fragment] = []
    for piece, weight in out:
        w = round(float(weight), 6)  # (x)(x)… products: keep 1.1 * 1.1 from reading 1.2100000002
        if merged and merged[-1].weight == w:
            merged[-1] = Fragment(merged[-1].text + str(piece), w)
        else:
            merged.append(Fragment(str(piece), w))
    return [f for f in merged if f.text.strip()] or [Fragment("", 1.0)]


def has_emphasis(text: str) -> bool:
    return any(f.weight != 1.0 for f in parse_emphasis(text))


def plain_text(text: str) -> str:
    """The prompt without emphasis brackets or ``::`` weights: what a model without weighting
    reads."""
    parts = split_multi_prompt(text)
    words = " ".join(f.text for p in parts for f in parse_emphasis(p.text))
    return " ".join(words.split())


def check_prompt_text(text: str) -> None:
    """Raise :class:`PromptTextError` for weights no model can use."""
    for part in split_multi_prompt(text):
        for m in _EXPLICIT.finditer(part.text):
            weight = float(m.group(1))
            if not 0 <= weight <= EMPHASIS_MAX:
                raise PromptTextError(
                    f"the emphasis weight {m.group(1)} is out of range; "
                    f"(word:weight) goes from 0 to {EMPHASIS_MAX:g}."
                )
