"""tokenwatt: joules per generated token of a PyTorch language model, honestly labelled."""

from __future__ import annotations

from typing import Any

from tokenwatt._util.version import __version__

__all__ = ["__version__", "load_results", "measure", "run"]


def load_results(*paths: Any, summary: bool = False) -> Any:
    """A pandas DataFrame of one or many result folders (trial rows, or summary rows)."""
    from tokenwatt.results.load import load_results as _load

    return _load(*paths, summary=summary)


def run(config: Any = None, **overrides: Any) -> Any:
    """Run a config (a YAML path, a RunConfig, or None for the quickstart); returns the outcome."""
    from tokenwatt.config import RunConfig, load_config
    from tokenwatt.runner.run import run_config

    cfg = config if isinstance(config, RunConfig) else load_config(config, **overrides)
    return run_config(cfg)


def __getattr__(name: str) -> Any:
    if name == "measure":  # lazy: importing tokenwatt must not import torch
        from tokenwatt.energy.region import measure

        return measure
    raise AttributeError(name)
