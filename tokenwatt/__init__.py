"""tokenwatt: joules per generated token of a PyTorch language model, honestly labelled."""

from __future__ import annotations

from typing import Any

from tokenwatt._util.version import __version__

__all__ = ["Monitor", "__version__", "load_results", "measure", "run"]


def load_results(*paths: Any, summary: bool = False) -> Any:
    """A pandas DataFrame of one or many result folders (trial rows, or summary rows)."""
    from tokenwatt.results.load import load_results as _load

    return _load(*paths, summary=summary)


def run(config: Any = None, **overrides: Any) -> Any:
    """Run a config (a YAML path, a RunConfig, or None for the quickstart); returns the outcome.

    Overrides take the command line's flag names with underscores (`batch_size=16`) or dotted
    paths as keys of a dict (`**{"measure.cpu_tdp_w": 95}`); a wrong name is a ConfigError that
    names the nearest right one.
    """
    from tokenwatt.config import RunConfig, config_to_dict, load_config, validate
    from tokenwatt.runner.quiet import quiet_libraries
    from tokenwatt.runner.run import run_config

    if isinstance(config, RunConfig):
        from tokenwatt.config import apply_overrides

        cfg = validate(apply_overrides(config_to_dict(config), overrides)) if overrides else config
    else:
        cfg = load_config(config, **overrides)
    quiet_libraries()
    return run_config(cfg, on_phase=_warn)


def _warn(event: str, text: str) -> None:
    """A run's one-line warnings (e.g. a very slow run), said before the work as a UserWarning."""
    if event == "warning":
        import warnings

        warnings.warn(text, UserWarning, stacklevel=4)


def __getattr__(name: str) -> Any:
    # lazy: importing tokenwatt imports neither torch nor numpy
    if name == "measure":
        from tokenwatt.energy.region import measure

        return measure
    if name == "Monitor":
        from tokenwatt.energy.monitor import Monitor

        return Monitor
    raise AttributeError(name)
