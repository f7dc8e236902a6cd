"""Applying a precision: one registered function per registry entry, recorded with how.

The facts of each precision (bits, formats, what hardware it needs) live in
`tokenwatt.registry.precisions`; this module registers the function that applies each one
(`@applies(name)`) and reports what it did. No torch at import time.

Every quantised precision starts from a BF16 model. torchao quantises the `nn.Linear`
weights (its configs get `set_inductor_config=False`, so applying a precision never changes
global compile settings for the runs after it); `tokenwatt.models.moe.quantize_experts`
quantises the 3-D expert tensors torchao skips. `quantized_param_fraction` says how many of
the model's parameters ended up quantised; `weight_bytes` is the storage actually held,
codes and scales included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenwatt.errors import PrecisionUnsupported, UserError
from tokenwatt.registry.precisions import PRECISION_NAMES, PRECISIONS, unsupported_reason

MX_BLOCK, NV_BLOCK = 32, 16

# name -> the function that applies it: (model, device) -> (backend, values covered, detail).
# Filled by @applies below; every registry entry that is not a dtype cast has one.
Applier = Callable[[Any, str], tuple[str, int, dict[str, Any]]]
APPLIERS: dict[str, Applier] = {}


def applies(name: str) -> Callable[[Applier], Applier]:
    """Register the function that applies precision `name` (torchao's handler pattern)."""

    def register(fn: Applier) -> Applier:
        if name not in PRECISIONS:
            raise KeyError(f"{name!r} is not in the precision registry")
        APPLIERS[name] = fn
        return fn

    return register


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

    return getattr(torch, PRECISIONS[precision].base_dtype)


def check_supported(precision: str, device: str) -> None:
    """Raise PrecisionUnsupported (one line, naming the hardware needed) before any loading."""
    if precision not in PRECISIONS:
        raise UserError(
            f"precision: unknown {precision!r}; choose one of {', '.join(PRECISION_NAMES)}"
        )
    reason = unsupported_reason(precision, device, _cuda_capability(device))
    if reason:
        raise PrecisionUnsupported(f"precision {precision} {reason}")


EXPERTS_IMPLS = ("tokenwatt", "transformers")


def apply_precision(
    model: Any, precision: str, device: str, experts: str = "tokenwatt"
) -> PrecisionReport:
    """Apply `precision` to a model already built in `base_dtype(precision, device)`.

    experts (MoE models): "tokenwatt" runs the experts of every precision, dtype casts
    included, through tokenwatt's expert loop, so a bf16 baseline and a quantised case differ
    only in the number format; "transformers" keeps transformers' own implementation for the
    dtype precisions (the quantised ones have no other). `detail["experts_impl"]` says which
    ran; `detail` also holds the weight inventory (real bytes by role) the floor reads.
    """
    from tokenwatt.models.moe import expert_modules, param_counts, use_expert_loop

    check_supported(precision, device)
    if experts not in EXPERTS_IMPLS:
        raise UserError(f"experts_impl: unknown {experts!r}; use {' or '.join(EXPERTS_IMPLS)}")
    entry = PRECISIONS[precision]
    total = param_counts(model)["params_total"]
    if entry.is_dtype:
        if experts == "tokenwatt":
            use_expert_loop(model)
        return PrecisionReport(precision, "torch-dtype", weight_bytes=weight_bytes(model),
                               detail=_detail(model, {}))  # fmt: skip
    if experts == "transformers" and expert_modules(model):
        raise UserError(
            f"experts_impl: transformers' expert implementation cannot run quantised experts "
            f"({precision}); use experts_impl: tokenwatt (the default)"
        )
    backend, covered, detail = APPLIERS[precision](model, device)
    return PrecisionReport(
        precision,
        backend,
        emulated=entry.emulated,
        quantized_param_fraction=covered / total if total else 0.0,
        weight_bytes=weight_bytes(model),
        detail=_detail(model, detail),
    )


def _detail(model: Any, detail: dict[str, Any]) -> dict[str, Any]:
    """The applier's detail, how MoE experts run, and the weight inventory by role."""
    from tokenwatt.models.inventory import weight_inventory
    from tokenwatt.models.moe import experts_impl

    inventory = weight_inventory(model)
    for k in ("params_total", "weight_bytes"):  # the run's own totals stay authoritative
        inventory.pop(k)
    impl = experts_impl(model)
    return {**detail, **inventory, **({"experts_impl": impl} if impl else {})}


# --- one function per precision -------------------------------------------------------------
# Each returns (backend string, parameters covered, detail) after quantising in place.


@applies("int8-weight")
def _int8_weight(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    from torchao.quantization import Int8WeightOnlyConfig

    dense = _torchao(model, Int8WeightOnlyConfig(set_inductor_config=False))
    experts = _experts(model, "int8")
    backend = "torchao:Int8WeightOnlyConfig(per-row)"
    return _with_experts(backend, experts, "int8 per-row weight"), dense + experts, {}


@applies("int8-dynamic")
def _int8_dynamic(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig

    from tokenwatt.models.moe import act_int8_per_token

    config = Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)
    dense = _torchao(model, config)
    experts = _experts(model, "int8", act_int8_per_token)
    backend = "torchao:Int8DynamicActivationInt8WeightConfig(per-row, per-token)"
    return (
        _with_experts(backend, experts, "int8 weight + int8 per-token act qdq"),
        dense + experts,
        {},
    )


@applies("int4-weight")
def _int4_weight(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    if _device_type(device) == "cuda":
        from torchao.quantization import Int4WeightOnlyConfig

        group = 128
        config = Int4WeightOnlyConfig(
            group_size=group, int4_packing_format="tile_packed_to_4d", set_inductor_config=False
        )
        backend = "torchao:Int4WeightOnlyConfig(group 128, tinygemm tile_packed_to_4d)"
    else:
        # torchao 0.18's Int4WeightOnlyConfig has kernels for CUDA/XPU/NPU only; on CPU its
        # int4 weight-only path is IntxWeightOnlyConfig: int4 codes kept one per byte,
        # dequantised to the activation dtype in the matmul.
        import torch
        from torchao.quantization import IntxWeightOnlyConfig
        from torchao.quantization.granularity import PerGroup

        group = 32
        config = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(group))
        backend = "torchao:IntxWeightOnlyConfig(int4, group 32, unpacked-to-int8)"
    dense = _torchao(model, config, block=group)
    experts = _experts(model, "int4", group_size=group)
    detail = {"group_size": group}
    return _with_experts(backend, experts, f"int4 group {group} weight"), dense + experts, detail


@applies("fp8")
def _fp8(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow

    from tokenwatt.models.moe import act_fp8_per_token

    config = Float8DynamicActivationFloat8WeightConfig(
        granularity=PerRow(), set_inductor_config=False
    )
    dense = _torchao(model, config, block=16)
    experts = _experts(model, "fp8", act_fp8_per_token)
    backend = "torchao:Float8DynamicActivationFloat8WeightConfig(per-row, e4m3)"
    return _with_experts(backend, experts, "fp8 e4m3 weight + act qdq"), dense + experts, {}


@applies("mxfp4-emulated")
def _mxfp4(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    import torch
    from torchao.prototype.mx_formats import MXDynamicActivationMXWeightConfig
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference

    from tokenwatt.models.moe import act_mxfp4

    fp4 = torch.float4_e2m1fn_x2
    config = MXDynamicActivationMXWeightConfig(
        block_size=MX_BLOCK,
        activation_dtype=fp4,
        weight_dtype=fp4,
        kernel_preference=KernelPreference.EMULATED,
    )
    dense = _torchao(model, config, block=MX_BLOCK)
    experts = _experts(model, "mxfp4", act_mxfp4)
    backend = "fp4-emulated:torchao MXFP4 W4A4 (KernelPreference.EMULATED, dequant + bf16 matmul)"
    detail = {"block_size": MX_BLOCK, "scale": "e8m0 rceil", "activations": "mxfp4"}
    return _with_experts(backend, experts, "tokenwatt mxfp4 qdq"), dense + experts, detail


@applies("nvfp4-emulated")
def _nvfp4(model: Any, device: str) -> tuple[str, int, dict[str, Any]]:
    from torchao.prototype.mx_formats import NVFP4WeightOnlyConfig

    # torchao's per-tensor scale of an all-zero weight is 0 and its values 0/0 = NaN: such a
    # weight (rare: zero-initialised layers) stays in bf16 and out of quantized_param_fraction.
    dense = _torchao(model, NVFP4WeightOnlyConfig(use_dynamic_per_tensor_scale=True), block=16,
                     skip_zero=True)  # fmt: skip
    experts = _experts(model, "nvfp4")
    backend = "fp4-emulated:torchao NVFP4WeightOnlyConfig (dequant + bf16 matmul)"
    detail = {"block_size": NV_BLOCK, "scale": "e4m3 + fp32 per tensor", "activations": "bf16"}
    return _with_experts(backend, experts, "tokenwatt nvfp4 qdq"), dense + experts, detail


# --- helpers ---------------------------------------------------------------------------------


def _torchao(model: Any, config: Any, block: int = 1, skip_zero: bool = False) -> int:
    """quantize_ the nn.Linear weights whose shapes the format accepts; return values covered.

    Linears whose inner dimension (and, for block formats, outer dimension) is not a multiple
    of the block are left in BF16 and show up as a lower quantized_param_fraction.
    """
    import torch
    from torchao.quantization import quantize_

    def fits(mod: Any, fqn: str) -> bool:
        if not isinstance(mod, torch.nn.Linear):
            return False
        n, k = mod.weight.shape
        if skip_zero and not bool(mod.weight.detach().abs().amax() > 0):
            return False
        return k % block == 0 and (block == 1 or n % 16 == 0)

    quantize_(model, config, filter_fn=fits)
    return sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and _is_quantized(m.weight)
    )


def _experts(model: Any, scheme: str, act_qdq: Any = None, group_size: int = 32) -> int:
    from tokenwatt.models.moe import quantize_experts

    return quantize_experts(model, scheme, act_qdq, group_size)


def _with_experts(backend: str, experts_covered: int, how: str) -> str:
    return f"{backend} + experts:{how}" if experts_covered else backend


def _is_quantized(t: Any) -> bool:
    return hasattr(t, "__tensor_flatten__")


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def _cuda_capability(device: str) -> tuple[int, int] | None:
    if _device_type(device) != "cuda":
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(device)


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters and buffers as stored (quantised tensors included)."""
    from tokenwatt.models.inventory import tensor_bytes

    total = 0
    seen: set[int] = set()
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:  # tied weights count once
            continue
        seen.add(id(t))
        total += tensor_bytes(t)
    return total
