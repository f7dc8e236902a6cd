"""Choose the meters for a run: NVML on NVIDIA boards, RAPL where readable, else an estimate.

Which boards are measured is a setting (`measure.gpus`: NVML indexes, UUIDs or PCI bus ids),
not a guess from where torch runs the model. Without it, the boards are those the model's CUDA
device maps to (by UUID). With it, `--meter nvml` measures exactly those boards whatever runs
the model: a CPU model, another process, a server.

auto: boards given, or a `cuda` model, get NVML (a GPU run never falls back to a CPU estimate
that would not cover the GPU); otherwise RAPL when `energy_uj` is readable, else the labelled
CPU estimate. Naming a meter that cannot run here is a user error with the fix.

Measuring a region of the caller's code (`Monitor`, `measure`) with device="auto" and no boards
named measures the NVIDIA boards this process can see (CUDA_VISIBLE_DEVICES, else every board
NVML lists) whether or not torch was imported; only where NVML sees none is it the CPU.
"""

from __future__ import annotations

import os
import sys
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


# ---- regions of the caller's code (Monitor, measure) ----------------------------------------


def region_device(device: str) -> str:
    """The device to synchronise at a region's edges. "auto": CUDA when torch uses it (the
    synchronisation is a no-op otherwise); a cuda device that is not there is a one-line
    UserError whether or not torch was imported."""
    if device == "auto":
        return "cuda"
    if not device.startswith("cuda"):
        return device
    if "torch" in sys.modules:
        from tokenwatt._util.devices import resolve_device

        return resolve_device(device, import_torch=False)
    if not visible_boards():
        raise UserError(f"device: {device!r} asked for but no NVIDIA GPU is visible here "
                        "(NVML lists none); use device='cpu' or device='auto'")  # fmt: skip
    return device


_NO_NVML: set[str] = set()  # bindings that could not start: not tried again in this process


def visible_boards(nvml_module: str | None = None) -> list[str]:
    """NVML identities of the boards this process can use: CUDA_VISIBLE_DEVICES's entries
    (indexes or UUIDs, mapped to NVML's), else every board NVML lists; [] without NVML."""
    from tokenwatt.energy.meters.nvml import board_target, import_pynvml, nvml_init

    name = nvml_module or os.environ.get("TOKENWATT_NVML_MODULE") or "pynvml"
    if name in _NO_NVML:
        return []
    try:
        nvml = import_pynvml(nvml_module)
        nvml_init(nvml)
    except MeterUnavailable:
        _NO_NVML.add(name)
        return []
    try:
        count = nvml.nvmlDeviceGetCount()
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        if visible is None:
            return [str(i) for i in range(count)]
        out = []
        for entry in filter(None, (v.strip() for v in visible.split(","))):
            try:
                out.append(str(board_target(entry, nvml)))
            except MeterUnavailable:
                continue  # a MIG slice or an entry that names nothing: not measurable
        return out
    finally:
        nvml.nvmlShutdown()


def open_region_meters(choice: str, device: str, *, gpus: Sequence[str] | None = None,
                       cpu_tdp_w: float | None = None) -> list[Meter]:  # fmt: skip
    """Meters for a region of the caller's code: as `open_meters`, except that auto on device
    "auto" measures the visible NVIDIA boards (`visible_boards`) when there are any."""
    if device == "auto":
        boards = visible_boards() if choice in ("auto", "nvml") and not gpus else []
        if boards:
            return open_meters("nvml", "cpu", gpus=boards, cpu_tdp_w=cpu_tdp_w)
        device = "cpu"
    try:
        return open_meters(choice, device, gpus=gpus, cpu_tdp_w=cpu_tdp_w)
    except UserError as e:
        if device.startswith("cuda") and not gpus:
            raise UserError(f"device: {device!r} cannot be measured ({e}); use device='cpu' "
                            "or device='auto'") from None  # fmt: skip
        raise
