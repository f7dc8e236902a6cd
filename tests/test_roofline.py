"""The physical floor: bytes and FLOPs per token, hardware profiles, floor columns."""

from __future__ import annotations

import math

import pytest

from tokenwatt.analysis.floor import (
    FLOOR_COLUMNS,
    decode_floor,
    floor_columns,
    kv_bytes_read,
    load_hardware,
    match_hardware,
)
from tokenwatt.errors import ConfigError
from tokenwatt.registry.presets import PRESETS

H100 = "NVIDIA H100 80GB HBM3"


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch):
    """A user's own profile files must not change what these tests expect."""
    monkeypatch.delenv("TOKENWATT_REGIONS", raising=False)
    monkeypatch.delenv("TOKENWATT_HARDWARE", raising=False)


def test_7b_fp16_batch1_on_h100_is_set_by_memory_traffic() -> None:
    hw = load_hardware()["h100-sxm"]
    f = decode_floor(7e9, 16, 1, 0, 0, hw, compute_format="fp16")
    assert f.bytes_per_token == pytest.approx(14e9)
    assert 0.2 <= f.j_per_token <= 0.45  # 14 GB x 8 bit x 2-4 pJ/bit
    assert f.bound == "memory"
    assert 1 / f.s_per_token == pytest.approx(3.35e12 / 14e9)  # about 240 tokens/s at most
    assert f.j_per_token == pytest.approx(f.memory_j_per_token + f.compute_j_per_token)


def test_batch_shares_the_weights_until_compute_binds() -> None:
    hw = load_hardware()["h100-sxm"]
    one, eight = (decode_floor(7e9, 16, b, 1024, 131072, hw) for b in (1, 8))
    kv = 1024 * 131072
    assert eight.bytes_per_token == pytest.approx(14e9 / 8 + kv)
    assert one.bytes_per_token - kv == pytest.approx(8 * (eight.bytes_per_token - kv))
    assert decode_floor(7e9, 16, 4096, 0, 0, hw).bound == "compute"
    with pytest.raises(ValueError):
        decode_floor(7e9, 16, 0, 0, 0, hw)


@pytest.mark.parametrize(
    ("name", "device", "profile"),
    [
        (H100, "cuda", "h100-sxm"),
        ("NVIDIA H100 PCIe", "cuda:0", "h100-pcie"),
        ("NVIDIA H200", "cuda", "h200-sxm"),
        ("NVIDIA H200 NVL", "cuda", "h200-nvl"),
        ("NVIDIA A100-SXM4-80GB", "cuda", "a100-sxm-80gb"),
        ("NVIDIA A100-SXM4-40GB", "cuda", "a100-sxm-40gb"),
        ("NVIDIA A100 80GB PCIe", "cuda", "a100-pcie-80gb"),
        ("NVIDIA A100-PCIE-40GB", "cuda", "a100-pcie-40gb"),
        ("NVIDIA B200", "cuda", "b200"),
        ("NVIDIA GH200 480GB", "cuda", None),  # not an H200: no silent mismatch
        ("AMD EPYC 7B13", "cpu", "generic-cpu"),
    ],
)
def test_device_names_map_to_profiles(name: str, device: str, profile: str | None) -> None:
    hw = match_hardware(name, device)
    assert (hw.name if hw else None) == profile


def test_every_profile_number_has_a_source() -> None:
    for hw in load_hardware().values():
        for key in ("memory_bandwidth_bytes_per_s", "memory_pj_per_bit", "tdp_w", "precisions"):
            assert len(hw.sources[key]) > 15, (hw.name, key)
            assert "METHOD.md" not in hw.sources[key]  # no reference to a file not shipped
        # No built-in arithmetic-only energy per FLOP: the energy floor is memory traffic only.
        assert all(c.arith_pj_per_flop is None for c in hw.precisions.values())


def test_hbm_energy_is_the_low_end_of_the_range() -> None:
    for hw in load_hardware().values():
        if hw.name != "generic-cpu":
            assert hw.memory_pj_per_bit == 2.0, hw.name
            assert "10.1145/3123939.3124545" in hw.sources["memory_pj_per_bit"]


def test_variants_with_other_memory_or_power_are_other_profiles() -> None:
    hw = load_hardware()
    bandwidth = {k: v.memory_bandwidth_bytes_per_s for k, v in hw.items()}
    assert bandwidth["a100-sxm-40gb"] < bandwidth["a100-sxm-80gb"]
    assert hw["a100-pcie-40gb"].tdp_w < hw["a100-pcie-80gb"].tdp_w < hw["a100-sxm-80gb"].tdp_w
    assert (hw["h200-nvl"].tdp_w, hw["h200-sxm"].tdp_w) == (600, 700)
    assert match_hardware("NVIDIA A100 Something", "cuda") is None  # no guess among variants


