"""The ``parameters`` PNG text chunk, in the format AUTOMATIC1111's web UI writes and other
Stable Diffusion tools (ComfyUI loaders, CivitAI, image viewers) read back:

    <prompt>
    Negative prompt: <negative>
    Steps: 25, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: ...
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from bot.core.grammar import SAMPLERS

# Our sampler names → the names A1111 writes, so other tools recognise them.
_A1111_SAMPLER = {**SAMPLERS, "euler_a": "Euler a", "dpmpp_2m_karras": "DPM++ 2M Karras"}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def format_parameters(
    *,
    prompt: str,
    negative: str,
    steps: int,
    sampler: str,
    guidance: float,
    seed: int,
    width: int,
    height: int,
    model: str,
    strength: float | None = None,
    tile: bool = False,
    loras: Sequence[Sequence[Any]] = (),
) -> str:
    """The text for one image. Holds nothing job-specific (no ids, no dates), so the same
    request gives byte-identical PNG files."""
    fields = [
        f"Steps: {steps}",
        f"Sampler: {_A1111_SAMPLER.get(sampler, sampler)}",
        f"CFG scale: {_num(guidance)}",
        f"Seed: {seed}",
        f"Size: {width}x{height}",
        f"Model: {_quote(model)}",
    ]
    if strength is not None:
        fields.append(f"Denoising strength: {_num(strength)}")
    if tile:
        fields.append("Tiling: True")
    if loras:
        # A1111 writes each LoRA into the prompt as a tag and lists their file hashes (the first
        # 12 hex digits of the sha256), so other tools find the same files.
        prompt += "".join(f" <lora:{name}:{_num(weight)}>" for name, weight, *_ in loras)
        hashes = ", ".join(
            f"{name}: {str(rest[0]).removeprefix('sha256:')[:12]}"
            for name, _, *rest in loras
            if rest
        )
        if hashes:
            fields.append(f'Lora hashes: "{hashes}"')
    lines = [prompt]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    lines.append(", ".join(fields))
    return "\n".join(lines)


def _quote(value: str) -> str:
    # A1111 quotes values that contain its separators.
    return f'"{value}"' if ("," in value or ":" in value) else value


_FIELD = re.compile(r'\s*([\w ]+):\s*("(?:[^"\\]|\\.)*"|[^,]*)(?:,|$)')


def parse_parameters(text: str) -> dict[str, str]:
    """Read a ``parameters`` chunk back into {'prompt', 'negative', 'Steps', 'Seed', ...}."""
    lines = text.strip().split("\n")
    last = lines.pop() if lines else ""
    out: dict[str, str] = {}
    prompt_lines, negative_lines, target = [], [], None
    for line in lines:
        if line.startswith("Negative prompt:"):
            target = negative_lines
            line = line.removeprefix("Negative prompt:").strip()
        (negative_lines if target is negative_lines else prompt_lines).append(line)
    out["prompt"] = "\n".join(prompt_lines)
    out["negative"] = "\n".join(negative_lines)
    for m in _FIELD.finditer(last):
        out[m.group(1).strip()] = m.group(2).strip().strip('"')
    return out
