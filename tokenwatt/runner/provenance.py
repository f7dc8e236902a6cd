"""What every row says about how it was made, so a row read alone (merged with other
machines', published) can be trusted: the software's versions, the machine (a salted id, never
its name), the boards' state at the start, and the method (MLPerf-style: how energy was
obtained, the sampling rate, the idle baseline and warm-up). run.json keeps the long form."""

from __future__ import annotations

from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.runner.boards import board_meters


def provenance(cfg: RunConfig, meters: list[Any]) -> dict[str, Any]:
    """The provenance and method columns of a run's rows (read once, before the trials)."""
    return {**software(), **gpu_state(meters), **method(cfg)}


def software() -> dict[str, Any]:
    """Versions and the machine: also what a failed sweep row carries."""
    import sys

    from tokenwatt._util.ids import machine_id
    from tokenwatt._util.version import __version__, commit

    torch, transformers = sys.modules.get("torch"), sys.modules.get("transformers")
    return {
        "tokenwatt_version": __version__,
        "tokenwatt_commit": commit(),
        "torch_version": getattr(torch, "__version__", ""),
        "transformers_version": getattr(transformers, "__version__", ""),
        "machine_id": machine_id(),
    }


def gpu_state(meters: list[Any]) -> dict[str, Any]:
    """CUDA and driver versions, the boards' enforced power limit (summed) and the first
    board's clocks, at the start; empty without a measured board."""
    boards = board_meters(meters)
    if not boards:
        return {"cuda_version": "", "driver_version": "", "power_limit_w": None,
                "gpu_clock_mhz": None, "mem_clock_mhz": None}  # fmt: skip
    import sys

    torch = sys.modules.get("torch")
    states = [m.edge_state() for m in boards]
    limits = [s.get("power_limit_w") for s in states]
    return {
        "cuda_version": (getattr(getattr(torch, "version", None), "cuda", None) or ""),
        "driver_version": boards[0].driver_version(),
        "power_limit_w": sum(limits) if all(v is not None for v in limits) else None,
        "gpu_clock_mhz": states[0].get("sm_clock_mhz"),
        "mem_clock_mhz": states[0].get("mem_clock_mhz"),
    }


def method(cfg: RunConfig) -> dict[str, Any]:
    """How the energy was sampled and what came before the trials (measurement_method itself
    comes with the meters' labels)."""
    m = cfg.measure
    return {"sampling_rate_hz": 1000.0 / m.sample_interval_ms, "idle_baseline_s": m.idle_seconds,
            "warmup_generations": m.warmup}  # fmt: skip
