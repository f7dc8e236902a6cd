"""`tokenwatt floor`: the floor and its terms for a model, precision, workload and hardware,
without running anything (the model is built on the meta device)."""

from __future__ import annotations

import csv
import io

import pytest

from tokenwatt.registry.presets import PRESETS


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch):
    monkeypatch.delenv("TOKENWATT_HARDWARE", raising=False)


def _csv(invoke, *args):
    r = invoke("floor", *args, "--csv")
    assert r.exit_code == 0, r.output
    return list(csv.DictReader(io.StringIO(r.output)))


def test_the_done_when_command_prints_the_floor_and_its_terms(invoke):
    rows = _csv(
        invoke,
        "--model",
        "preset:llama-3.1-8b",
        "--precision",
        "bf16",
        "--batch-size",
        "256",
        "--prompt-tokens",
        "512",
        "--new-tokens",
        "256",
        "--hardware",
        "h100-sxm",
    )
    (r,) = rows
    cfg = PRESETS["llama-3.1-8b"].config
    kv_per_pos = 2 * cfg["num_hidden_layers"] * cfg["num_key_value_heads"] * 128 * 2
    assert float(r["kv_bytes_per_token"]) == pytest.approx((512 + 128) * kv_per_pos)
    embed = cfg["vocab_size"] * cfg["hidden_size"]
    weights = 2 * (8_030_261_248 - embed)  # bf16, the untied input embedding left out
    assert float(r["weight_bytes_per_step"]) == pytest.approx(weights, rel=1e-6)
    assert float(r["weight_bytes_per_token"]) == pytest.approx(weights / 256, rel=1e-6)
    # the compute term is no longer TDP / peak: the energy floor is the memory term
    assert float(r["compute_j_per_token"]) == 0 and "not counted" in r["compute_energy_basis"]
    mem_j = float(r["bytes_per_token"]) * 8 * 2e-12
    assert float(r["floor_j_per_token"]) == pytest.approx(mem_j)
    tdp_over_peak = float(r["flops_per_token"]) * 700 / 9.894e14
    assert tdp_over_peak > 2 * float(r["floor_j_per_token"])  # what inflated the old floor
    assert r["energy_dominant"] == "kv-cache" and r["time_bound"] == "memory"
    assert float(r["max_tokens_per_s"]) == pytest.approx(3.35e12 / float(r["bytes_per_token"]))


def test_quantised_and_moe_floors(invoke):
    bf16, int4 = (_csv(invoke, "--model", "preset:llama-3.1-8b", "--precision", p,
                       "--hardware", "h100-sxm")[0] for p in ("bf16", "int4-weight"))  # fmt: skip
    ratio = float(int4["weight_bytes_per_step"]) / float(bf16["weight_bytes_per_step"])
    assert ratio == pytest.approx(0.25, rel=0.01)  # the embedding is not in either
    moe = _csv(
        invoke, "--model", "preset:mixtral-8x7b", "--batch-size", "8", "--hardware", "h100-sxm"
    )[0]
    assert float(moe["experts_touched_per_layer"]) / 2 == pytest.approx(3.6, abs=0.01)
    assert moe["experts_basis"] == "uniform-routing-expectation"
    fixed = _csv(
        invoke,
        "--model",
        "preset:mixtral-8x7b",
        "--batch-size",
        "8",
        "--hardware",
        "h100-sxm",
        "--experts-touched",
        "2",
    )[0]
    assert float(fixed["weight_bytes_per_step"]) < float(moe["weight_bytes_per_step"])
    nv = _csv(
        invoke,
        "--model",
        "preset:tiny-llama",
        "--precision",
        "nvfp4-emulated",
        "--hardware",
        "b200",
    )[0]
    assert float(nv["native_format_floor_j_per_token"]) < float(nv["floor_j_per_token"])


def test_every_profile_by_default_and_a_readable_table(invoke):
    r = invoke("floor", "--model", "preset:tiny-llama")
    assert r.exit_code == 0, r.output
    assert "h200-nvl" in r.output and "a100-sxm-40gb" in r.output and "n/c" in r.output


@pytest.mark.parametrize(
    ("args", "match"),
    [(["--batch-size", "0"], "--batch-size"), (["--hardware", "tpu-v9"], "unknown profile"),
     (["--model", "preset:nope"], "unknown preset"), (["--experts-touched", "-1"], "positive")],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2(invoke, args, match):
    r = invoke("floor", "--model", "preset:tiny-llama", *args)
    assert r.exit_code == 2 and match in r.output and r.output.strip().count("\n") == 0
