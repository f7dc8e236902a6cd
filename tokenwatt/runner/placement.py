"""Which GPU boards a case holds, as CUDA sees them and as NVML sees them.

`gpus` (RunConfig) says how many boards a case holds, or which. With `device: cuda` the model
is placed across them (transformers' device_map over exactly those boards); with `device:
cpu` they are only held and measured (the model runs on the CPU, e.g. a client of a server on
those boards). Either way they are the boards measured unless `measure.gpus` names others.

CUDA and NVML number boards differently (CUDA_VISIBLE_DEVICES renumbers CUDA's, NVML ignores
it, CUDA's order follows CUDA_DEVICE_ORDER), so a board is carried from one to the other by
its UUID (or its PCI bus id), never by an index.

An engine that places the model itself (vLLM's tensor_parallel_size) reads the count here:
`len(resolve_placement(cfg, device).cuda)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenwatt.config import RunConfig
from tokenwatt.errors import MeterUnavailable, UserError


@dataclass(frozen=True)
class Placement:
    """cuda: CUDA indexes the model spans ([] when it runs off CUDA); boards: NVML UUIDs (or
    PCI bus ids) of the boards the case holds, in placement order (the first holds the inputs)."""

    cuda: list[int] = field(default_factory=list)
    boards: list[str] = field(default_factory=list)

    def device(self, device: str) -> str:
        """The torch device inputs go to: the first board when the case names its boards."""
        return f"cuda:{self.cuda[0]}" if self.cuda and device.startswith("cuda") else device


def resolve_placement(cfg: RunConfig, device: str) -> Placement:
    """The boards of a run on a resolved `device` (cpu, cuda or cuda:N)."""
    try:
        if device.startswith("cuda"):
            cuda = cuda_indexes(cfg.gpus, device, _cuda_boards())
            return Placement(cuda, [_board_of(i) for i in cuda])
        if cfg.gpus is None:
            return Placement()
        from tokenwatt.energy.meters.select import held_boards

        return Placement([], held_boards(cfg.gpus))
    except MeterUnavailable as e:
        raise UserError(f"gpus: {str(e).removeprefix('gpus: ')}") from None


def cuda_indexes(gpus: int | list[str] | None, device: str,
                 boards: list[tuple[str, str]]) -> list[int]:  # fmt: skip
    """CUDA indexes for `gpus` among `boards` ((uuid, pci bus id) of each CUDA device, in
    CUDA's order): N -> the first N (or device cuda:K alone); a list -> each entry, a CUDA
    index, a UUID (or unique prefix) or a PCI bus id."""
    if gpus is None or gpus == 1:
        index = int(device.split(":")[1]) if ":" in device else 0
        return [index]
    if isinstance(gpus, int):
        if gpus > len(boards):
            raise UserError(f"gpus: {gpus} boards asked for but CUDA sees {len(boards)}; ask "
                            "for fewer or check CUDA_VISIBLE_DEVICES")  # fmt: skip
        return list(range(gpus))
    return [_cuda_index(entry, boards) for entry in gpus]


def _cuda_index(entry: str, boards: list[tuple[str, str]]) -> int:
    if entry.isdigit():
        if int(entry) >= len(boards):
            raise UserError(f"gpus: cuda:{entry} does not exist; CUDA sees {len(boards)} boards")
        return int(entry)
    from tokenwatt.energy.meters.nvml import normal_bus_id

    key = entry.upper() if entry.startswith(("GPU-", "MIG-")) else None
    matches = [i for i, (uuid, bus) in enumerate(boards)
               if (key and uuid.upper().startswith(key))
               or (not key and bus and bus == normal_bus_id(entry))]  # fmt: skip
    if len(matches) != 1:
        raise UserError(f"gpus: {entry!r} matches {len(matches)} of the {len(boards)} boards "
                        "CUDA sees; give a full UUID or PCI bus id (nvidia-smi -L)")  # fmt: skip
    return matches[0]


def _cuda_boards() -> list[tuple[str, str]]:
    """(UUID, PCI bus id) of every CUDA device, in CUDA's order."""
    import torch

    out = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        uuid = str(getattr(p, "uuid", "") or "")
        uuid = uuid if not uuid or uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
        bus = (f"{p.pci_domain_id:08X}:{p.pci_bus_id:02X}:{p.pci_device_id:02X}.0"
               if hasattr(p, "pci_bus_id") else "")  # fmt: skip
        out.append((uuid, bus))
    return out


def _board_of(index: int) -> str:
    """The NVML identity of CUDA device `index` (its UUID, else its PCI bus id)."""
    from tokenwatt.energy.meters.nvml import torch_board

    board = torch_board(index)
    if board is None:
        raise UserError(f"gpus: CUDA device {index} has neither a UUID nor a PCI bus id torch "
                        "can report, so its NVML board cannot be found; update torch")  # fmt: skip
    return board