def test_compute_term_is_never_the_boards_tdp_over_peak() -> None:
    """Llama-3.1-8B at batch 256 on an H100: TDP/peak made compute 76% of the 'floor'."""
    hw = load_hardware()["h100-sxm"]
    cols = floor_columns(_row(batch_size=256), _llama8b_info())
    assert cols["floor_compute_j_per_token"] == 0.0
    assert "not counted" in cols["floor_compute_energy_basis"]
    assert cols["floor_j_per_token"] == pytest.approx(cols["floor_memory_j_per_token"])
    peak = hw.precisions["bf16"].peak_flops_per_s
    tdp_over_peak = cols["floor_flops_per_token"] * hw.tdp_w / peak
    assert cols["floor_j_per_token"] < 0.5 * (cols["floor_j_per_token"] + tdp_over_peak)
    # compute still sets the time floor where it binds
    assert decode_floor(7e9, 16, 4096, 0, 0, hw).bound == "compute"


def test_a_sourced_arithmetic_energy_is_counted(tmp_path, monkeypatch) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(
        "profiles:\n  h100-sxm:\n    precisions:\n      bf16: {peak_flops_per_s: 9.894e14,"
        " arith_pj_per_flop: 0.1}\n    sources: {arith_pj_per_flop: 'my measurement'}\n"
    )
    monkeypatch.setenv("TOKENWATT_HARDWARE", str(f))
    hw = match_hardware(H100, "cuda")
    fl = decode_floor(7e9, 16, 1, 0, 0, hw)
    assert fl.compute_j_per_token == pytest.approx(2 * 7e9 * 0.1e-12)
    assert "my measurement" in fl.compute_energy_basis
    g = tmp_path / "unsourced.yaml"
    g.write_text(
        "profiles:\n  h100-sxm:\n    precisions:\n      bf16: {peak_flops_per_s: 1.0e15,"
        " arith_pj_per_flop: 0.1}\n"
    )
    monkeypatch.setenv("TOKENWATT_HARDWARE", str(g))
    with pytest.raises(ConfigError, match="arith_pj_per_flop has no source"):
        match_hardware(H100, "cuda")


def _llama8b_info(**kw):
    cfg = dict(PRESETS["llama-3.1-8b"].config)
    n = 8_030_261_248  # Llama-3.1-8B parameter count
    info = dict(config=cfg, params_total=n, params_active=n, weight_bytes=2 * n,
                kv_bytes_per_element=2, precision="bf16", emulated=False)  # fmt: skip
    info.update(kw)
    return info


def _row(**kw):
    row = dict(batch_size=8, prompt_tokens=512, new_tokens=256, decode_j_per_token=0.455,
               device_name=H100, device="cuda")  # fmt: skip
    row.update(kw)
    return row


def test_floor_columns_count_weights_once_per_step_and_the_kv_cache() -> None:
    info = _llama8b_info()  # no inventory: the embedding at the dtype's size
    cols = floor_columns(_row(), info)
    embed = 128256 * 4096  # untied input embedding: one row read per token, not the matrix
    kv_per_pos = 2 * 32 * 8 * 128 * 2  # K and V x layers x KV heads x head dim x bf16
    context = 512 + 256 / 2
    expected = (info["weight_bytes"] - 2 * embed) / 8 + context * kv_per_pos
    assert cols["floor_bytes_per_token"] == pytest.approx(expected)
    assert cols["floor_hardware"] == "h100-sxm" and cols["floor_bound"] == "memory"
    assert cols["floor_ratio"] == pytest.approx(0.455 / cols["floor_j_per_token"])
    # ML.ENERGY's Llama-3.1-8B at batch 8 on an H100 (0.455 J/token) sits several x above.
    assert 3 < cols["floor_ratio"] < 20 and cols["below_floor"] is False
    assert cols["floor_j_per_token_native_format"] is None


def test_a_measurement_below_the_floor_is_flagged() -> None:
    cols = floor_columns(_row(decode_j_per_token=0.01), _llama8b_info())
    assert cols["floor_ratio"] < 1 and cols["below_floor"] is True


def test_unknown_hardware_gives_empty_columns() -> None:
    cols = floor_columns(_row(device_name="Some Accelerator X1"), _llama8b_info())
    assert cols["floor_hardware"] is None and cols["floor_ratio"] is None


def _mixtral_info(**kw):
    cfg = dict(PRESETS["mixtral-8x7b"].config)
    layers, e, h, i = cfg["num_hidden_layers"], 8, cfg["hidden_size"], cfg["intermediate_size"]
    experts = layers * e * 3 * h * i
    total = 46_702_792_704  # Mixtral-8x7B
    embed = cfg["vocab_size"] * h
    info = dict(config=cfg, params_total=total, weight_bytes=2 * total, embedding_params=embed,
                embedding_bytes=2 * embed, expert_params=experts, expert_bytes=2 * experts,
                kv_bytes_per_element=2, precision="bf16")  # fmt: skip
    info.update(kw)
    return info, experts, total - embed - experts


