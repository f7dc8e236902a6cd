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


def held_boards(gpus: int | Sequence[str], nvml_module: str | None = None) -> list[str]:
    """NVML UUIDs of the boards a case holds, found without CUDA (the model runs elsewhere, or
    CUDA is not started yet): N -> the first N this process can see, in CUDA_VISIBLE_DEVICES
    order; a list -> each entry, a CUDA index (counted within CUDA_VISIBLE_DEVICES, as
    `cuda:N` is), a UUID or a PCI bus id. Matched by UUID or PCI bus id, never by index."""
    from tokenwatt.energy.meters.nvml import (
        cuda_entry_target,
        cuda_visible,
        import_pynvml,
        nvml_init,
        uuid_of_bus_id,
    )

    nvml = import_pynvml(nvml_module)
    nvml_init(nvml)
    try:
        visible = cuda_visible()
        if isinstance(gpus, int):
            entries = visible if visible is not None else [
                str(i) for i in range(nvml.nvmlDeviceGetCount())]  # fmt: skip
            if len(entries) < gpus:
                raise MeterUnavailable(f"gpus: {gpus} boards asked for but this process sees "
                                       f"{len(entries)}; ask for fewer")  # fmt: skip
            entries = entries[:gpus]
        else:
            entries = [_within(e, visible) for e in gpus]
        return [uuid_of_bus_id(e, nvml) if _is_bus_id(e) else cuda_entry_target(e, nvml)
                for e in entries]  # fmt: skip
    finally:
        nvml.nvmlShutdown()


def _within(entry: str, visible: list[str] | None) -> str:
    """A CUDA index counted within CUDA_VISIBLE_DEVICES, as that list's entry."""
    if not entry.isdigit() or visible is None:
        return entry
    if int(entry) >= len(visible):
        raise MeterUnavailable(f"gpus: board {entry} is not among CUDA_VISIBLE_DEVICES="
                               f"{','.join(visible)}")  # fmt: skip
    return visible[int(entry)]


def _is_bus_id(entry: str) -> bool:
    return ":" in entry and not entry.startswith(("GPU-", "MIG-"))


def boards_not_running_the_model(meters: Sequence[Meter], device: str,
                                 model_boards: Sequence[str] = ()) -> str | None:  # fmt: skip
    """A one-line warning when the measured boards are not the model's: some run no part of
    it, or some of the model's boards (`model_boards`: UUIDs or bus ids) are not measured."""
    from tokenwatt.energy.meters.nvml import NvmlMeter, cuda_target

    boards = [m for m in meters if isinstance(m, NvmlMeter)]
    if not boards:
        return None
    names = ", ".join(f"gpu{m.index}" for m in boards)
    if not device.startswith("cuda"):
        return (f"measured boards {names} do not run the model (it runs on {device}); their "
                "energy is whatever else runs there")  # fmt: skip
    if not model_boards:
        try:
            model_boards = [str(cuda_target(device, boards[0].nvml))]
        except MeterUnavailable:
            return None
    ids = [{str(m.index), m.uuid, m.pci_bus_id} for m in boards]
    outside = [m for m, i in zip(boards, ids) if not i & set(model_boards)]
    unmeasured = [b for b in model_boards if not any(b in i for i in ids)]
    if outside:
        return (f"measured boards {', '.join(f'gpu{m.index}' for m in outside)} are not the "
                f"model's ({device}); their energy is whatever else runs there")  # fmt: skip
    if unmeasured:
        return (f"the model also runs on boards that are not measured ({', '.join(unmeasured)}); "
                "its energy is partial: measure every board it spans (leave measure.gpus "
                "unset)")  # fmt: skip
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
    (CUDA indexes or UUIDs, matched to NVML's boards by UUID), else every board NVML lists;
    [] without NVML."""
    from tokenwatt.energy.meters.nvml import (
        cuda_entry_target,
        cuda_visible,
        import_pynvml,
        nvml_init,
    )

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
        visible = cuda_visible()
        if visible is None:
            return [str(i) for i in range(nvml.nvmlDeviceGetCount())]
        out = []
        for entry in visible:
            try:
                out.append(cuda_entry_target(entry, nvml))
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
