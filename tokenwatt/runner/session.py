"""Everything a run's trials need, prepared once: the engine with its model (or server), the
meters, and the columns every row of the run shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.energy.meters.base import labels
from tokenwatt.engines.base import Engine
from tokenwatt.runner.placement import Placement


@dataclass
class Session:
    """Everything a trial needs, prepared once per run."""

    cfg: RunConfig
    device: str
    engine: Engine
    meters: list[Any]
    constants: dict[str, Any]  # columns shared by every row of this run
    model_info: dict[str, Any]
    model: Any = None  # the in-process model (transformers engine), else None
    idle_power_w: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said once, before the trials
    # The GPU boards the case holds (CUDA indexes the model spans, NVML UUIDs): see placement.py
    placement: Placement = field(default_factory=Placement)
    idle_by_channel: dict[str, float] = field(default_factory=dict)  # idle W per meter channel


def prepare_session(
    cfg: RunConfig,
    device: str,
    on_phase: Callable[[str, str], None] | None = None,
    log_dir: Path | None = None,
) -> Session:
    """Prepare the engine, then open the meters. On failure the engine is closed again."""
    from tokenwatt.engines import open_engine

    phase = on_phase or (lambda event, text: None)
    placement, device = _placement(cfg, device)
    engine = open_engine(cfg, device, log_dir)
    try:
        return _prepare(cfg, device, placement, engine, phase)
    except BaseException:
        engine.close()
        raise


def _placement(cfg: RunConfig, device: str) -> tuple[Placement, str]:
    if cfg.engine == "openai":  # the model runs in a server: this process only drives it
        return Placement(), "cpu"
    from tokenwatt._util.devices import place_on
    from tokenwatt.runner.placement import resolve_placement

    placement = resolve_placement(cfg, device)
    place_on(placement.cuda)  # a model across several boards: loads spread it, marks wait for all
    return placement, placement.device(device)


def _prepare(cfg: RunConfig, device: str, placement: Placement, engine: Engine,
             phase: Callable[[str, str], None]) -> Session:  # fmt: skip
    from tokenwatt.energy.meters.select import open_meters
    from tokenwatt.runner.boards import board_constants
    from tokenwatt.runner.environment import environment

    prepared = engine.prepare(phase)
    m = cfg.measure
    phase("meters", f"opening meters ({m.meter})")
    meters = open_meters(m.meter, device, gpus=m.gpus or placement.boards or None,
                         cpu_tdp_w=m.cpu_tdp_w)  # fmt: skip
    described = engine.describe()
    constants = {
        "name": cfg.name,
        "engine": described["engine"],
        "engine_version": described.get("engine_version", ""),
        "model": cfg.model if cfg.engine != "openai" else _served_model(prepared, cfg),
        "precision": _precision_label(cfg),
        "compile": cfg.compile,
        "device": device,
        "device_name": _device_name(cfg, device, meters),
        "batch_size": cfg.workload.batch_size,
        "prompt_tokens": cfg.workload.prompt_tokens,
        "new_tokens": cfg.workload.new_tokens,
        "seed": cfg.workload.seed,
        **prepared.constants,
        "engine_settings": _settings_text(described.get("engine_settings", {})),
        **labels(c for meter in meters for c in meter.channels),
        **board_constants(meters, len(placement.cuda)),
    }
    meta = {
        "environment": environment(device),
        "meters": [meter.describe() for meter in meters],
        "engine": described,
        **prepared.meta,
    }
    warnings = _warnings(cfg, device, meters, placement)
    return Session(cfg, device, engine, meters, constants, prepared.model_info,
                   model=prepared.model, meta=meta, warnings=warnings,
                   placement=placement)  # fmt: skip


def _precision_label(cfg: RunConfig) -> str:
    """A server's number format is the server's: recorded as given (a label), else 'server'."""
    if cfg.engine == "openai" and cfg.precision == "auto":
        return "server"
    return cfg.precision


def _served_model(prepared: Any, cfg: RunConfig) -> str:
    server = prepared.meta.get("server", {})
    return str(server.get("model") or cfg.server.model or cfg.model)


def _device_name(cfg: RunConfig, device: str, meters: list[Any]) -> str:
    """What ran the model: the boards measured, for a server; else the model's device."""
    from tokenwatt.runner.environment import device_name

    if cfg.engine == "openai":
        boards = [c.device_name for m in meters for c in m.channels
                  if c.scope == "gpu-board" and c.device_name]  # fmt: skip
        if boards:
            return boards[0] if len(set(boards)) == 1 else ";".join(dict.fromkeys(boards))
        from urllib.parse import urlsplit

        from tokenwatt.engines.launch import is_loopback

        host = urlsplit(cfg.server.url or "").hostname or ""
        if cfg.server.launch or is_loopback(host):
            return device_name("cpu")  # a server on this machine, on its CPU
        return f"server at {host}"
    return device_name(device)


def _settings_text(settings: dict[str, Any]) -> str:
    import json

    return json.dumps(settings, sort_keys=True, default=str)


def _warnings(cfg: RunConfig, device: str, meters: list[Any], placement: Placement) -> list[str]:
    from tokenwatt.energy.meters.select import boards_not_running_the_model

    out = []
    if cfg.engine == "openai":
        gpu = any(c.scope == "gpu-board" for m in meters for c in m.channels)
        if not gpu and not cfg.server.launch:
            out.append("server-not-covered: the CPU meter covers this process tree only, and "
                       "the server was not launched by tokenwatt; give --gpus for its boards "
                       "or --launch it")  # fmt: skip
    elif cfg.measure.gpus or cfg.gpus is not None:
        mismatch = boards_not_running_the_model(meters, device, placement.boards)
        if mismatch:
            out.append(f"other-boards: {mismatch}")
    return out
