"""MoE presets, parameter counts, routing statistics and quantised experts."""

from __future__ import annotations

import json

import pytest
import torch

from tokenwatt.models.load import load_model
from tokenwatt.models.moe import (
    QuantizedExperts,
    expert_modules,
    param_counts,
    quantize_experts,
    track_routing,
)
from tokenwatt.models.presets import preset_config
from tokenwatt.registry.presets import PRESETS

IDS = torch.randint(0, 4096, (2, 8), generator=torch.Generator().manual_seed(0))


def _tiny_moe(dtype=torch.bfloat16):
    return load_model("preset:tiny-moe", "cpu", dtype, seed=0).model


@pytest.mark.parametrize(
    "name,total,active",
    [("mixtral-8x7b", 46.70e9, 12.88e9), ("qwen3-moe-30b-a3b", 30.53e9, 3.35e9),
     ("olmoe-1b-7b", 6.92e9, 1.28e9)],
)  # fmt: skip
def test_big_moe_presets_build_on_meta_with_published_sizes(name, total, active) -> None:
    from transformers import AutoModelForCausalLM

    assert PRESETS[name].moe
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(preset_config(name), dtype=torch.bfloat16)
    counts = param_counts(model)
    assert counts["params_total"] == pytest.approx(total, rel=0.01)
    assert counts["params_active"] == pytest.approx(active, rel=0.01)


def test_param_counts_dense_and_tiny_moe() -> None:
    dense = load_model("preset:tiny-llama", "cpu", torch.float32).model
    c = param_counts(dense)
    assert c["params_total"] == c["params_active"] == sum(p.numel() for p in dense.parameters())
    moe = _tiny_moe()
    experts = sum(p.numel() for _, m in expert_modules(moe) for p in m.parameters() if p.ndim == 3)
    c = param_counts(moe)
    assert c["params_total"] == sum(p.numel() for p in moe.parameters())
    assert c["params_active"] == c["params_total"] - experts * 6 // 8  # top-2 of 8


def test_routing_stats_count_every_token_choice() -> None:
    moe = _tiny_moe()

    def one_call(ids):
        with torch.inference_mode(), track_routing(moe) as s:
            moe(ids)
        return s["routing_decode_tokens_per_expert"]

    a, b = one_call(IDS), one_call(IDS[:, :3])
    with torch.inference_mode(), track_routing(moe) as stats:
        moe(IDS)
        moe(IDS[:, :3])
    per_layer = stats["routing_decode_tokens_per_expert"]
    assert len(per_layer) == 4 and all(len(c) == 8 for c in per_layer)
    assert all(sum(c) == (16 + 6) * 2 for c in per_layer)  # tokens x top-2
    assert per_layer == [[x + y for x, y in zip(ca, cb)] for ca, cb in zip(a, b)]  # both calls
    ratios = [max(c) / (sum(c) / len(c)) for c in per_layer]
    assert stats["routing_decode_imbalance_max_over_mean"] == pytest.approx(
        sum(ratios) / len(ratios)
    )
    assert stats["routing_decode_imbalance_worst_layer"] == pytest.approx(max(ratios))
    # distinct experts per forward call, averaged over the two calls and then over layers
    touched = [(sum(x > 0 for x in ca) + sum(y > 0 for y in cb)) / 2 for ca, cb in zip(a, b)]
    assert stats["routing_decode_experts_touched_mean"] == pytest.approx(
        sum(touched) / len(touched)
    )
    json.dumps(stats)
    with track_routing(load_model("preset:tiny-llama", "cpu", torch.float32).model) as dense:
        pass
    assert dense == {}


