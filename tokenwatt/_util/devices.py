"""Where a model runs: one resolution of `device`, the boards a model is placed on, and
synchronisation without importing torch.

`resolve_device` imports torch (it must ask CUDA); `synchronize` never does: code that has
queued CUDA work has imported torch already, so without torch there is nothing to wait for.

A model placed across several boards (`gpus: N`) finishes a step on its last board while the
inputs sit on its first: `place_on` records the CUDA indexes, and `synchronize` then waits
for every one of them, so a phase mark means what it says whichever board the code names.
"""

from __future__ import annotations

import sys

from tokenwatt.errors import UserError


def resolve_device(device: str, *, import_torch: bool = True) -> str:
    """auto -> cuda when a CUDA GPU is visible, else cpu; a cuda device that is not there is a
    one-line UserError. import_torch=False (measuring a caller's own code): use torch only if
    the caller imported it; without torch nothing runs on CUDA, so auto is cpu."""
    torch = sys.modules.get("torch")
    if torch is None and not import_torch:
        return "cpu" if device == "auto" else device
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device: {device!r} asked for but no CUDA GPU is visible; use --device cpu"
        )
    if device.startswith("cuda:"):
        index = int(device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise UserError(
                f"device: {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} GPU(s)"
            )
    return device


_PLACED: list[int] = []  # CUDA indexes of the boards this process's model spans (2 or more)


def place_on(indexes: list[int]) -> None:
    """Record the CUDA boards a model is placed across ([] or one board: a single device)."""
    _PLACED[:] = list(indexes) if len(indexes) > 1 else []


def placed_boards() -> list[int]:
    """CUDA indexes of the boards the model spans; [] when it is on one device."""
    return list(_PLACED)


def synchronize(device: str) -> None:
    """Wait for the device (and every board a placed model spans) to finish queued work, so a
    clock mark means what it says."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    kind = str(device).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
        for board in _PLACED or [torch.device(device)]:
            torch.cuda.synchronize(board)
    elif kind == "mps":
        torch.mps.synchronize()
