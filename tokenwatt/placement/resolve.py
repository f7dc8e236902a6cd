"""Where a case runs, decided once: the device (`auto` resolved, and why) and its boards.

`auto` means one thing everywhere: a CUDA GPU if the process that runs the code sees one, else
the CPU. A model run asks torch (the model runs through it); a region of a caller's code
(`Monitor`, `measure`) asks torch when the caller uses CUDA through it, else NVML for the
boards this process may use (the code may reach them some other way). `resolve_device` is the
only function that turns `auto` into a device; `resolve_placement` and `region_placement` make
the one `Placement` value that the engines, the meters, the rows and the benchmarks read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tokenwatt.config import RunConfig
from tokenwatt.errors import MeterUnavailable, NvmlUnavailable, UserError
from tokenwatt.placement.match import Board, cuda_boards, cuda_visible, find_board

GIVEN = "given"
UNSEEN = "but torch sees none"  # in `resolved_from` when an allocated GPU went unused


@dataclass(frozen=True)
class View:
    """What a process sees: how many CUDA GPUs it can use, and how that was seen."""

    gpus: int
    why: str


@dataclass(frozen=True)
class Placement:
    """A case's place, resolved once. device: the torch device inputs go to (cpu, cuda:N);
    resolved_from: how it was decided ("given", or auto's reason); cuda: the CUDA indexes the
    model spans; boards: NVML identities (UUIDs, else PCI bus ids) of the boards the case
    holds, in placement order (the first holds the inputs); measured: those the meters read."""

    device: str = "cpu"
    resolved_from: str = GIVEN
    cuda: tuple[int, ...] = ()
    boards: tuple[str, ...] = ()
    measured: tuple[str, ...] = ()

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def warnings(self) -> list[str]:
        """What a user must hear about this placement before trusting its rows."""
        if UNSEEN in self.resolved_from:
            return [f"gpu-unused: the model ran on the CPU: {self.resolved_from}"]
        return []


def torch_view() -> View:
    """What torch sees; when a GPU was allocated (CUDA_VISIBLE_DEVICES names one) but torch
    sees none, the likely cause."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n:
        return View(n, f"torch sees {n} CUDA GPU(s)")
    allocated = cuda_visible()
    if not allocated:
        return View(0, "torch sees no CUDA GPU")
    build = torch.__version__
    cause = (f"torch {build} is a CPU build" if torch.version.cuda is None else
             f"torch {build} (CUDA {torch.version.cuda}) cannot start CUDA: check the driver "
             "with nvidia-smi")  # fmt: skip
    return View(0, f"a GPU was allocated (CUDA_VISIBLE_DEVICES={','.join(allocated)}) "
                   f"{UNSEEN}: {cause}")  # fmt: skip


def process_view() -> View:
    """What this process sees without importing torch: torch's view when the caller uses CUDA
    through it, else the boards NVML lets it use (within CUDA_VISIBLE_DEVICES)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return torch_view()
    boards = _visible_boards()
    if boards:
        return View(len(boards), f"NVML sees {len(boards)} board(s) this process may use")
    return View(0, "NVML sees no board this process may use")


def resolve_device(device: str, view: Callable[[], View] = torch_view) -> tuple[str, str]:
    """(device, how it was decided): auto -> cuda when `view` sees a CUDA GPU, else cpu; a cuda
    device that is not there is a one-line UserError. `view` is asked only when needed (a
    given cpu imports nothing)."""
    if device == "cpu":
        return device, GIVEN
    seen = view()
    if device == "auto":
        return ("cuda" if seen.gpus else "cpu"), f"auto: {seen.why}"
    if not seen.gpus:
        raise UserError(f"device: {device!r} asked for but no CUDA GPU is visible ({seen.why}); "
                        "use --device cpu or auto")  # fmt: skip
    if ":" in device and int(device.split(":")[1]) >= seen.gpus:
        raise UserError(f"device: {device!r} does not exist; this machine has {seen.gpus} "
                        "GPU(s)")  # fmt: skip
    return device, GIVEN


def resolve_placement(cfg: RunConfig, *, in_process: bool = True) -> Placement:
    """A run's placement. in_process=False: the engine's model runs in a server, so this
    process only drives it (on the CPU) and holds and measures the boards it is told."""
    if in_process:
        device, why = resolve_device(cfg.device)
    else:
        device, why = "cpu", "the engine's server runs the model; this process drives it"
    try:
        if device.startswith("cuda"):
            seen = cuda_boards()
            cuda = _cuda_indexes(cfg.gpus, device, seen)
            boards = tuple(_ident(seen[i]) for i in cuda)
            device = f"cuda:{cuda[0]}"
        else:
            cuda = ()
            boards = () if cfg.gpus is None else _held(cfg.gpus, cuda_boards())
    except MeterUnavailable as e:
        raise UserError(_field("gpus", e)) from None
    measured = boards
    if cfg.measure.gpus and cfg.measure.meter in ("auto", "nvml"):
        measured = measured_boards(cfg.measure.gpus)
    return Placement(device, why, cuda, boards, measured)


def region_placement(device: str = "auto", gpus: Sequence[str] | None = None,
                     meter: str = "auto") -> Placement:  # fmt: skip
    """Where a region of the caller's code runs and which boards measure it: auto measures
    every board this process may use (none: the CPU); cuda[:N] that board; `gpus` (NVML
    indexes, UUIDs or PCI bus ids) exactly those."""
    device, why = resolve_device(device, process_view)
    measured: tuple[str, ...] = ()
    if gpus and meter in ("auto", "nvml"):
        measured = measured_boards(gpus)
    elif device.startswith("cuda") and meter in ("auto", "nvml"):
        seen = _visible_boards()
        index = int(device.split(":")[1]) if ":" in device else None
        chosen = seen if index is None else [b for b in seen if b.cuda == index]
        measured = tuple(b.ident for b in chosen)
    return Placement(device, why, (), (), measured)


def measured_boards(gpus: Sequence[str]) -> tuple[str, ...]:
    """`measure.gpus` (NVML's numbering) as NVML UUIDs, each board once."""
    from tokenwatt.placement.nvml_ids import import_pynvml, nvml_init, nvml_uuid

    try:
        nvml = import_pynvml()
        nvml_init(nvml)
        try:
            return tuple(dict.fromkeys(nvml_uuid(g, nvml) for g in gpus))
        finally:
            nvml.nvmlShutdown()
    except MeterUnavailable as e:
        raise UserError(_field("measure.gpus", e)) from None


_NO_NVML: set[str] = set()  # bindings that could not start: not tried again in this process


def _visible_boards() -> list[Board]:
    """The boards this process may use; [] without NVML (tried once per binding)."""
    import os

    from tokenwatt.placement.nvml_ids import NVML_MODULE_ENV

    name = os.environ.get(NVML_MODULE_ENV) or "pynvml"
    if name in _NO_NVML:
        return []
    try:
        return cuda_boards(strict=False)
    except NvmlUnavailable:
        _NO_NVML.add(name)
        return []
    except MeterUnavailable:
        return []


def _cuda_indexes(gpus: int | list[str] | None, device: str,
                  seen: Sequence[Board]) -> tuple[int, ...]:  # fmt: skip
    """CUDA indexes for `gpus` among `seen`: N -> the first N (or device cuda:K alone); a list
    -> each entry (a CUDA index, a UUID or unique prefix, or a PCI bus id)."""
    if gpus is None or gpus == 1:
        return (int(device.split(":")[1]) if ":" in device else 0,)
    if isinstance(gpus, int):
        _enough(gpus, seen)
        return tuple(range(gpus))
    return tuple(find_board(entry, seen).cuda for entry in gpus)


def _held(gpus: int | list[str], seen: Sequence[Board]) -> tuple[str, ...]:
    """The boards a case holds without running on them (the model runs on the CPU, or in a
    server): N -> the first N this process sees; a list -> each entry."""
    if isinstance(gpus, int):
        _enough(gpus, seen)
        return tuple(b.ident for b in seen[:gpus])
    return tuple(find_board(entry, seen).ident for entry in gpus)


def _ident(board: Board) -> str:
    if not board.ident:
        raise MeterUnavailable(f"CUDA device {board.cuda} has neither a UUID nor a PCI bus id "
                               "torch can report, so its NVML board cannot be found; update "
                               "torch")  # fmt: skip
    return board.ident


def _enough(n: int, seen: Sequence[Board]) -> None:
    if n > len(seen):
        raise MeterUnavailable(f"{n} boards asked for but this process sees {len(seen)}; ask "
                               "for fewer or check CUDA_VISIBLE_DEVICES")  # fmt: skip


def _field(name: str, e: Exception) -> str:
    text = str(e)
    return text if text.startswith(f"{name}:") else f"{name}: {text}"
