"""FP4 (E2M1) block quantisation, MX and NV flavours, in plain PyTorch.

torchao emulates both formats for `nn.Linear` weights, but its workflows skip the 3-D expert
tensors of transformers' MoE models. These functions quantise any tensor along its last
dimension so that experts get the same numerics; tests check them value for value against
torchao's `MXTensor.to_mx(...).dequantize()` and `NVFP4Tensor.to_nvfp4(...).dequantize()`.

- MXFP4 (OCP MX v1.0): blocks of 32 values share a power-of-two E8M0 scale.
- NVFP4: blocks of 16 values share an FP8 E4M3 scale, times one FP32 scale per tensor.
- NaN and Inf are handled as torchao handles them (see `mx_quantize`): a NaN poisons its
  block, never silently becomes a number; an all-zero NVFP4 tensor stays zero (not NaN).

Storage is real: two E2M1 codes per byte (first value in the low nibble, as torchao packs),
plus the scales, so `weight_bytes` reports what a 4-bit format costs. Dequantisation runs on
every forward; that is emulation, not FP4 hardware.
"""

from __future__ import annotations

from typing import Any

import torch

E2M1_MAX = 6.0
F8E4M3_MAX = 448.0
E8M0_BIAS = 127
E8M0_NAN, E8M0_INF = 255, 254  # torchao's E8M0 codes for a block whose amax is NaN / Inf
MX_BLOCK = 32
NV_BLOCK = 16

# Magnitudes of E2M1 codes 0..7 (code = exponent bits << 1 | mantissa bit).
_E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
# Midpoints between neighbouring codes. A tie rounds to the even code: between an even code
# and the next a tie stays down (x > mid moves up); between an odd code and the next it goes
# up (x >= mid), written as x > (the float32 just below mid) so one bucketize does both.
_MIDPOINTS = (0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0)


def _boundaries(device: torch.device) -> torch.Tensor:
    mids = torch.tensor(_MIDPOINTS, dtype=torch.float32, device=device)
    below = torch.nextafter(mids, torch.zeros_like(mids))
    odd = torch.arange(len(_MIDPOINTS), device=device) % 2 == 1
    return torch.where(odd, below, mids)


def e2m1_encode(x: torch.Tensor) -> torch.Tensor:
    """Round float32 values to E2M1 codes (uint8, 0..15), nearest-even, saturating at +-6."""
    # bucketize(right=False) counts the boundaries strictly below each magnitude.
    code = torch.bucketize(x.float().abs(), _boundaries(x.device)).to(torch.uint8)
    sign = torch.signbit(x).to(torch.uint8) << 3
    return code | sign


def e2m1_decode(code: torch.Tensor) -> torch.Tensor:
    """E2M1 codes (uint8) to float32 values."""
    table = torch.tensor(_E2M1_VALUES, dtype=torch.float32, device=code.device)
    mag = table[(code & 7).long()]
    return torch.where((code & 8) != 0, -mag, mag)


def pack_nibbles(code: torch.Tensor) -> torch.Tensor:
    """Pack pairs of 4-bit codes along the last dim into bytes (first one in the low nibble)."""
    pairs = code.reshape(*code.shape[:-1], -1, 2)
    return pairs[..., 0] | (pairs[..., 1] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], -1)


