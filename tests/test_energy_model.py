"""The energy model (issue 27): stored fit and validation held to the calibration data, the
done-when figures recomputed from the validation table, the model's behaviour, `tokenwatt
estimate` and `plan --model`, and the plausibility columns of a measured row."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.analysis import energy_model as em
from tokenwatt.analysis.floor import hardware_profile, inventory_info
from tokenwatt.models.inventory import model_shapes

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch):
    monkeypatch.delenv("TOKENWATT_HARDWARE", raising=False)


def _script(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem.replace("-", "_"), ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---------------------------------------------------------------- calibration and validation


def test_stored_parameters_validation_table_and_docs_block_are_the_fits():
    fit = _script("benchmarks/fit_energy_model.py")
    params, table, block = fit.run()
    assert fit.PARAMS.read_text(encoding="utf-8") == params
    assert fit.TABLE.read_text(encoding="utf-8") == table
    doc = fit.DOC.read_text(encoding="utf-8")
    assert fit.splice(doc, block) == doc, "docs/energy-model.md: rerun fit_energy_model.py"


def test_the_held_out_rows_meet_the_done_when_and_the_docs_say_so():
    rows = pd.read_csv(ROOT / "benchmarks/results/energy_model_validation.csv")
    held = rows[rows["status"].str.startswith("held-out")]
    assert len(held) >= 200 and held["model"].nunique() >= 15
    err = held["heldout_ratio"].map(lambda r: abs(math.log(r)))
    assert err.median() <= math.log(1.5)
    assert err.max() <= math.log(3.0)
    assert held["in_interval"].astype(bool).mean() >= 0.80
    v = em.stored_fit().validation
    assert v["heldout_median_abs_log_ratio"] == pytest.approx(err.median(), rel=5e-3)
    assert v["heldout_interval_coverage"] == pytest.approx(held["in_interval"].mean(), rel=1e-3)
    assert v["meets_median_target"] and v["meets_worst_target"] and v["meets_coverage_target"]
    doc = (ROOT / "docs/energy-model.md").read_text(encoding="utf-8")
    assert f"| {v['heldout_interval_coverage']:.1%} | >= 80% | yes |" in doc


def test_every_calibration_row_is_a_published_figure_with_its_source_and_scope():
    path = ROOT / "tokenwatt/data/calibration/mlenergy-v2.csv"
    rows = list(csv.DictReader(path.open(encoding="utf-8")))
    assert len(rows) > 300
    for r in rows:
        assert r["source"].startswith("ML.ENERGY leaderboard v2") and r["source_file"]
        assert len(r["source_commit"]) == 40 and "GPU boards only" in r["covers"]
        assert r["prompt_tokens_basis"].startswith("approx")
        j = float(r["energy_per_request_j"]) / float(r["output_tokens"])
        assert float(r["j_per_output_token"]) == pytest.approx(j, rel=1e-4)
        assert int(r["boards"]) == int(r["tp"]) * int(r["pp"])


def test_the_interval_comes_from_the_held_out_errors_and_brackets_the_prediction():
    fit = em.stored_fit()
    rows = pd.read_csv(ROOT / "benchmarks/results/energy_model_validation.csv")
    held = rows[rows["status"].str.startswith("held-out")]
    measured_over_pred = 1 / held["heldout_ratio"]
    assert fit.interval_low == pytest.approx(measured_over_pred.quantile(0.05), rel=0.01)
    assert fit.interval_high == pytest.approx(measured_over_pred.quantile(0.95), rel=0.01)
    assert fit.interval_low < 1 < fit.interval_high


# ---------------------------------------------------------------- presets and stored shapes


def test_stored_preset_shapes_are_current():
    assert _script("scripts/preset-shapes.py").main(["--check"]) == 0


@pytest.mark.parametrize(
    "name,total,active",
    [("llama-3.1-70b", 70.55e9, None), ("llama-3.1-405b", 405.85e9, None),
     ("gemma-2-2b", 2.61e9, None), ("mixtral-8x22b", 140.6e9, 39.0e9),
     ("gpt-oss-20b", 20.9e9, 3.6e9), ("gpt-oss-120b", 116.8e9, 5.1e9)],
)  # fmt: skip
def test_calibration_presets_have_the_published_sizes(name, total, active):
    from tokenwatt.analysis.floor import moved_weights

    inv, cfg = model_shapes(f"preset:{name}")
    assert inv["params_total"] == pytest.approx(total, rel=0.01)
    if active:
        w = moved_weights(cfg, inventory_info(inv, "bf16"), 1)
        assert w.flop_params == pytest.approx(active, rel=0.02)


def test_a_changed_preset_is_built_again_not_read_from_the_stored_shapes(monkeypatch):
    from tokenwatt.models import inventory
    from tokenwatt.registry.presets import PRESETS, Preset

    p = PRESETS["tiny-llama"]
    monkeypatch.setitem(
        PRESETS, "tiny-llama", Preset(p.name, p.model_type, {**p.config, "num_hidden_layers": 2})
    )
    inv, cfg = inventory.model_shapes("preset:tiny-llama")
    assert cfg["num_hidden_layers"] == 2
    stored = inventory.stored_shapes()["tiny-llama"]["inventory"]
    assert inv["params_total"] < stored["params_total"]


# ---------------------------------------------------------------- the model's behaviour


def _terms(batch, precision="bf16", hw="h100-sxm", tp=1, model="llama-3.1-8b"):
    inv, cfg = model_shapes(f"preset:{model}")
    return em.workload_terms(cfg, inventory_info(inv, precision), precision, batch, 512, 256,
                             hardware_profile(hw), tp=tp)  # fmt: skip


def test_energy_per_token_falls_with_batch_and_power_stays_within_the_board():
    p = em.stored_fit().params
    preds = [em.predict(_terms(b), p) for b in (1, 8, 64, 256)]
    js = [q.j_per_token for q in preds]
    assert js == sorted(js, reverse=True) and js[0] > 3 * js[-1]
    tdp = hardware_profile("h100-sxm").tdp_w
    assert all(0.1 * tdp < q.board_power_w <= tdp for q in preds)


def test_the_estimate_sits_above_the_floor_and_fp8_saves_at_small_batch():
    inv, cfg = model_shapes("preset:llama-3.1-8b")
    hw = hardware_profile("h100-sxm")
    rows = {prec: em.estimate_row("m", cfg, inventory_info(inv, prec), prec, 1, 512, 256, hw)
            for prec in ("bf16", "fp8")}  # fmt: skip
    for r in rows.values():
        assert r["decode_j_per_token"] > r["floor_j_per_token"]
        assert r["j_per_token_low"] < r["j_per_token"] < r["j_per_token_high"]
        assert r["energy_source"] == "estimate-model"
    assert rows["fp8"]["decode_j_per_token"] < rows["bf16"]["decode_j_per_token"]
    assert "no calibration data at fp8" in rows["fp8"]["caveats"]


def test_tensor_parallel_boards_pay_communication_time():
    p = em.stored_fit().params
    one, four = _terms(64, model="llama-3.1-70b"), _terms(64, model="llama-3.1-70b", tp=4)
    assert em._comm_s(one, p, 64) == 0 and em._comm_s(four, p, 64) > 0
    q1, q4 = em.predict(one, p), em.predict(four, p)
    assert q4.tokens_per_s > q1.tokens_per_s  # four boards' bandwidth
    assert q4.tokens_per_s < 4 * q1.tokens_per_s  # but not four times: all-reduce time


def test_moe_at_small_batch_and_an_uncalibrated_board_are_said():
    inv, cfg = model_shapes("preset:gpt-oss-120b")
    r = em.estimate_row("m", cfg, inventory_info(inv, "bf16"), "bf16", 1, 128, 128,
                        hardware_profile("b200"))  # fmt: skip
    assert "MoE at small batch" in r["caveats"] and "no calibration data on b200" in r["caveats"]


# ---------------------------------------------------------------- the commands


def _csv_rows(r):
    assert r.exit_code == 0, r.output
    return list(csv.DictReader(io.StringIO(r.output)))


def test_estimate_prints_a_labelled_prediction_and_its_csv(invoke):
    r = invoke("estimate", "--model", "preset:llama-3.1-70b", "--hardware", "h100-sxm",
               "--gpus", "4", "--precision", "fp8", "--batch-size", "64")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "ESTIMATE (estimate-model)" in r.output and "interval" in r.output
    rows = _csv_rows(invoke("estimate", "--model", "preset:llama-3.1-70b", "--gpus", "4",
                            "--batch-size", "64", "--csv"))  # fmt: skip
    assert list(rows[0]) == list(em.ESTIMATE_COLUMNS) and len(rows) == 1
    assert rows[0]["energy_source"] == "estimate-model" and rows[0]["boards"] == "4"
    assert float(rows[0]["power_w"]) == pytest.approx(4 * float(rows[0]["board_power_w"]))


def test_estimate_compare_crosses_boards_and_precisions(invoke):
    rows = _csv_rows(invoke("estimate", "--compare", "--batch-size", "8", "--csv"))
    assert {(r["hardware"], r["precision"]) for r in rows} == {
        (h, p) for h in ("h100-sxm", "h200-sxm", "b200")
        for p in ("bf16", "fp8", "mxfp4-emulated")}  # fmt: skip


@pytest.mark.parametrize("args,field", [
    (["--batch-size", "0"], "--batch-size"), (["--gpus", "0"], "--gpus"),
    (["--hardware", "tpu-v9"], "--hardware"), (["--new-tokens", "1"], "--new-tokens"),
    (["--model", "preset:nope"], "--model"),
])  # fmt: skip
def test_estimate_refuses_bad_input_in_one_line_with_exit_2(invoke, args, field):
    r = invoke("estimate", *args)
    assert r.exit_code == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and field in lines[0], r.stderr


def test_plan_without_results_plans_from_the_estimate_labelled_estimate(invoke, tmp_path):
    out = tmp_path / "plan.csv"
    r = invoke("plan", "--model", "preset:llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "4",
               "--precision", "fp8", "--batch-size", "64", "--tokens-per-s", "1e6",
               "--region", "frankfurt", "--csv", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "ESTIMATE (estimate-model, not measured)" in r.output
    assert "ESTIMATE, region frankfurt" in r.output and "MW" in r.output
    table = pd.read_csv(out)
    assert list(table["energy_source"]) == ["estimate-model"]
    assert not table["measured"].any()
    inv, cfg = model_shapes("preset:llama-3.1-70b")
    est = em.estimate_row("preset:llama-3.1-70b", cfg, inventory_info(inv, "fp8"), "fp8", 64,
                          512, 256, hardware_profile("h100-sxm"), boards=4)  # fmt: skip
    assert table["j_per_token"][0] == pytest.approx(est["j_per_token"])
    assert table["it_mw"][0] == pytest.approx(1e6 * est["j_per_token"] / 1e6)


@pytest.mark.parametrize("args", [[], ["somewhere", "--model", "preset:tiny-llama"]])
def test_plan_wants_results_or_a_model_not_both(invoke, args):
    r = invoke("plan", *args)
    assert r.exit_code == 2 and r.stderr.count("\n") == 1, r.stderr


# ---------------------------------------------------------------- a measured row's plausibility


def test_a_measured_row_on_the_simulated_gpu_carries_prediction_and_plausibility(
    tmp_path, sim_board
):
    import tokenwatt
    from tokenwatt.config import validate

    cfg = validate({"model": "preset:tiny-llama", "precision": "fp32", "device": "cpu",
                    "workload": {"batch_size": 2, "prompt_tokens": 8, "new_tokens": 6},
                    "measure": {"warmup": 0, "repeats": 2, "min_seconds": 0,
                                "idle_seconds": 0},
                    "fidelity": {"enabled": False}, "out": str(tmp_path / "o")})  # fmt: skip
    tokenwatt.run(cfg)
    for name in ("results.csv", "summary.csv"):
        rows = pd.read_csv(tmp_path / "o" / name)
        assert (rows["predicted_j_per_token"] > 0).all(), name
        ratio = (
            rows["decode_j_per_token" if name == "results.csv" else "decode_j_per_token_mean"]
            / rows["predicted_j_per_token"]
        )
        assert rows["plausibility"].to_numpy() == pytest.approx(ratio.to_numpy(), rel=1e-9)
        assert rows["implausible"].notna().all()  # judged: the energy is a GPU board's
    # the prediction is for the board measured (simulated H100), not the CPU the model ran on
    inv, conf = model_shapes("preset:tiny-llama")
    t = em.workload_terms(conf, inventory_info(inv, "fp32"), "fp32", 2, 8, 6,
                          hardware_profile("h100-sxm"))  # fmt: skip
    want = em.predict(t, em.stored_fit().params).decode_j_per_token
    results = pd.read_csv(tmp_path / "o" / "results.csv")
    assert results["predicted_j_per_token"][0] == pytest.approx(want)
    run = json.loads((tmp_path / "o" / "run.json").read_text())["runs"][0]
    summary = run["summary"]
    assert ("implausible" in summary["summary_flags"].split(";")) == bool(summary["implausible"])


def test_a_measurement_far_outside_the_interval_is_implausible_and_a_cpu_one_is_not_judged():
    inv, cfg = model_shapes("preset:llama-3.1-8b")
    info = {**inventory_info(inv, "bf16"), "config": cfg, "precision": "bf16"}
    row = {"batch_size": 8, "prompt_tokens": 512, "new_tokens": 256, "device": "cuda:0",
           "device_name": "NVIDIA H100 80GB HBM3"}  # fmt: skip
    pred = em.plausibility_columns(row, info, "NVIDIA H100 80GB HBM3")["predicted_j_per_token"]
    fine = em.plausibility_columns({**row, "decode_j_per_token": pred * 1.1}, info,
                                   "NVIDIA H100 80GB HBM3")  # fmt: skip
    assert fine["plausibility"] == pytest.approx(1.1) and fine["implausible"] is False
    wrong = em.plausibility_columns({**row, "decode_j_per_token": pred * 20}, info,
                                    "NVIDIA H100 80GB HBM3")  # fmt: skip
    assert wrong["implausible"] is True
    cpu = em.plausibility_columns({**row, "device": "cpu", "device_name": "AMD EPYC",
                                   "decode_j_per_token": pred * 20}, info)  # fmt: skip
    assert cpu["plausibility"] is not None and cpu["implausible"] is None
    unknown = em.plausibility_columns({**row, "decode_j_per_token": 1.0}, info, "Mystery GPU")
    assert set(unknown.values()) == {None}


def test_the_implausible_warning_is_raised_beside_below_floor():
    from tokenwatt.runner.summary import _warnings

    w = _warnings({"measured": True, "energy_source": "nvml", "implausible": True,
                   "plausibility": 25.0})  # fmt: skip
    assert any(x.startswith("implausible: measured decode J/token is 25x") for x in w)


def test_the_readme_figures_are_the_stored_validation():
    fit = em.stored_fit()
    v = fit.validation
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    for figure in (
        f"fitted on the {v['rows_modelled']} modellable rows",
        f"within a factor {v['heldout_median_ratio_factor']:.2f} of the measurement",
        f"{v['heldout_worst_ratio']:.2f} at worst",
        f"(x{fit.interval_low:.2f}-x{fit.interval_high:.2f})",
        f"holds {v['heldout_interval_coverage']:.0%} of the held-out rows",
        f"On {v['release_rows']} rows of ML.ENERGY v3",
        f"errs high by {v['release_median_ratio_factor']:.1f}x",
    ):
        assert figure in text, figure
