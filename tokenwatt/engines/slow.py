"""A one-line warning before a run that will be very slow, saying why.

Said before any work, so a user can stop a run that would take an hour instead of waiting to
find out. The size is estimated from the model's shapes (a preset's, or a local checkpoint's
config.json) without loading it; a model whose size cannot be known (a hub id) is warned
about only for what does not depend on its size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.models.memory import free_bytes
from tokenwatt.registry.precisions import get

# FP4 emulation quantises and dequantises in PyTorch at every step; on a CPU it is fine for
# the tiny test presets and very slow from about this size (qwen2.5-0.5b decoded at 0.31
# tokens/s on a 2-vCPU machine).
EMULATED_CPU_PARAMS = 50e6
# Each decoded token reads every weight once; a CPU's memory moves tens of GB/s.
LARGE_CPU_WEIGHT_BYTES = 8e9


def slow_reason(cfg: RunConfig, device: str) -> str | None:
    """Why this run will be very slow, in one line; None when nothing says it will."""
    if str(device).split(":")[0] != "cpu":
        return None
    prec = get(cfg.precision)
    params = approx_params(cfg.model)
    size = f" (~{params / 1e9:.2g}B parameters)" if params else ""
    if prec.emulated and (params is None or params >= EMULATED_CPU_PARAMS):
        return (f"slow run: {cfg.precision} on CPU emulates FP4 in PyTorch (every weight "
                f"dequantised at every step) for {cfg.model}{size}: expect well under 1 "
                "token/s and minutes per trial; use a GPU, a smaller model or a dtype "
                "precision")  # fmt: skip
    if params:
        weight_bytes = params * prec.weight_bits / 8
        if weight_bytes > (free_bytes(device) or float("inf")):
            return None  # it cannot load at all: the load says so in one line, not this
        if weight_bytes >= LARGE_CPU_WEIGHT_BYTES:
            return (f"slow run: {cfg.model}{size} at {cfg.precision} holds "
                    f"{weight_bytes / 1e9:.0f} GB of weights, read once per decoded token on "
                    "CPU: expect seconds per token; use a GPU or a smaller model")  # fmt: skip
    return None


def approx_params(model: str) -> float | None:
    """Parameters from the model's shapes (a lower bound), without loading it; None: unknown."""
    from tokenwatt.models.memory import weight_count

    config = _model_config(model)
    if not config:
        return None
    try:
        return float(weight_count(config)) or None
    except (TypeError, ValueError, ZeroDivisionError):
        return None


def _model_config(model: str) -> dict[str, Any] | None:
    from tokenwatt.registry.presets import PRESETS

    if model.startswith("preset:"):
        preset = PRESETS.get(model.removeprefix("preset:"))
        return {"model_type": preset.model_type, **preset.config} if preset else None
    path = Path(model) / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    text = data.get("text_config")
    return text if isinstance(text, dict) else data
