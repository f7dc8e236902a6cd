"""The one place CUDA devices are matched to NVML boards.

CUDA and NVML number boards differently: CUDA_VISIBLE_DEVICES renumbers CUDA's (and may hold
UUIDs or unique UUID prefixes), CUDA's order follows CUDA_DEVICE_ORDER, and NVML ignores both.
`cuda_boards` lists the CUDA devices this process sees, in CUDA's order, each with its NVML
identity: from torch when it has CUDA (exact whatever the order), else from
CUDA_VISIBLE_DEVICES and NVML's list in CUDA's order (the model runs elsewhere, or CUDA is not
started yet). Every caller that needs "which board is cuda:N", "which CUDA index is this
UUID" or "which boards can this process use" asks here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tokenwatt.errors import MeterUnavailable
from tokenwatt.placement.nvml_ids import (
    MIG_FIX,
    cuda_order,
    full_uuid,
    import_pynvml,
    normal_bus_id,
    nvml_init,
    nvml_order,
    text,
)


@dataclass(frozen=True)
class Board:
    """One CUDA device of this process and the NVML board it is."""

    cuda: int  # its index in this process's CUDA numbering
    uuid: str  # NVML's UUID ("GPU-..."); "" when nothing could tell it
    pci_bus_id: str = ""  # NVML's form, "" when unknown

    @property
    def ident(self) -> str:
        """How NVML is told which board: its UUID, else its PCI bus id."""
        return self.uuid or self.pci_bus_id


def cuda_visible() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES's entries; None when it is not set (CUDA sees every board)."""
    value = os.environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def cuda_boards(nvml_module: str | None = None, *, strict: bool = True) -> list[Board]:
    """The CUDA devices this process sees, in CUDA's order, with their NVML identities.

    Torch is asked only when the caller imported it and it has CUDA; otherwise NVML (a
    MeterUnavailable when NVML cannot start). strict=False skips CUDA_VISIBLE_DEVICES entries
    that name no measurable board (a MIG slice, a typo) instead of refusing them."""
    torch = sys.modules.get("torch")  # never import torch just for this
    if torch is not None and _torch_has_cuda(torch):
        return [_torch_board(torch, i) for i in range(torch.cuda.device_count())]
    return _nvml_boards(nvml_module, strict)


def _torch_has_cuda(torch: Any) -> bool:
    try:
        return bool(torch.cuda.is_available())
    except Exception:  # noqa: BLE001 - a broken CUDA setup sees no GPU
        return False


def _torch_board(torch: Any, i: int) -> Board:
    p = torch.cuda.get_device_properties(i)
    uuid = str(getattr(p, "uuid", "") or "")
    uuid = uuid if not uuid or uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
    bus = (f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
           if hasattr(p, "pci_bus_id") else "")  # fmt: skip
    return Board(i, uuid, bus)


def _nvml_boards(nvml_module: str | None, strict: bool) -> list[Board]:
    nvml = import_pynvml(nvml_module)
    nvml_init(nvml)
    try:
        visible = cuda_visible()
        order = _order(nvml, strict) if visible is None or any(
            e.isdigit() for e in visible) else None  # fmt: skip
        if visible is None:  # CUDA sees every board, in its order
            return [Board(i, uuid, bus) for i, (uuid, bus) in enumerate(order or [])]
        out: list[Board] = []
        for entry in visible:
            try:
                uuid = _entry_uuid(entry, nvml, order)
            except MeterUnavailable:
                if strict:
                    raise
                continue
            out.append(Board(len(out), uuid, _bus_of(uuid, nvml)))
        return out
    finally:
        nvml.nvmlShutdown()


def _order(nvml: Any, strict: bool) -> list[tuple[str, str]]:
    """CUDA's order of the boards; where it cannot be known (mixed boards, CUDA's own
    ranking) a lenient caller, which only needs the set of boards, takes NVML's."""
    try:
        return cuda_order(nvml)
    except MeterUnavailable:
        if strict:
            raise
        return nvml_order(nvml)


def _entry_uuid(entry: str, nvml: Any, order: list[tuple[str, str]] | None) -> str:
    """The NVML UUID of one CUDA_VISIBLE_DEVICES entry: a UUID (or a unique prefix) as it is;
    a CUDA index through CUDA's own order of the boards."""
    if entry.startswith("MIG-"):
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry} is a MIG instance; {MIG_FIX}")
    if entry.startswith("GPU-"):
        return full_uuid(entry, nvml)
    if not entry.isdigit() or order is None:
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither a CUDA index "
                               "nor a GPU UUID")  # fmt: skip
    if int(entry) >= len(order):
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry} names no board: NVML "
                               f"lists {len(order)}")  # fmt: skip
    return order[int(entry)][0]


def _bus_of(uuid: str, nvml: Any) -> str:
    try:
        return normal_bus_id(text(nvml.nvmlDeviceGetPciInfo(
            nvml.nvmlDeviceGetHandleByUUID(uuid)).busId))  # fmt: skip
    except Exception:  # noqa: BLE001 - the bus id is a second name, not needed to match
        return ""


def find_board(entry: str, boards: Sequence[Board], field: str = "gpus") -> Board:
    """The board a `gpus` entry names among `boards`: a CUDA index (this process's
    numbering), a UUID or a unique UUID prefix, or a PCI bus id."""
    entry = str(entry).strip()
    if entry.isdigit():
        if int(entry) >= len(boards):
            raise MeterUnavailable(f"{field}: cuda:{entry} does not exist; this process sees "
                                   f"{len(boards)} CUDA board(s)")  # fmt: skip
        return boards[int(entry)]
    key = entry.upper() if entry.startswith(("GPU-", "MIG-")) else None
    bus = None if key else _try_bus(entry)
    matches = [
        b
        for b in boards
        if (key and b.uuid.upper().startswith(key)) or (bus and b.pci_bus_id == bus)
    ]
    if len(matches) != 1:
        raise MeterUnavailable(f"{field}: {entry!r} matches {len(matches)} of the {len(boards)} "
                               "boards this process sees; give a full UUID or PCI bus id "
                               "(nvidia-smi -L)")  # fmt: skip
    return matches[0]


def _try_bus(entry: str) -> str | None:
    try:
        return normal_bus_id(entry) if ":" in entry else None
    except ValueError:
        return None


def cuda_index_of(ident: str, boards: Sequence[Board]) -> int | None:
    """The CUDA index of the board NVML calls `ident` (UUID or PCI bus id), None if unseen."""
    for b in boards:
        if ident and ident in (b.uuid, b.pci_bus_id):
            return b.cuda
    return None
