"""Choose the meters for a run: NVML on NVIDIA GPUs, RAPL where readable, else an estimate."""

from __future__ import annotations

from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.meters.base import Meter, MeterUnavailable


def open_meters(measure: Any, device: str) -> list[Meter]:
    """Meters for `measure.meter` (auto|nvml|rapl|estimate) on `device`."""
    choice = measure.meter
    if choice == "auto":
        choice = "nvml" if device.startswith("cuda") else "rapl"
        try:
            return open_meters_named(choice, measure, device)
        except MeterUnavailable:
            return open_meters_named("estimate", measure, device)
    try:
        return open_meters_named(choice, measure, device)
    except MeterUnavailable as e:
        raise UserError(f"measure.meter: {e}") from None


def open_meters_named(name: str, measure: Any, device: str) -> list[Meter]:
    if name == "estimate":
        from tokenwatt.meters.estimate import CpuEstimateMeter

        return [CpuEstimateMeter(tdp_w=measure.cpu_tdp_w)]
    if name == "nvml":
        raise MeterUnavailable("NVML meter not available yet; use --meter estimate")
    if name == "rapl":
        raise MeterUnavailable("RAPL meter not available yet; use --meter estimate")
    raise UserError(f"measure.meter: unknown meter {name!r}")
