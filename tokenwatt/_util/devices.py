"""Synchronisation at phase marks, over every board a model is placed on, without importing
torch (tokenwatt/placement decides the device and the boards; this only waits for them).

`synchronize` never imports torch: code that has queued CUDA work has imported torch already,
so without torch there is nothing to wait for.

A model placed across several boards (`gpus: N`) finishes a step on its last board while the
inputs sit on its first: `place_on` records the CUDA indexes, and `synchronize` then waits
for every one of them, so a phase mark means what it says whichever board the code names.
"""

from __future__ import annotations

import sys

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
