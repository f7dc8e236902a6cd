"""Choose the meters for a run: NVML on NVIDIA GPUs, RAPL where readable, else an estimate.

auto: a `cuda` device gets its GPU's NVML meter (a GPU run never falls back to a CPU estimate
that would not cover the GPU); a CPU run gets RAPL when `energy_uj` is readable, else the
labelled CPU estimate. Naming a meter that cannot run here is a user error with the fix.

Simulation: when the imported `pynvml` is tokenwatt's simulation (tokenwatt.sim), `--meter
nvml` measures simulated GPU 0 whatever device the model runs on, so a CPU box can exercise
the whole GPU path end to end. A real NVML never measures a GPU for a CPU run.
"""

from __future__ import annotations

from typing import Any

from tokenwatt.energy.meters.base import Meter
from tokenwatt.errors import MeterUnavailable, UserError


def open_meters(measure: Any, device: str) -> list[Meter]:
    """Meters for `measure.meter` (auto|nvml|rapl|estimate) on `device`."""
    choice = measure.meter
    try:
        if choice != "auto":
            return open_meters_named(choice, measure, device)
        if device.startswith("cuda"):
            return open_meters_named("nvml", measure, device)
        try:
            return open_meters_named("rapl", measure, device)
        except MeterUnavailable:
            return open_meters_named("estimate", measure, device)
    except MeterUnavailable as e:
        raise UserError(f"measure.meter={choice}: {e}") from None


def open_meters_named(name: str, measure: Any, device: str) -> list[Meter]:
    if name == "estimate":
        from tokenwatt.energy.meters.estimate import CpuEstimateMeter

        return [CpuEstimateMeter(tdp_w=getattr(measure, "cpu_tdp_w", None))]
    if name == "nvml":
        return [open_nvml(device)]
    if name == "rapl":
        from tokenwatt.energy.meters.rapl import RaplMeter

        return [RaplMeter()]
    raise UserError(f"measure.meter: unknown meter {name!r}")


def open_nvml(device: str) -> Meter:
    from tokenwatt.energy.meters.nvml import (
        NvmlMeter,
        cuda_target,
        import_pynvml,
        is_simulated,
        nvml_init,
    )

    nvml = import_pynvml()
    if device.startswith("cuda"):
        nvml_init(nvml)
        try:
            target = cuda_target(device, nvml)
        finally:
            nvml.nvmlShutdown()
        return NvmlMeter(target, nvml=nvml)
    if is_simulated(nvml):
        return NvmlMeter(0, nvml=nvml)
    raise MeterUnavailable(
        f"the model runs on {device!r} but NVML measures NVIDIA GPUs; "
        "use --device cuda, or --meter rapl/estimate for a CPU run"
    )