def test_moe_batch_reads_the_union_of_experts_it_touches() -> None:
    from tokenwatt.analysis.floor import expected_experts_touched, moved_weights

    info, experts, dense = _mixtral_info()
    assert expected_experts_touched(8, 2, 8) / 2 == pytest.approx(3.6, abs=0.01)  # Mixtral B=8
    assert expected_experts_touched(128, 8, 64) / 8 == pytest.approx(15.7, abs=0.05)  # Qwen3 B=64
    one, eight = (moved_weights(info["config"], info, b) for b in (1, 8))
    assert one.bytes_per_step == pytest.approx(2 * (dense + experts * 2 / 8))  # top-2 at B=1
    touched = expected_experts_touched(8, 2, 8)
    assert eight.bytes_per_step == pytest.approx(2 * (dense + experts * touched / 8))
    assert eight.experts_basis == "uniform-routing-expectation"
    assert eight.flop_params == one.flop_params == pytest.approx(dense + experts * 2 / 8)
    measured = moved_weights(info["config"], dict(info, experts_touched_per_layer=5.0), 8)
    assert measured.bytes_per_step == pytest.approx(2 * (dense + experts * 5 / 8))
    assert measured.experts_basis == "measured-decode-routing"
    cols = floor_columns(_row(batch_size=8), info)
    assert cols["floor_experts_touched"] == pytest.approx(touched)


def test_quantised_floor_subtracts_the_embedding_at_its_real_size() -> None:
    """Embeddings are never quantised: at int4 the old average-bytes rule took 4x too little."""
    n, embed = 8_030_261_248, 128256 * 4096
    int4 = _llama8b_info(precision="int4-weight", weight_bytes=(n - embed) // 2 + 2 * embed,
                         embedding_params=embed, embedding_bytes=2 * embed)  # fmt: skip
    cols = floor_columns(_row(batch_size=1), int4)
    kv = (512 + 128) * 131072
    assert cols["floor_bytes_per_token"] - kv == pytest.approx((n - embed) // 2)
    old_rule = int4["weight_bytes"] - embed * int4["weight_bytes"] / n
    assert old_rule > 1.15 * (n - embed) / 2  # what the issue measured as 17-18% too high


def test_emulated_fp4_reports_what_the_real_format_would_cost() -> None:
    info = _llama8b_info(precision="nvfp4-emulated", emulated=True, native_bits=4)
    cols = floor_columns(_row(batch_size=1, device_name="NVIDIA B200"), info)
    assert cols["floor_compute_format"] == "bf16"  # emulation runs the matmuls in bf16
    native = cols["floor_j_per_token_native_format"]
    # 4 bits + one 8-bit scale per 16 values = 4.5 bits against 16: about 3.5x less traffic.
    assert 2.5 < cols["floor_j_per_token"] / native < 16 / 4.5 + 0.01


def test_sliding_window_layers_read_at_most_their_window() -> None:
    cfg = dict(num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
               hidden_size=32, sliding_window=100,
               layer_types=["sliding_attention", "full_attention"] * 2)  # fmt: skip
    per_pos = 2 * 2 * 8 * 2
    assert kv_bytes_read(cfg, 1000, 2) == per_pos * (2 * 100 + 2 * 1000)


def test_user_hardware_file_overrides_generic_cpu(tmp_path, monkeypatch) -> None:
    f = tmp_path / "hw.yaml"
    f.write_text(
        "profiles:\n  generic-cpu:\n    memory_bandwidth_bytes_per_s: 2.0e11\n"
        "    sources: {memory_bandwidth_bytes_per_s: 'STREAM triad on this box'}\n"
    )
    monkeypatch.setenv("TOKENWATT_HARDWARE", str(f))
    hw = match_hardware("AMD EPYC", "cpu")
    assert hw.memory_bandwidth_bytes_per_s == 2.0e11
    assert hw.memory_pj_per_bit == 20.0  # the rest of the built-in profile stays
    assert hw.sources["memory_bandwidth_bytes_per_s"] == "STREAM triad on this box"

    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  my-npu:\n    match: [NPU]\n    tdp_w: 75\n")
    monkeypatch.setenv("TOKENWATT_HARDWARE", str(bad))
    with pytest.raises(ConfigError, match="no source"):
        load_hardware()


def test_cpu_floor_for_the_tiny_preset_fits_in_cache() -> None:
    cfg = dict(PRESETS["tiny-llama"].config)
    info = dict(config=cfg, params_total=5_000_000, params_active=5_000_000,
                weight_bytes=10_000_000, kv_bytes_per_element=2, precision="bf16")  # fmt: skip
    cols = floor_columns(
        dict(batch_size=1, prompt_tokens=8, new_tokens=6, decode_j_per_token=1e-6,
             device_name="AMD EPYC", device="cpu"), info)  # fmt: skip
    assert cols["floor_hardware"] == "generic-cpu" and cols["floor_fits_in_cache"] is True
    # Below a DRAM floor, but the weights fit in the cache: not proof of a wrong meter.
    assert cols["floor_ratio"] < 1 and cols["below_floor"] is False
    assert math.isfinite(cols["floor_s_per_token"])


def test_a_model_without_the_usual_shape_keys_gets_empty_columns() -> None:
    info = _llama8b_info(config={"model_type": "exotic"})
    assert floor_columns(_row(), info) == dict.fromkeys(FLOOR_COLUMNS)
    assert floor_columns(_row(), _llama8b_info(weight_bytes=0))["floor_ratio"] is None