def _blocks(x: torch.Tensor, block: int) -> torch.Tensor:
    if x.shape[-1] % block:
        raise ValueError(f"last dimension {x.shape[-1]} is not a multiple of block size {block}")
    return x.float().reshape(*x.shape[:-1], x.shape[-1] // block, block)


# --- MXFP4 -------------------------------------------------------------------------------


def mx_quantize(
    x: torch.Tensor, block: int = MX_BLOCK, scaling: str = "rceil"
) -> tuple[torch.Tensor, torch.Tensor]:
    """MXFP4: (packed E2M1 codes uint8 [..., K/2], biased E8M0 exponents uint8 [..., K/block]).

    scaling "rceil": scale = 2^ceil(log2(amax / 6)) (what torchao's MX inference config uses);
    "floor": scale = 2^(floor(log2(amax)) - 2), the OCP spec's minimal rule, which may clip.
    """
    xb = _blocks(x, block)
    amax = xb.abs().amax(dim=-1, keepdim=True)
    if scaling == "rceil":
        exp = torch.ceil(torch.log2(amax / E2M1_MAX)).clamp(-E8M0_BIAS, E8M0_BIAS)
        biased = (exp.nan_to_num(0.0) + E8M0_BIAS).to(torch.uint8)
        # torchao leaves a block with exponent 0 (amax ~ 0) unscaled; do the same.
        inv = torch.where(biased == 0, 1.0, torch.exp2(-exp))
        # As torchao's RCEIL: a NaN in a block makes its scale the E8M0 NaN (0xFF), so the whole
        # block dequantises to NaN; an Inf makes it 0xFE, scaling by 2^-127 (the Inf saturates
        # to +-6 x 2^127, which overflows back to Inf, and the block's finite values flush to 0).
        biased = torch.where(amax.isinf(), E8M0_INF, biased)
        inv = torch.where(amax.isinf(), 2.0**-127, inv)
        biased = torch.where(amax.isnan(), E8M0_NAN, biased)
        inv = torch.where(amax.isnan(), torch.nan, inv)
    elif scaling == "floor":
        amax_exp = torch.frexp(amax).exponent.float() - 1  # floor(log2(amax)) for amax > 0
        exp = torch.where(amax > 0, amax_exp - 2, -E8M0_BIAS).clamp(-E8M0_BIAS, E8M0_BIAS + 1)
        biased = (exp + E8M0_BIAS).to(torch.uint8)
        inv = 1.0 / torch.exp2(exp).clamp(min=torch.finfo(torch.float32).tiny)
        # torchao's FLOOR reads the exponent bits of amax: Inf gives 2^(128 - 2); NaN -> 0xFF.
        biased = torch.where(amax.isinf(), E8M0_BIAS + 126, biased)
        inv = torch.where(amax.isinf(), 2.0**-126, inv)
        biased = torch.where(amax.isnan(), E8M0_NAN, biased)  # OCP MX: a NaN block is NaN
        inv = torch.where(amax.isnan(), torch.nan, inv)
    else:
        raise ValueError(f"unknown MX scaling {scaling!r}; use rceil or floor")
    scaled = (xb * inv).clamp(-E2M1_MAX, E2M1_MAX)
    codes = e2m1_encode(scaled).reshape(x.shape)
    return pack_nibbles(codes), biased.squeeze(-1)


def mx_dequantize(
    packed: torch.Tensor, exponents: torch.Tensor, dtype: Any, block: int = MX_BLOCK
) -> torch.Tensor:
    values = e2m1_decode(unpack_nibbles(packed))
    vb = values.reshape(*values.shape[:-1], values.shape[-1] // block, block)
    scale = torch.exp2(exponents.float() - E8M0_BIAS)
    scale = torch.where(exponents == E8M0_NAN, torch.nan, scale).unsqueeze(-1)
    return (vb * scale).reshape(values.shape).to(dtype)


def mx_qdq(x: torch.Tensor, block: int = MX_BLOCK, scaling: str = "rceil") -> torch.Tensor:
    """Quantise to MXFP4 and back, in x's dtype (used for activations of emulated matmuls)."""
    packed, exps = mx_quantize(x, block, scaling)
    return mx_dequantize(packed, exps, x.dtype, block)


# --- NVFP4 -------------------------------------------------------------------------------


def nv_tensor_scale(x: torch.Tensor, dims: tuple[int, ...] | None = None) -> torch.Tensor:
    """The FP32 outer scale: amax / (448 * 6), over the whole tensor or over `dims` (kept).

    An all-zero tensor (or expert) gets scale 1: its amax would give 0 and every value
    0 / 0 = NaN (as torchao's per-tensor NVFP4 path does); any scale encodes zeros exactly."""
    amax = x.abs().amax() if dims is None else x.abs().amax(dim=dims, keepdim=True)
    scale = amax.float() / (F8E4M3_MAX * E2M1_MAX)
    return torch.where(amax == 0, torch.ones_like(scale), scale)


def nv_quantize(
    x: torch.Tensor, tensor_scale: torch.Tensor, block: int = NV_BLOCK
) -> tuple[torch.Tensor, torch.Tensor]:
    """NVFP4: (packed E2M1 codes uint8 [..., K/2], E4M3 block scales [..., K/block]).

    `tensor_scale` is a scalar or broadcasts against x's leading dims with a trailing 1
    (e.g. [E, 1, 1] for per-expert scales of an [E, N, K] tensor).
    """
    xb = _blocks(x, block)
    ts = tensor_scale.float().unsqueeze(-1)  # broadcast over blocks
    block_scale = xb.abs().amax(dim=-1, keepdim=True) / E2M1_MAX
    tiny = torch.finfo(torch.float8_e4m3fn).tiny
    scale_fp8 = (block_scale / ts).clamp(tiny, F8E4M3_MAX).to(torch.float8_e4m3fn)
    inv = (1.0 / ts) / scale_fp8.float()  # same order of operations as torchao
    scaled = (xb * inv).clamp(-E2M1_MAX, E2M1_MAX)
    codes = e2m1_encode(scaled).reshape(x.shape)
    return pack_nibbles(codes), scale_fp8.squeeze(-1)


def nv_dequantize(
    packed: torch.Tensor,
    block_scales: torch.Tensor,
    tensor_scale: torch.Tensor,
    dtype: Any,
    block: int = NV_BLOCK,
) -> torch.Tensor:
    values = e2m1_decode(unpack_nibbles(packed))
    vb = values.reshape(*values.shape[:-1], values.shape[-1] // block, block)
    scale = tensor_scale.float() * block_scales.float()  # [..., K/block]
    return (vb * scale.unsqueeze(-1)).reshape(values.shape).to(dtype)
