"""Energy board by board: the columns and run.json detail of each measured GPU board.

A run measures one or more NVIDIA boards (the boards its model spans, or `measure.gpus`).
Rows carry the total over every board (`total_j`, `decode_j_per_token`, ...) and, for board i
in placement order (board 0 holds the inputs), `board<i>_prefill_j`, `board<i>_decode_j`,
`board<i>_total_j`, `board<i>_decode_j_per_token`, `board<i>_total_j_per_token` and
`board<i>_idle_power_w`; `boards` counts them and `board_uuids` names them. The totals are
the sums of the boards' figures (the same attributed joules), so per-board columns never
disagree with the row. Position, not NVML index, names the columns: the same case run on
other boards (another Slurm job, another node) has the same columns.
"""

from __future__ import annotations

import math
from typing import Any

from tokenwatt.energy.recorder import PhaseEnergy

PER_BOARD_TRIAL = ("prefill_j", "decode_j", "total_j", "decode_j_per_token",
                   "total_j_per_token", "idle_power_w")  # fmt: skip
PER_BOARD_SUMMARY = ("decode_j_per_token", "total_j_per_token")  # means over the trials


def board_meters(meters: list[Any]) -> list[Any]:
    """The GPU board meters of a run (NVML, or a node's exporter: one per board), in the
    order they were opened."""
    return [m for m in meters if getattr(m, "is_board", False)]


def board_constants(meters: list[Any], model_boards: int = 1) -> dict[str, Any]:
    """`boards` (how many GPU boards are measured), `board_uuids` (`;`-joined, in order) and
    `model_boards` (how many CUDA boards the model spans: the floor's aggregate bandwidth);
    `meter_host`: `local`, or the nodes whose exporters were read."""
    boards = board_meters(meters)
    hosts = [h for m in boards if (h := getattr(m, "host", None))]
    return {"boards": len(boards), "board_uuids": ";".join(m.uuid for m in boards),
            "meter_host": ";".join(dict.fromkeys(hosts)) or "local",
            "model_boards": max(1, model_boards)}  # fmt: skip


def board_columns(meters: list[Any], phases: dict[str, PhaseEnergy], tokens: int,
                  decode_tokens: int, idle_w: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """The per-board columns of one trial (nothing when no GPU board is measured)."""
    pre, dec = phases.get("prefill", PhaseEnergy()), phases.get("decode", PhaseEnergy())
    out: dict[str, Any] = {}
    for i, m in enumerate(board_meters(meters)):
        key = m.channels[0].key
        p, d = pre.joules.get(key, math.nan), dec.joules.get(key, math.nan)
        values = (p, d, p + d, _div(d, decode_tokens), _div(p + d, tokens),
                  idle_w.get(key, math.nan))  # fmt: skip
        out.update({f"board{i}_{name}": v for name, v in zip(PER_BOARD_TRIAL, values)})
    return out


def board_detail(meters: list[Any], phases: dict[str, PhaseEnergy]) -> dict[str, Any]:
    """run.json's per-trial `gpu_energy_j` ({uuid: joules of prefill + decode}) and `boards`
    (each board's identity and its joules per phase)."""
    boards = board_meters(meters)
    if not boards:
        return {}
    rows = []
    for i, m in enumerate(boards):
        key = m.channels[0].key
        joules = {name: pe.joules.get(key) for name, pe in phases.items()}
        total = sum(v for k, v in joules.items() if k != "end" and v is not None)
        rows.append({"board": i, "uuid": m.uuid, "nvml_index": m.index,
                     "pci_bus_id": m.pci_bus_id, "channel": key, "joules": joules,
                     "total_j": total, "meter_host": getattr(m, "host", None)})  # fmt: skip
    return {"gpu_energy_j": {r["uuid"]: r["total_j"] for r in rows}, "boards": rows}


def board_summary(trials: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary's per-board means (J/token) and idle power, from the trials' columns."""
    if not trials:
        return {}
    n = int(trials[0].get("boards") or 0)
    out: dict[str, Any] = {}
    for i in range(n):
        for name in PER_BOARD_SUMMARY:
            values = [float(t[f"board{i}_{name}"]) for t in trials if f"board{i}_{name}" in t]
            out[f"board{i}_{name}_mean"] = sum(values) / len(values) if values else math.nan
        out[f"board{i}_idle_power_w"] = trials[0].get(f"board{i}_idle_power_w")
    return out


def _div(a: float, b: float) -> float:
    return a / b if b else math.nan
