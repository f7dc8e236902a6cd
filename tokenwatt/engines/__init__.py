"""How tokens get generated: one module per engine behind the interface in base.py.

transformers (tokenwatt's own decode loop, the default), vllm (vLLM's offline engine in
process) and openai (any OpenAI-compatible server, driven by a streaming client). Each is
imported only when chosen, so a plain install never imports vLLM. What differs between them
is declared on each engine's class (base.Engine), read through `engine_class` before an
engine is made.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from tokenwatt.config import RunConfig
from tokenwatt.engines.base import ENGINES, Batch, Engine, Prepared, RequestTiming
from tokenwatt.placement import Placement

__all__ = ["ENGINES", "Batch", "Engine", "Prepared", "RequestTiming", "engine_class",
           "open_engine"]  # fmt: skip

# One class per name in config.ENGINES (tests/test_placement.py checks they agree).
_CLASSES = {
    "transformers": "tokenwatt.engines.transformers:TransformersEngine",
    "vllm": "tokenwatt.engines.vllm:VllmEngine",
    "openai": "tokenwatt.engines.openai:OpenAIEngine",
}


def engine_class(name: str) -> type[Engine]:
    """The class of engine `name` (its module imported now, the engine's library not yet)."""
    module, _, cls = _CLASSES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_engine(cfg: RunConfig, placement: Placement, log_dir: Path | None = None) -> Engine:
    """The engine `cfg.engine` names, on its placement, not yet prepared."""
    return engine_class(cfg.engine)(cfg, placement, log_dir)
