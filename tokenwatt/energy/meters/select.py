"""Choose the meters for a run: NVML on NVIDIA boards, RAPL where readable, else an estimate.

Which boards are measured is a setting (`measure.gpus`: NVML indexes, UUIDs or PCI bus ids),
not a guess from where torch runs the model. Without it, the boards are those the model's CUDA
device maps to (by UUID). With it, `--meter nvml` measures exactly those boards whatever runs
the model: a CPU model, another process, a server.

auto: boards given, or a `cuda` model, get NVML (a GPU run never falls back to a CPU estimate
that would not cover the GPU); otherwise RAPL when `energy_uj` is readable, else the labelled
CPU estimate. Naming a meter that cannot run here is a user error with the fix.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenwatt.energy.meters.base import Meter
from tokenwatt.errors import MeterUnavailable, UserError


def open_meters(
    choice: str,
    device: str,
    *,
    gpus: Sequence[str] | None = None,
    cpu_tdp_w: float | None = None,
    nvml_module: str | None = None,
) -> list[Meter]:
    """Meters for `choice` (auto|nvml|rapl|estimate) for a model on `device`.

    gpus: the boards NVML measures (measure.gpus); None means the boards of a cuda `device`.
    nvml_module: the NVML binding to use (default: TOKENWATT_NVML_MODULE, else pynvml).
    """
    asked = choice
    try:
        if choice == "auto":
            choice = "nvml" if gpus or device.startswith("cuda") else _cpu_meter()
        if choice == "estimate":
            from tokenwatt.energy.meters.estimate import CpuEstimateMeter

            return [CpuEstimateMeter(tdp_w=cpu_tdp_w)]
        if choice == "rapl":
            from tokenwatt.energy.meters.rapl import RaplMeter

            return [RaplMeter()]
        if choice == "nvml":
            return open_nvml(device, gpus, nvml_module)
    except MeterUnavailable as e:
        chosen = asked if asked == choice else f"{asked} (chose {choice})"
        raise UserError(f"measure.meter={chosen}: {e}") from None
    raise UserError(f"measure.meter: unknown meter {choice!r}")


def _cpu_meter() -> str:
    from tokenwatt.energy.meters.rapl import readable

    return "rapl" if readable() else "estimate"


def open_nvml(
    device: str, gpus: Sequence[str] | None = None, nvml_module: str | None = None
) -> list[Meter]:
    """One NvmlMeter per board: the `gpus` given, else the board of the cuda `device`."""
    from tokenwatt.energy.meters.nvml import (
        NvmlMeter,
        board_target,
        cuda_target,
        import_pynvml,
        nvml_init,
    )

    nvml = import_pynvml(nvml_module)
    if not gpus and not device.startswith("cuda"):
        raise MeterUnavailable(
            f"the model runs on {device!r} and no boards are named; give --gpus 0 (or UUIDs) "
            "to measure boards whatever runs the model, or use --meter rapl/estimate"
        )
    nvml_init(nvml)
    try:
        targets = [board_target(g, nvml) for g in gpus] if gpus else [cuda_target(device, nvml)]
    finally:
        nvml.nvmlShutdown()
    meters: list[Meter] = []
    try:
        for target in dict.fromkeys(targets):  # a board named twice is measured once
            meters.append(NvmlMeter(target, nvml=nvml))
    except BaseException:
        for m in meters:
            m.close()
        raise
    return meters


def boards_not_running_the_model(meters: Sequence[Meter], device: str) -> str | None:
    """A one-line warning when `measure.gpus` names boards the model does not run on."""
    from tokenwatt.energy.meters.nvml import NvmlMeter, cuda_target

    boards = [m for m in meters if isinstance(m, NvmlMeter)]
    if not boards:
        return None
    names = ", ".join(f"gpu{m.index}" for m in boards)
    if not device.startswith("cuda"):
        return (f"measured boards {names} do not run the model (it runs on {device}); their "
                "energy is whatever else runs there")  # fmt: skip
    try:
        target = cuda_target(device, boards[0].nvml)
    except MeterUnavailable:
        return None
    if all(target not in (m.index, m.uuid) for m in boards):
        return (f"measured boards {names} are not the model's board ({device}); their energy "
                "is whatever else runs there")  # fmt: skip
    return None
