"""Sampler names of the prompt grammar → diffusers schedulers, built from the model's own
scheduler configuration (so betas, prediction type and flow shift stay the model's).

Noise-prediction families (SD 1.x, 2.x, XL) take the classic schedulers; flow-matching families
(SD3, FLUX) take flow-matching ones. FLUX's pipeline passes its own sigmas and shift ``mu``,
which only ``FlowMatchEulerDiscreteScheduler`` accepts.
"""

from __future__ import annotations

from typing import Any

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    HeunDiscreteScheduler,
    LCMScheduler,
    UniPCMultistepScheduler,
)

from engine.families import FAMILIES

SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "euler": (EulerDiscreteScheduler, {}),
    "euler_a": (EulerAncestralDiscreteScheduler, {}),
    "heun": (HeunDiscreteScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "dpmpp_2m_karras": (
        DPMSolverMultistepScheduler,
        {"algorithm_type": "dpmsolver++", "solver_order": 2, "use_karras_sigmas": True},
    ),
    "ddim": (DDIMScheduler, {}),
    "unipc": (UniPCMultistepScheduler, {}),
    "lcm": (LCMScheduler, {}),
}
FLOW_SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "euler": (FlowMatchEulerDiscreteScheduler, {}),
    "heun": (FlowMatchHeunDiscreteScheduler, {}),
}


def make_scheduler(name: str, base_config: Any, family: str = "sd1") -> Any:
    """A fresh scheduler (they keep per-call state, so never share one between calls)."""
    if name not in FAMILIES[family].samplers:
        raise ValueError(f"sampler {name!r} is not available for family {family}")
    table = FLOW_SCHEDULERS if family in ("sd3", "flux") else SCHEDULERS
    cls, overrides = table[name]
    return cls.from_config(base_config, **overrides)
