"""What every trial row of a run shares, whatever made it: the pause before it, and the carbon
and floor columns computed from its figures."""

from __future__ import annotations

from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.runner.session import Session

# Between GPU trials by default: back-to-back trials heat the board and leakage power grows
# with temperature, so each trial starts after a pause; 2 s also lets the driver's 1 s power
# average settle. tokenwatt's choice (not a measured optimum), recorded per row as `cooldown_s`.
GPU_COOLDOWN_S = 2.0


def cooldown_s(cfg: RunConfig, device: str) -> float:
    """The pause before each trial after the first: the config's, else the device default."""
    if cfg.measure.cooldown_s is not None:
        return cfg.measure.cooldown_s
    return GPU_COOLDOWN_S if str(device).startswith("cuda") else 0.0


def enrich(row: dict[str, Any], session: Session) -> dict[str, Any]:
    from tokenwatt.analysis.carbon import carbon_columns
    from tokenwatt.analysis.energy_model import plausibility_columns
    from tokenwatt.analysis.floor import floor_columns

    row.update(carbon_columns(row, session.cfg.carbon))
    row.update(floor_columns(row, session.model_info))
    row.update(plausibility_columns(row, session.model_info, measured_board(session)))
    return row


def measured_board(session: Session) -> str | None:
    """The NVML name of the first GPU board whose energy the run reads, if it reads one."""
    names = [c.device_name for m in session.meters for c in m.channels
             if c.scope == "gpu-board" and c.device_name]  # fmt: skip
    return names[0] if names else None
