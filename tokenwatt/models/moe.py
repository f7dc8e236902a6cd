"""Mixture-of-experts: parameter counts, routing statistics, and quantised experts.

transformers 5 keeps each MoE layer's experts as 3-D parameters (`gate_up_proj`
[E, 2I, H], `down_proj` [E, H, I]) inside an `...Experts` module that is not an `nn.Linear`,
so torchao's `quantize_` leaves them in BF16: most of an MoE's weights. `quantize_experts`
replaces those parameters with quantised storage (int8 / int4 / FP8 / FP4 codes plus scales)
and gives the module a forward that dequantises, per step, only the experts the router
picked, then runs the matmul in the model's dtype. Where the dense layers' torchao path also
quantises activations (int8-dynamic, fp8, mxfp4), the expert forward quantises and
dequantises its activations the same way, so the whole model sees one set of numerics.
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable, Iterator
from typing import Any

import torch

from tokenwatt.errors import UserError

# --- finding experts -----------------------------------------------------------------------


def expert_modules(model: Any) -> list[tuple[str, Any]]:
    """Modules that hold experts as 3-D tensors (quantised or not), with their names."""
    found = []
    for name, mod in model.named_modules():
        if getattr(mod, "_tokenwatt_qexperts", None) is not None:
            found.append((name, mod))
        elif any(p.ndim == 3 for p in mod.parameters(recurse=False)):
            found.append((name, mod))
    return found


def _expert_tensors(mod: Any) -> dict[str, tuple[int, ...]]:
    """Name -> shape of the expert weight tensors of one experts module."""
    q = getattr(mod, "_tokenwatt_qexperts", None)
    if q is not None:
        return {n: w.shape for n, w in q.items()}
    return {n: tuple(p.shape) for n, p in mod.named_parameters(recurse=False) if p.ndim == 3}


def _top_k(model: Any) -> int | None:
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        k = getattr(cfg, "num_experts_per_tok", None)
        if k:
            return int(k)
    return None


def param_counts(model: Any) -> dict[str, int]:
    """params_total and params_active per token (experts count top_k / num_experts).

    Counts logical parameters, so a model whose experts were quantised (stored as buffers)
    reports the same totals as before quantisation. Dense models: active == total.
    """
    total = sum(p.numel() for p in model.parameters())
    k = _top_k(model)
    inactive = 0
    for _, mod in expert_modules(model):
        shapes = _expert_tensors(mod)
        numel = sum(_numel(s) for s in shapes.values())
        if getattr(mod, "_tokenwatt_qexperts", None) is not None:
            total += numel  # stored as buffers now, still parameters of the model
        n_exp = next(iter(shapes.values()))[0]
        if k:
            inactive += numel - numel * min(k, n_exp) // n_exp
    return {"params_total": total, "params_active": total - inactive}


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --- routing statistics --------------------------------------------------------------------


PHASES = ("decode", "prefill")


@contextlib.contextmanager
def track_routing(model: Any, decode_tokens: int | None = None) -> Iterator[dict[str, Any]]:
    """Count tokens per expert per layer while the block runs, decode and prefill apart.

    A forward pre-hook on each experts module reads the router's `top_k_index` argument and
    accumulates a bincount on the device (no host sync inside the measured window). A call
    routing exactly `decode_tokens` tokens (the batch size: one new token per sequence) is a
    decode step; any other is prefill. (With decode_tokens None every call counts as decode;
    a 1-token prompt makes prefill look like a decode step, which it then is.) After the block
    the dict holds, per phase P in (decode, prefill): `routing_P_tokens_per_expert` (per layer
    list of counts), `routing_P_imbalance_max_over_mean` (per layer max/mean, averaged over
    layers), `routing_P_imbalance_worst_layer` and `routing_P_experts_touched_mean` (distinct
    experts a forward call touched, averaged over layers and calls: the experts a step must
    read, which the decode floor uses). Dense models yield an empty dict.
    """
    stats: dict[str, Any] = {}
    mods = expert_modules(model)
    acc = {ph: _Acc(len(mods)) for ph in PHASES}
    handles = []
    for i, (_, mod) in enumerate(mods):
        n_exp = next(iter(_expert_tensors(mod).values()))[0]
        handles.append(mod.register_forward_pre_hook(
            _routing_hook(i, n_exp, acc, decode_tokens), with_kwargs=True))  # fmt: skip
    try:
        yield stats
    finally:
        for h in handles:
            h.remove()
        for ph in PHASES:
            stats.update({f"routing_{ph}_{k}": v for k, v in acc[ph].summary().items()})


class _Acc:
    """Per-layer routing counts of one phase."""

    def __init__(self, layers: int) -> None:
        self.counts: list[torch.Tensor | None] = [None] * layers
        self.touched: list[torch.Tensor | None] = [None] * layers
        self.calls = [0] * layers

    def add(self, i: int, c: torch.Tensor) -> None:
        self.counts[i] = c if self.counts[i] is None else self.counts[i] + c
        t = (c > 0).sum()
        self.touched[i] = t if self.touched[i] is None else self.touched[i] + t
        self.calls[i] += 1

    def summary(self) -> dict[str, Any]:
        per_layer = [c.cpu().tolist() for c in self.counts if c is not None]
        if not per_layer:
            return {}
        ratios = []
        for c in per_layer:
            mean = sum(c) / len(c)
            ratios.append(max(c) / mean if mean > 0 else 0.0)
        touched = [float(t.item()) / n for t, n in zip(self.touched, self.calls, strict=True)
                   if t is not None and n]  # fmt: skip
        return {
            "tokens_per_expert": per_layer,
            "imbalance_max_over_mean": sum(ratios) / len(ratios),
            "imbalance_worst_layer": max(ratios),
            "experts_touched_mean": sum(touched) / len(touched),
        }


def _routing_hook(
    i: int, n_exp: int, acc: dict[str, _Acc], decode_tokens: int | None
) -> Callable[..., None]:
    def hook(mod: Any, args: tuple, kwargs: dict) -> None:
        idx = kwargs.get("top_k_index", args[1] if len(args) > 1 else None)
        if idx is None:
            return
        c = torch.bincount(idx.reshape(-1).long(), minlength=n_exp + 1)[:n_exp]
        tokens = idx.shape[0] if idx.ndim > 1 else idx.numel()
        decode = decode_tokens is None or tokens == decode_tokens
        acc["decode" if decode else "prefill"].add(i, c)

    return hook


# --- quantised expert storage ----------------------------------------------------------------


class QuantizedExperts(torch.nn.Module):
    """One 3-D expert tensor in quantised storage; `expert(e)` dequantises one expert's matrix.

    scheme: "int8" (per-row symmetric), "int4" (per-group symmetric, two codes a byte),
    "fp8" (E4M3, per-row scale), "mxfp4" (E2M1, 32-blocks, E8M0 scales), "nvfp4" (E2M1,
    16-blocks, E4M3 scales, one FP32 scale per expert).
    """

    def __init__(self, w: torch.Tensor, scheme: str, group_size: int = 32) -> None:
        super().__init__()
        self.scheme, self.shape, self.dtype = scheme, tuple(w.shape), w.dtype
        self.group_size = group_size
        for name, t in _QUANTIZE[scheme](w.detach(), group_size).items():
            self.register_buffer(name, t)

    def expert(self, e: int) -> torch.Tensor:
        return _DEQUANTIZE[self.scheme](self, e)

    def dequantize(self) -> torch.Tensor:
        """The whole [E, N, K] tensor in the original dtype (tests and inspection)."""
        return torch.stack([self.expert(e) for e in range(self.shape[0])])

    def numel(self) -> int:
        return _numel(self.shape)


def _q_int8(w: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
    scale = (w.float().abs().amax(-1, keepdim=True) / 127).clamp(min=1e-12)
    q = torch.round(w.float() / scale).clamp(-128, 127).to(torch.int8)
    return {"qdata": q, "scale": scale}


def _q_int4(w: torch.Tensor, g: int) -> dict[str, torch.Tensor]:
    if w.shape[-1] % g:
        raise UserError(f"int4 experts need the inner dimension {w.shape[-1]} divisible by {g}")
    wg = w.float().reshape(*w.shape[:-1], -1, g)
    scale = (wg.abs().amax(-1, keepdim=True) / 7).clamp(min=1e-12)
    q = torch.round(wg / scale).clamp(-8, 7).to(torch.int16).reshape(w.shape)
    from tokenwatt.models.fp4 import pack_nibbles

    return {"qdata": pack_nibbles((q & 0x0F).to(torch.uint8)), "scale": scale.squeeze(-1)}


def _q_fp8(w: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
    scale = (w.float().abs().amax(-1, keepdim=True) / 448.0).clamp(min=1e-12)
    return {"qdata": (w.float() / scale).to(torch.float8_e4m3fn), "scale": scale}


def _q_mxfp4(w: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
    from tokenwatt.models.fp4 import mx_quantize

    packed, exps = mx_quantize(w.contiguous())
    return {"qdata": packed, "scale": exps}


def _q_nvfp4(w: torch.Tensor, _: int) -> dict[str, torch.Tensor]:
    from tokenwatt.models.fp4 import nv_quantize, nv_tensor_scale

    ts = nv_tensor_scale(w, dims=(1, 2))  # one outer scale per expert, as torchao does for 3-D
    packed, scales = nv_quantize(w.contiguous(), ts)
    return {"qdata": packed, "scale": scales, "tensor_scale": ts}


def _dq_int8(q: QuantizedExperts, e: int) -> torch.Tensor:
    return (q.qdata[e].float() * q.scale[e]).to(q.dtype)


def _dq_int4(q: QuantizedExperts, e: int) -> torch.Tensor:
    from tokenwatt.models.fp4 import unpack_nibbles

    codes = unpack_nibbles(q.qdata[e]).to(torch.int16)
    vals = torch.where(codes > 7, codes - 16, codes).float()
    vals = vals.reshape(*vals.shape[:-1], -1, q.group_size) * q.scale[e].unsqueeze(-1)
    return vals.reshape(q.shape[1:]).to(q.dtype)


def _dq_fp8(q: QuantizedExperts, e: int) -> torch.Tensor:
    return (q.qdata[e].float() * q.scale[e]).to(q.dtype)


def _dq_mxfp4(q: QuantizedExperts, e: int) -> torch.Tensor:
    from tokenwatt.models.fp4 import mx_dequantize

    return mx_dequantize(q.qdata[e], q.scale[e], q.dtype)


def _dq_nvfp4(q: QuantizedExperts, e: int) -> torch.Tensor:
    from tokenwatt.models.fp4 import nv_dequantize

    return nv_dequantize(q.qdata[e], q.scale[e], q.tensor_scale[e], q.dtype)


_QUANTIZE = {
    "int8": _q_int8,
    "int4": _q_int4,
    "fp8": _q_fp8,
    "mxfp4": _q_mxfp4,
    "nvfp4": _q_nvfp4,
}
_DEQUANTIZE = {
    "int8": _dq_int8,
    "int4": _dq_int4,
    "fp8": _dq_fp8,
    "mxfp4": _dq_mxfp4,
    "nvfp4": _dq_nvfp4,
}


# --- activation quantise-dequantise (matching the dense layers' dynamic activation path) ------


def act_int8_per_token(x: torch.Tensor) -> torch.Tensor:
    scale = (x.float().abs().amax(-1, keepdim=True) / 127).clamp(min=1e-12)
    return (torch.round(x.float() / scale).clamp(-128, 127) * scale).to(x.dtype)


def act_fp8_per_token(x: torch.Tensor) -> torch.Tensor:
    scale = (x.float().abs().amax(-1, keepdim=True) / 448.0).clamp(min=1e-12)
    return ((x.float() / scale).to(torch.float8_e4m3fn).float() * scale).to(x.dtype)


def act_mxfp4(x: torch.Tensor) -> torch.Tensor:
    from tokenwatt.models.fp4 import mx_qdq

    return mx_qdq(x)


# --- replacing the experts' storage and forward ------------------------------------------------


def quantize_experts(
    model: Any,
    scheme: str,
    act_qdq: Callable[[torch.Tensor], torch.Tensor] | None = None,
    group_size: int = 32,
) -> int:
    """Quantise every 3-D expert tensor of `model` in place; return how many values it covered.

    Each experts module gets its tensors replaced by `QuantizedExperts` storage and a forward
    that dequantises only the experts the router selected. Supports the gated, untransposed,
    bias-free layout of Mixtral, Qwen3-MoE and OLMoE (and others built the same way).
    """
    covered = 0
    for name, mod in expert_modules(model):
        if getattr(mod, "_tokenwatt_qexperts", None) is not None:
            continue
        _check_layout(name, mod)
        q = {}
        for pname, p in list(mod.named_parameters(recurse=False)):
            if p.ndim != 3:
                continue
            q[pname] = QuantizedExperts(p.data, scheme, group_size)
            del mod._parameters[pname]
            covered += p.numel()
        mod._tokenwatt_qexperts = torch.nn.ModuleDict(q)
        mod._tokenwatt_act_qdq = act_qdq
        mod.forward = types.MethodType(_quantized_experts_forward, mod)
    return covered


def _check_layout(name: str, mod: Any) -> None:
    params = {n for n, p in mod.named_parameters(recurse=False) if p.ndim == 3}
    ok = (
        params == {"gate_up_proj", "down_proj"}
        and not getattr(mod, "is_transposed", False)
        and not getattr(mod, "has_bias", False)
    )
    if not ok:
        raise UserError(
            f"experts module {name!r} ({type(mod).__name__}) has a layout tokenwatt cannot "
            f"quantise yet (3-D tensors {sorted(params)}); use bf16 or fp32 for this model"
        )


LOOP_IMPL = "tokenwatt-loop"


def use_expert_loop(model: Any) -> int:
    """Run every (unquantised) experts module through tokenwatt's expert loop, the one the
    quantised precisions use, so a bf16 baseline and a quantised MoE differ only in the
    number format, not in the implementation. Returns how many modules it switched."""
    n = 0
    for name, mod in expert_modules(model):
        if getattr(mod, "_tokenwatt_qexperts", None) is not None:
            continue
        _check_layout(name, mod)
        mod.forward = types.MethodType(_quantized_experts_forward, mod)
        n += 1
    return n


def experts_impl(model: Any) -> str:
    """How the MoE experts of `model` run: tokenwatt's loop or transformers' implementation
    (config._experts_implementation); "" for a dense model."""
    mods = expert_modules(model)
    if not mods:
        return ""
    if all(getattr(m.forward, "__func__", None) is _quantized_experts_forward for _, m in mods):
        return LOOP_IMPL
    impl = getattr(model.config, "_experts_implementation", None) or "eager"
    return f"transformers-{impl}"


def _weight(mod: Any, name: str, e: int) -> torch.Tensor:
    """Expert e's matrix `name`: dequantised from tokenwatt's storage, or the plain slice."""
    q = getattr(mod, "_tokenwatt_qexperts", None)
    return q[name].expert(e) if q is not None else getattr(mod, name)[e]


def _quantized_experts_forward(
    self: Any, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """Eager expert loop (as transformers' own), dequantising each selected expert once.

    The same loop serves unquantised experts (use_expert_loop): weights are then the plain
    slices, so dtype and quantised precisions share one implementation."""
    qdq = getattr(self, "_tokenwatt_act_qdq", None) or (lambda t: t)
    out = torch.zeros_like(hidden_states)
    q = getattr(self, "_tokenwatt_qexperts", None)
    n_exp = q["gate_up_proj"].shape[0] if q is not None else self.gate_up_proj.shape[0]
    for e in torch.unique(top_k_index).tolist():
        if e >= n_exp:  # expert-parallel sentinel
            continue
        token_idx, pos = torch.where(top_k_index == e)
        h = torch.nn.functional.linear(qdq(hidden_states[token_idx]),
                                       _weight(self, "gate_up_proj", e))  # fmt: skip
        h = self._apply_gate(h)
        y = torch.nn.functional.linear(qdq(h), _weight(self, "down_proj", e))
        y = y * top_k_weights[token_idx, pos, None]
        out.index_add_(0, token_idx, y.to(out.dtype))
    return out
