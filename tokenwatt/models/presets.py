"""Building a preset's transformers config (the shapes live in `tokenwatt.registry.presets`)."""

from __future__ import annotations

from typing import Any

from tokenwatt.registry.presets import PRESETS


def preset_config(name: str) -> Any:
    """The transformers config object of a preset."""
    from transformers import AutoConfig

    p = PRESETS[name]
    return AutoConfig.for_model(p.model_type, **p.config)
