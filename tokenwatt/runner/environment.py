"""What a result needs to be reproduced: versions, hardware, driver."""

from __future__ import annotations

import platform
import sys
from typing import Any


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    from tokenwatt.energy.meters.estimate import cpu_model_name

    return cpu_model_name()


def environment(device: str) -> dict[str, Any]:
    import psutil
    import torch
    import transformers

    from tokenwatt._util.version import __version__
    from tokenwatt.energy.meters.estimate import cpu_model_name

    env: dict[str, Any] = {
        "tokenwatt": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model_name(),
        "logical_cpus": psutil.cpu_count(logical=True),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "device": device,
        "device_name": device_name(device),
        "torch_threads": torch.get_num_threads(),
        # Other work on the machine shows up in system-wide meters (RAPL, the CPU estimate).
        "load_average_1m": _load_average(),
    }
    for name in ("torchao", "codecarbon"):
        env[name] = _version(name)
    if torch.cuda.is_available():
        env["cuda"] = torch.version.cuda
        env["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        env["nvidia_driver"] = _nvidia_driver()
    return env


def _load_average() -> float | None:
    import os

    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def _version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _nvidia_driver() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else v
    except Exception:
        return None
