"""tokenwatt's own FP4 quantise-dequantise, checked value for value against torchao's."""

from __future__ import annotations

import pytest
import torch

# Imported, never skipped: torchao is in the test extras, and a torchao that moved its
# prototype module must fail here loudly, not skip every equivalence check (issue 26).
from torchao.prototype.mx_formats.mx_tensor import MXTensor, ScaleCalculationMode
from torchao.prototype.mx_formats.nvfp4_tensor import (
    NVFP4Tensor,
    per_tensor_amax_to_scale,
)

from tokenwatt.models import fp4  # noqa: E402

FP4 = torch.float4_e2m1fn_x2


def _weights(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Random values spanning several orders of magnitude per block, plus exact zeros."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g) * torch.exp2(torch.randint(-8, 8, shape, generator=g))
    x[..., :3] = 0.0
    return x.to(dtype)


def test_e2m1_grid_round_trips_and_ties_go_to_even() -> None:
    grid = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    both = torch.cat([grid, -grid])
    assert torch.equal(fp4.e2m1_decode(fp4.e2m1_encode(both)), both)
    ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0, 100.0])
    expected = torch.tensor([0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0, 6.0])
    assert torch.equal(fp4.e2m1_decode(fp4.e2m1_encode(ties)), expected)
    assert torch.equal(fp4.e2m1_decode(fp4.e2m1_encode(-ties)), -expected)


def test_nibble_packing_matches_torchao_layout() -> None:
    from torchao.prototype.mx_formats.kernels import pack_uint4

    codes = torch.randint(0, 16, (6, 32), dtype=torch.uint8)
    assert torch.equal(fp4.pack_nibbles(codes), pack_uint4(codes))
    assert torch.equal(fp4.unpack_nibbles(fp4.pack_nibbles(codes)), codes)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("shape", [(64, 128), (4, 32, 96)])
