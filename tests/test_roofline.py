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
    assert 0.2 <= f.j_per_token <= 0.45  # 14 GB x 8 bit x 2-4 pJ/bit (METHOD.md)
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
        ("NVIDIA H200", "cuda", "h200"),
        ("NVIDIA A100-SXM4-80GB", "cuda", "a100"),
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
        # Not given in the file: pJ/FLOP is the board's energy per FLOP at its peak.
        bf16 = hw.precisions["bf16"]
        assert bf16.pj_per_flop == pytest.approx(hw.tdp_w / bf16.peak_flops_per_s * 1e12)


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
    info = _llama8b_info()
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


def test_moe_counts_only_routed_experts() -> None:
    dense = floor_columns(_row(batch_size=1), _llama8b_info())
    n = 8_030_261_248
    moe = floor_columns(_row(batch_size=1), _llama8b_info(params_active=n // 2 + 128256 * 4096))
    weights = dense["floor_bytes_per_token"] - (512 + 128) * 131072
    moe_weights = moe["floor_bytes_per_token"] - (512 + 128) * 131072
    assert moe_weights == pytest.approx(weights * (n // 2) / (n - 128256 * 4096))
    assert moe["floor_flops_per_token"] < dense["floor_flops_per_token"]


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
