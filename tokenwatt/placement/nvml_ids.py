"""NVML's side of a board's identity: the binding, and NVML-numbered names turned into UUIDs.

NVML numbers boards in its own order and ignores CUDA_VISIBLE_DEVICES, so a board is carried
between tools by its UUID (or its PCI bus id), never by an index. `nvml_uuid` reads the names
users give `measure.gpus` (an NVML index, a UUID or a unique prefix, a PCI bus id); CUDA's
numbering is `match.py`'s.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import Any

from tokenwatt.errors import MeterUnavailable, NvmlUnavailable

NVML_MODULE_ENV = "TOKENWATT_NVML_MODULE"
MIG_FIX = (
    "MIG slices report the whole board's power, so per-slice energy would be attribution, not "
    "measurement; disable MIG (nvidia-smi -i N -mig 0) to measure, or use --meter estimate"
)


def import_pynvml(module: str | None = None) -> ModuleType:
    """The NVML binding: nvidia-ml-py's `pynvml`, or the module an explicit setting names.

    `TOKENWATT_NVML_MODULE=tokenwatt.sim.nvml` (or `module=`) chooses another implementation of
    the same functions, e.g. the simulated boards; everything after this call is the same code.
    """
    name = module or os.environ.get(NVML_MODULE_ENV) or "pynvml"
    try:
        nvml = importlib.import_module(name)
    except ImportError:
        if name != "pynvml":
            raise NvmlUnavailable(f"{NVML_MODULE_ENV}={name!r} cannot be imported") from None
        raise NvmlUnavailable(
            "NVML is not installed; pip install nvidia-ml-py (NVIDIA's own binding)"
        ) from None
    if name == "pynvml" and not hasattr(nvml, "_nvmlGetFunctionPointer"):
        raise NvmlUnavailable(
            "an unofficial `pynvml` package shadows nvidia-ml-py; "
            "pip uninstall pynvml && pip install nvidia-ml-py"
        )
    return nvml


def nvml_init(nvml: ModuleType) -> None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise NvmlUnavailable(
            f"NVML could not start ({e}); no NVIDIA driver is loaded on this machine. "
            "Install the driver or use --meter rapl/estimate"
        ) from None


def text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def normal_bus_id(spec: str) -> str:
    """NVML's 8-hex-digit-domain form of a PCI bus id, upper case: 00000000:3B:00.0."""
    parts = spec.upper().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    domain, bus, devfn = parts[-3:]
    return f"{int(domain, 16):08X}:{bus.zfill(2)}:{devfn}"


def full_uuid(prefix: str, nvml: ModuleType) -> str:
    """CUDA accepts unique UUID prefixes; NVML wants the full UUID."""
    matches = []
    for i in range(nvml.nvmlDeviceGetCount()):
        uuid = text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
        if uuid.startswith(prefix):
            matches.append(uuid)
    if len(matches) != 1:
        raise MeterUnavailable(f"{prefix} matches {len(matches)} GPUs")
    return matches[0]


def uuid_of_bus_id(bus_id: str, nvml: ModuleType) -> str:
    """The UUID of the board at a PCI bus id (any of the usual spellings)."""
    try:
        handle = nvml.nvmlDeviceGetHandleByPciBusId(normal_bus_id(bus_id))
    except nvml.NVMLError as e:
        raise MeterUnavailable(f"no GPU at PCI bus id {bus_id} ({e}); `nvidia-smi -q | grep "
                               "Bus` lists them") from None  # fmt: skip
    return text(nvml.nvmlDeviceGetUUID(handle))


def nvml_uuid(spec: str | int, nvml: ModuleType) -> str:
    """The UUID of a board named in NVML's numbering: an index ("0"), a UUID or a unique UUID
    prefix ("GPU-5d3c..."), or a PCI bus id in NVML's form ("00000000:3B:00.0") or short
    ("3b:00.0"). NVML indexes are NVML's own order: CUDA_VISIBLE_DEVICES does not renumber them.
    """
    spec = str(spec).strip()
    if spec.isdigit():
        try:
            return text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(int(spec))))
        except nvml.NVMLError as e:
            raise MeterUnavailable(f"NVML GPU {spec}: {e}") from None
    if spec.startswith("MIG-"):
        raise MeterUnavailable(f"{spec} is a MIG instance; {MIG_FIX}")
    if spec.startswith("GPU-"):
        return full_uuid(spec, nvml)
    if ":" in spec:
        return uuid_of_bus_id(spec, nvml)
    raise MeterUnavailable(
        f"{spec!r} is not an NVML index, a GPU UUID (GPU-...) or a PCI bus id "
        "(00000000:3B:00.0); `nvidia-smi -L` lists them"
    )


def nvml_order(nvml: ModuleType) -> list[tuple[str, str]]:
    """(UUID, PCI bus id) of every board in NVML's own order."""
    out = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        out.append((text(nvml.nvmlDeviceGetUUID(h)),
                    normal_bus_id(text(nvml.nvmlDeviceGetPciInfo(h).busId))))  # fmt: skip
    return out


def cuda_order(nvml: ModuleType) -> list[tuple[str, str]]:
    """(UUID, PCI bus id) of every board in the order CUDA numbers them when
    CUDA_VISIBLE_DEVICES is unset.

    With CUDA_DEVICE_ORDER=PCI_BUS_ID that is PCI bus order. Under the default FASTEST_FIRST,
    CUDA ranks boards by speed and breaks ties by PCI bus id, so on identical boards it is PCI
    bus order too; on mixed boards the ranking is CUDA's own, and an index cannot be trusted
    to name a board here: the fix is CUDA_DEVICE_ORDER=PCI_BUS_ID, or UUIDs.
    """
    boards = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        bus = normal_bus_id(text(nvml.nvmlDeviceGetPciInfo(h).busId))
        boards.append((bus, text(nvml.nvmlDeviceGetUUID(h)), text(nvml.nvmlDeviceGetName(h))))
    boards.sort()
    by_pci = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
    if not by_pci and len({name for _, _, name in boards}) > 1:
        raise MeterUnavailable(
            "CUDA indexes cannot be matched to NVML boards here: the boards differ and "
            "CUDA_DEVICE_ORDER is FASTEST_FIRST (CUDA's own ranking); set "
            "CUDA_DEVICE_ORDER=PCI_BUS_ID or give boards by UUID (nvidia-smi -L)"
        )
    return [(uuid, bus) for bus, uuid, _ in boards]