@pytest.mark.parametrize(
    "scaling,mode", [("rceil", ScaleCalculationMode.RCEIL), ("floor", ScaleCalculationMode.FLOOR)]
)
def test_mxfp4_matches_torchao(dtype, shape, scaling, mode) -> None:
    x = _weights(shape, dtype)
    ref = MXTensor.to_mx(x, FP4, 32, scaling_mode=mode).dequantize(dtype)
    packed, exps = fp4.mx_quantize(x, scaling=scaling)
    ours = fp4.mx_dequantize(packed, exps, dtype)
    assert packed.shape == (*shape[:-1], shape[-1] // 2)
    assert exps.shape == (*shape[:-1], shape[-1] // 32)
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, x)  # it really quantised


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_nvfp4_matches_torchao_2d(dtype) -> None:
    x = _weights((64, 128), dtype, seed=1)
    ts = per_tensor_amax_to_scale(x.abs().amax())
    ref = NVFP4Tensor.to_nvfp4(x, per_tensor_scale=ts).dequantize(dtype)
    packed, scales = fp4.nv_quantize(x, fp4.nv_tensor_scale(x))
    ours = fp4.nv_dequantize(packed, scales, fp4.nv_tensor_scale(x), dtype)
    assert scales.dtype == torch.float8_e4m3fn
    assert torch.equal(ours, ref)
    assert not torch.equal(ours, x)


def test_nvfp4_matches_torchao_3d_per_expert_scale() -> None:
    x = _weights((4, 32, 64), torch.bfloat16, seed=2)
    x[1] *= 1000  # experts with very different ranges need their own outer scale
    ts = fp4.nv_tensor_scale(x, dims=(1, 2))
    ref = NVFP4Tensor.to_nvfp4(x, per_tensor_scale=ts).dequantize(torch.bfloat16)
    packed, scales = fp4.nv_quantize(x, ts)
    assert torch.equal(fp4.nv_dequantize(packed, scales, ts, torch.bfloat16), ref)


def test_emulated_mx_linear_equals_our_qdq_matmul() -> None:
    """Experts (ours) and dense layers (torchao) see the same W4A4 MXFP4 numerics."""
    from torchao.prototype.mx_formats import MXDynamicActivationMXWeightConfig
    from torchao.quantization import quantize_
    from torchao.quantization.quantize_.common.kernel_preference import KernelPreference

    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64, bias=False, dtype=torch.bfloat16)
    w = lin.weight.detach().clone()
    x = torch.randn(5, 128, dtype=torch.bfloat16)
    cfg = MXDynamicActivationMXWeightConfig(
        activation_dtype=FP4, weight_dtype=FP4, kernel_preference=KernelPreference.EMULATED
    )
    quantize_(lin, cfg)
    with torch.no_grad():
        ref = lin(x)
    ours = torch.nn.functional.linear(fp4.mx_qdq(x), fp4.mx_qdq(w))
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_block_size_must_divide() -> None:
    with pytest.raises(ValueError, match="multiple of block size"):
        fp4.mx_quantize(torch.ones(4, 40))


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN, Inf where the other has Inf."""
    return torch.equal(a.isnan(), b.isnan()) and torch.equal(
        torch.nan_to_num(a.float(), nan=0.0), torch.nan_to_num(b.float(), nan=0.0)
    )


@pytest.mark.parametrize(
    "scaling,mode", [("rceil", ScaleCalculationMode.RCEIL), ("floor", ScaleCalculationMode.FLOOR)]
)
def test_mxfp4_nan_and_inf_blocks_as_torchao(scaling, mode) -> None:
    x = _weights((3, 64), torch.bfloat16, seed=4)
    x[0, 3], x[1, 40], x[2, 7] = float("nan"), float("inf"), float("-inf")
    t = MXTensor.to_mx(x, FP4, 32, scaling_mode=mode)
    packed, exps = fp4.mx_quantize(x, scaling=scaling)
    ours = fp4.mx_dequantize(packed, exps, torch.bfloat16)
    assert torch.equal(exps, t.scale.view(torch.uint8))  # NaN -> 0xFF, Inf as torchao codes it
    assert _same(ours, t.dequantize(torch.bfloat16))
    assert ours[0, :32].isnan().all() and not ours[0, 32:].isnan().any()  # NaN poisons its block
    assert ours[1, 40] == float("inf") and ours[2, 7] == float("-inf")  # never silently zeroed


def test_nvfp4_nan_and_inf_blocks_as_torchao() -> None:
    x = _weights((2, 32), torch.bfloat16, seed=5)
    x[0, 2], x[1, 5] = float("nan"), float("inf")
    ref = NVFP4Tensor.to_nvfp4(x).dequantize(torch.bfloat16)
    one = torch.tensor(1.0)
    packed, scales = fp4.nv_quantize(x, one)
    ours = fp4.nv_dequantize(packed, scales, one, torch.bfloat16)
    assert _same(ours, ref) and ours[0, :16].isnan().all()


def test_nvfp4_all_zero_tensor_stays_zero() -> None:
    z = torch.zeros(4, 32, dtype=torch.bfloat16)
    ts = per_tensor_amax_to_scale(z.abs().amax())
    assert NVFP4Tensor.to_nvfp4(z, per_tensor_scale=ts).dequantize(torch.bfloat16).isnan().all()
    ours_ts = fp4.nv_tensor_scale(z)  # torchao's per-tensor path gives NaN; ours must not
    packed, scales = fp4.nv_quantize(z, ours_ts)
    assert torch.equal(fp4.nv_dequantize(packed, scales, ours_ts, torch.bfloat16), z)
    experts = torch.randn(3, 16, 32)
    experts[1] = 0  # one all-zero expert among normal ones
    ts = fp4.nv_tensor_scale(experts, dims=(1, 2))
    packed, scales = fp4.nv_quantize(experts, ts)
    out = fp4.nv_dequantize(packed, scales, ts, torch.float32)
    assert torch.isfinite(out).all() and torch.equal(out[1], experts[1])


def test_nvfp4_precision_leaves_an_all_zero_weight_unquantised() -> None:
    from tokenwatt.models.load import load_model
    from tokenwatt.models.precision import apply_precision

    model = load_model("preset:tiny-llama", "cpu", torch.bfloat16, seed=0).model
    layer = model.model.layers[0].mlp.down_proj
    with torch.no_grad():
        layer.weight.zero_()
    rep = apply_precision(model, "nvfp4-emulated", "cpu")
    ids = torch.randint(0, 4096, (1, 8))
    with torch.inference_mode():
        assert torch.isfinite(model(ids).logits.float()).all()
    assert not hasattr(layer.weight, "__tensor_flatten__") and rep.quantized_param_fraction < 1