@pytest.mark.parametrize("scheme", ["int8", "int4", "mxfp4", "nvfp4"])
def test_quantized_experts_really_change_and_stay_close(scheme: str) -> None:
    moe = _tiny_moe()
    name, mod = expert_modules(moe)[0]
    before = {n: p.detach().clone() for n, p in mod.named_parameters(recurse=False) if p.ndim == 3}
    c0 = param_counts(moe)
    covered = quantize_experts(moe, scheme)
    assert covered == sum(w.numel() for w in before.values()) * 4  # 4 layers alike
    assert param_counts(moe) == c0  # logical parameters unchanged
    assert not any(p.ndim == 3 for p in mod.parameters(recurse=False))
    q = mod._tokenwatt_qexperts
    for n, w in before.items():
        assert isinstance(q[n], QuantizedExperts)
        assert q[n].qdata.dtype in (torch.int8, torch.uint8)
        dq = q[n].dequantize()
        assert not torch.equal(dq, w)
        rel = (dq.float() - w.float()).norm() / w.float().norm()
        assert rel < {"int8": 0.01, "int4": 0.15, "mxfp4": 0.2, "nvfp4": 0.15}[scheme]


def test_mxfp4_experts_match_torchao_value_for_value() -> None:
    from torchao.prototype.mx_formats.mx_tensor import MXTensor, ScaleCalculationMode

    w = torch.randn(4, 32, 64, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    ours = QuantizedExperts(w, "mxfp4")
    ref = MXTensor.to_mx(w, torch.float4_e2m1fn_x2, 32, scaling_mode=ScaleCalculationMode.RCEIL)
    assert ours.qdata.shape == (4, 32, 32) and ours.scale.shape == (4, 32, 2)
    assert torch.equal(ours.dequantize(), ref.dequantize())


def test_quantized_forward_equals_eager_forward_on_dequantized_weights() -> None:
    """Our expert loop computes what transformers' eager loop computes on the same weights."""
    moe = _tiny_moe(torch.float32)
    _, mod = expert_modules(moe)[0]
    torch.manual_seed(1)
    x = torch.randn(6, 256)
    idx = torch.randint(0, 8, (6, 2))
    wts = torch.rand(6, 2)
    quantize_experts(moe, "int8")
    deq = {n: q.dequantize() for n, q in mod._tokenwatt_qexperts.items()}
    ours = mod(x, idx, wts)
    ref_mod = type(mod)(moe.config)
    ref_mod.config._experts_implementation = "eager"
    with torch.no_grad():
        ref_mod.gate_up_proj.copy_(deq["gate_up_proj"])
        ref_mod.down_proj.copy_(deq["down_proj"])
    torch.testing.assert_close(ours, ref_mod(x, idx, wts), rtol=1e-5, atol=1e-6)


def test_routing_separates_decode_steps_from_prefill() -> None:
    """Prefill touches every expert; the decode floor must read the decode steps alone."""
    moe = _tiny_moe()
    batch = IDS.shape[0]
    with torch.inference_mode(), track_routing(moe, decode_tokens=batch) as stats:
        moe(IDS)  # prefill: 16 tokens
        for _ in range(3):
            moe(IDS[:, :1])  # decode steps: one token per sequence
    dec, pre = stats["routing_decode_tokens_per_expert"], stats["routing_prefill_tokens_per_expert"]
    assert all(sum(c) == 3 * batch * 2 for c in dec)  # 3 steps x 2 tokens x top-2
    assert all(sum(c) == IDS.numel() * 2 for c in pre)
    decode_touched = stats["routing_decode_experts_touched_mean"]
    assert decode_touched <= batch * 2
    assert stats["routing_prefill_experts_touched_mean"] > decode_touched


def test_baseline_and_quantised_experts_share_one_implementation() -> None:
    from tokenwatt.models.moe import experts_impl, use_expert_loop

    eager, loop = _tiny_moe(torch.float32), _tiny_moe(torch.float32)
    assert experts_impl(eager).startswith("transformers-")
    assert use_expert_loop(loop) == 4 and experts_impl(loop) == "tokenwatt-loop"
    with torch.inference_mode():
        ref, got = eager(IDS).logits, loop(IDS).logits
    assert torch.allclose(ref, got, atol=1e-5)  # same numbers, only the code path differs
    quantize_experts(loop, "int8")
    assert experts_impl(loop) == "tokenwatt-loop"
    assert experts_impl(load_model("preset:tiny-llama", "cpu", torch.float32).model) == ""
