"""Everything a run's trials need, prepared once: the engine with its model (or server), the
meters, and the columns every row of the run shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokenwatt.config import RunConfig
from tokenwatt.energy.meters.base import labels
from tokenwatt.engines.base import Engine
from tokenwatt.placement import Placement

if TYPE_CHECKING:
    from tokenwatt._util.proctree import ServerProcesses


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
    server: ServerProcesses | None = None  # a served model's processes on this machine


def prepare_session(
    cfg: RunConfig,
    placement: Placement,
    meters: list[Any],
    on_phase: Callable[[str, str], None] | None = None,
    log_dir: Path | None = None,
) -> Session:
    """Prepare the engine on its placement, beside meters already open. On failure the engine
    is closed again."""
    from tokenwatt._util.devices import place_on
    from tokenwatt.engines import open_engine

    phase = on_phase or (lambda event, text: None)
    place_on(list(placement.cuda))  # a model across boards: loads spread it, marks wait for all
    engine = open_engine(cfg, placement, log_dir)
    try:
        return _prepare(cfg, placement, meters, engine, phase)
    except BaseException:
        engine.close()
        raise


def _prepare(cfg: RunConfig, placement: Placement, meters: list[Any], engine: Engine,
             phase: Callable[[str, str], None]) -> Session:  # fmt: skip
    from tokenwatt.runner.boards import board_constants
    from tokenwatt.runner.environment import environment
    from tokenwatt.runner.provenance import provenance

    device = placement.device
    prepared = engine.prepare(phase)
    min_window = max([m.min_window_s() for m in meters if hasattr(m, "min_window_s")] or [0.0])
    if min_window > 0:
        engine.fit_window(min_window, phase)
    described = engine.describe()
    server = engine.server_processes()
    constants = {
        "name": cfg.name,
        "engine": described["engine"],
        "engine_version": described.get("engine_version", ""),
        "model": engine.model_label(),
        "precision": _precision_label(cfg, engine),
        "compile": cfg.compile,
        "device": device,
        "device_resolved_from": placement.resolved_from,
        "device_name": _device_name(cfg, engine, device, meters),
        "batch_size": cfg.workload.batch_size,
        "prompt_tokens": cfg.workload.prompt_tokens,
        "new_tokens": cfg.workload.new_tokens,
        "seed": cfg.workload.seed,
        **prepared.constants,
        "server_processes": server.how if server else "",
        "engine_settings": _settings_text(described.get("engine_settings", {})),
        **labels(c for meter in meters for c in meter.channels),
        **board_constants(meters, len(placement.cuda)),
        **provenance(cfg, meters),
    }
    meta = {
        "environment": environment(device),
        "placement": asdict(placement),
        "meters": [meter.describe() for meter in meters],
        "engine": described,
        **prepared.meta,
    }
    warnings = (placement.warnings() + engine.warnings(meters)
                + _board_warnings(cfg, engine, meters, placement)
                + _shared_board_warnings(meters)
                + _other_process_warnings(meters, server))  # fmt: skip
    return Session(cfg, device, engine, meters, constants, prepared.model_info,
                   model=prepared.model, meta=meta, warnings=warnings,
                   placement=placement, server=server)  # fmt: skip


def _other_process_warnings(meters: list[Any], server: ServerProcesses | None) -> list[str]:
    """Processes on a measured board when the run starts that are not the server's."""
    mine = server.forest.pids() if server and server.forest else set()
    out = []
    for m in meters:
        if others := sorted(set(getattr(m, "other_processes", None) or ()) - mine):
            out.append(f"gpu-shared: GPU {m.index}: other processes use this board (pids "
                       f"{others}); NVML reads the whole board, so their energy is counted "
                       "too")  # fmt: skip
    return out


def _precision_label(cfg: RunConfig, engine: Engine) -> str:
    """An engine that runs its own number format: recorded as given (a label), else
    'server'."""
    if not engine.sets_precision and cfg.precision == "auto":
        return "server"
    return cfg.precision


def _device_name(cfg: RunConfig, engine: Engine, device: str, meters: list[Any]) -> str:
    """What ran the model: the boards measured, for a model run elsewhere; else the model's
    device."""
    from tokenwatt.runner.environment import device_name

    if engine.in_process:
        return device_name(device)
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


def _settings_text(settings: dict[str, Any]) -> str:
    import json

    return json.dumps(settings, sort_keys=True, default=str)


def _board_warnings(cfg: RunConfig, engine: Engine, meters: list[Any],
                    placement: Placement) -> list[str]:  # fmt: skip
    """Measured boards that are not the model's, for a model placed here on named boards."""
    from tokenwatt.energy.meters.select import boards_not_running_the_model

    if not engine.in_process or (not cfg.measure.gpus and cfg.gpus is None):
        return []
    mismatch = boards_not_running_the_model(meters, placement.device, placement.boards)
    return [f"other-boards: {mismatch}"] if mismatch else []


def _shared_board_warnings(meters: list[Any]) -> list[str]:
    """Measured boards that other pods hold too, where an exporter says so (time-slicing)."""
    shared = [f"{m.uuid} (also {', '.join(m.other_pods)})"
              for m in meters if getattr(m, "other_pods", None)]  # fmt: skip
    if not shared:
        return []
    return [f"shared-board: the exporter says other pods hold measured boards too: "
            f"{'; '.join(shared)}; each board's energy is all of it, theirs included"]  # fmt: skip
