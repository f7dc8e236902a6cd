"""Where a model runs: one resolution of `device`, and synchronisation without importing torch.

`resolve_device` imports torch (it must ask CUDA); `synchronize` never does: code that has
queued CUDA work has imported torch already, so without torch there is nothing to wait for.
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


def synchronize(device: str) -> None:
    """Wait for the device to finish queued work, so a clock mark means what it says."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    kind = str(device).split(":")[0]
    if kind == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize(torch.device(device))
    elif kind == "mps":
        torch.mps.synchronize()
