"""Precisions: one name each, applied by one small function, recorded with how it was done.

Importing this module is cheap (no torch at import time): the config validator reads
PRECISION_NAMES from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tokenwatt.errors import UserError

PRECISION_NAMES: tuple[str, ...] = (
    "fp32",
    "bf16",
    "fp16",
    "int8-weight",
    "int8-dynamic",
    "int4-weight",
    "fp8",
    "mxfp4-emulated",
    "nvfp4-emulated",
)

DTYPE_PRECISIONS = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class PrecisionUnsupported(UserError):
    """This precision cannot run on this hardware; the message says what it needs."""


@dataclass
class PrecisionReport:
    """What applying a precision did, recorded in every result row."""

    precision: str
    precision_backend: str  # "torch-dtype", "torchao:Int8WeightOnlyConfig", "tokenwatt-qdq", ...
    emulated: bool = False
    quantized_param_fraction: float = 0.0
    weight_bytes: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


def base_dtype(precision: str, device: str) -> Any:
    """The dtype the model is built in before any quantisation is applied."""
    import torch

    if precision in DTYPE_PRECISIONS:
        return getattr(torch, DTYPE_PRECISIONS[precision])
    return torch.bfloat16


def apply_precision(model: Any, precision: str, device: str) -> PrecisionReport:
    """Apply `precision` to a model already built in `base_dtype(precision, device)`."""
    if precision in DTYPE_PRECISIONS:
        return PrecisionReport(precision, "torch-dtype", weight_bytes=weight_bytes(model))
    raise PrecisionUnsupported(
        f"precision {precision!r} is not implemented yet; use fp32, bf16 or fp16"
    )


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers as stored (quantised tensors included)."""
    total = 0
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:  # tied weights count once
            continue
        seen.add(id(t))
        total += _tensor_bytes(t)
    return total


def _tensor_bytes(t: Any) -> int:
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None:  # torchao tensor subclasses: sum their inner tensors
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()
