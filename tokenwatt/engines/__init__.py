"""How tokens get generated: one module per engine behind the interface in base.py.

transformers (tokenwatt's own decode loop, the default), vllm (vLLM's offline engine in
process) and openai (any OpenAI-compatible server, driven by a streaming client). Each is
imported only when chosen, so a plain install never imports vLLM.
"""

from __future__ import annotations

from pathlib import Path

from tokenwatt.config import RunConfig
from tokenwatt.engines.base import ENGINES, Batch, Engine, Prepared, RequestTiming

__all__ = ["ENGINES", "Batch", "Engine", "Prepared", "RequestTiming", "open_engine"]


def open_engine(cfg: RunConfig, device: str, log_dir: Path | None = None) -> Engine:
    """The engine `cfg.engine` names, not yet prepared."""
    if cfg.engine == "vllm":
        from tokenwatt.engines.vllm import VllmEngine

        return VllmEngine(cfg, device)
    if cfg.engine == "openai":
        from tokenwatt.engines.openai import OpenAIEngine

        return OpenAIEngine(cfg, log_dir)
    from tokenwatt.engines.transformers import TransformersEngine

    return TransformersEngine(cfg, device)
