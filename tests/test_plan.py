"""Capacity planning from measured J/token: arithmetic, cases, regions and the CLI command."""

from __future__ import annotations

import math
import re

import pandas as pd
import pytest
from click.testing import CliRunner

from tokenwatt.analysis.capacity import plan_table
from tokenwatt.analysis.carbon import resolve_region
from tokenwatt.cli.plan import plan
from tokenwatt.errors import UserError


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch):
    """A user's own profile files must not change what these tests expect."""
    monkeypatch.delenv("TOKENWATT_REGIONS", raising=False)
    monkeypatch.delenv("TOKENWATT_HARDWARE", raising=False)


def _summary() -> pd.DataFrame:
    base = dict(model="preset:llama-3.1-8b", batch_size=8, prompt_tokens=512, new_tokens=256,
                device_name="NVIDIA H100 80GB HBM3", energy_scope="gpu-board",
                measured=True)  # fmt: skip
    return pd.DataFrame(
        [
            {**base, "precision": "int8-weight", "total_j_per_token_mean": 0.25},
            {**base, "precision": "bf16", "total_j_per_token_mean": 0.4},
        ]
    )


def test_plan_arithmetic_for_one_region() -> None:
    t = plan_table(_summary(), "northern-virginia", tokens_per_s=1e6, load_factor=0.5)
    r = resolve_region("northern-virginia")
    bf16 = t[t["precision"] == "bf16"].iloc[0]
    assert bf16["tokens_per_s_per_kw"] == pytest.approx(1000 / 0.4)
    assert bf16["tokens_per_s_per_rack_low"] == pytest.approx(2500 * 40)
    assert bf16["it_mw"] == pytest.approx(0.4)  # 1e6 tokens/s x 0.4 J = 400 kW
    assert bf16["pue"] == r.pue_typical
    assert bf16["facility_mw"] == pytest.approx(0.4 * r.pue_typical)
    assert (bf16["racks_min"], bf16["racks_max"]) == (math.ceil(400 / 60), math.ceil(400 / 40))
    mwh = 0.4 * r.pue_typical * 8760 * 0.5
    assert bf16["annual_mwh"] == pytest.approx(mwh)
    assert bf16["annual_t_co2"] == pytest.approx(mwh * r.carbon_intensity_g_per_kwh / 1000)
    expected_g = 0.4 * 1000 / 3.6e6 * r.pue_typical * r.carbon_intensity_g_per_kwh
    assert bf16["g_co2_per_1k_tokens"] == pytest.approx(expected_g)
    # What the quantisation buys, relative to bf16 of the same model and batch.
    int8 = t[t["precision"] == "int8-weight"].iloc[0]
    assert int8["relative_j_per_token"] == pytest.approx(0.625)
    assert int8["facility_mw"] / bf16["facility_mw"] == pytest.approx(0.625)
    assert bf16["relative_j_per_token"] == 1.0


def test_all_named_regions_when_none_given_and_pue_override() -> None:
    t = plan_table(_summary(), None, tokens_per_s=None, load_factor=1.0, pue=1.5)
    assert len(t) == 2 * 4 and set(t["pue"]) == {1.5}
    assert {"northern-virginia", "frankfurt", "iceland-norway", "west-texas"} <= set(t["region"])
    assert t["facility_mw"].isna().all()  # no target: no MW, racks or annual figures
    ice = t[t["region"] == "iceland-norway"]["g_co2_per_1k_tokens"].iloc[0]
    nova = t[t["region"] == "northern-virginia"]["g_co2_per_1k_tokens"].iloc[0]
    ratio = (
        resolve_region("northern-virginia").carbon_intensity_g_per_kwh
        / resolve_region("iceland-norway").carbon_intensity_g_per_kwh
    )
    assert nova / ice == pytest.approx(ratio)


def test_trial_rows_are_averaged_per_case_and_a_country_has_no_racks() -> None:
    trials = pd.DataFrame(
        [{"model": "m", "precision": "bf16", "batch_size": 1, "total_j_per_token": j}
         for j in (1.0, 3.0)]
    )  # fmt: skip
    t = plan_table(trials, "DEU", tokens_per_s=1000, load_factor=1.0)
    assert len(t) == 1 and t["j_per_token"].iloc[0] == pytest.approx(2.0)
    assert t["pue"].iloc[0] == 1.0 and math.isnan(t["racks_min"].iloc[0])


@pytest.mark.parametrize(
    "kwargs, flag",
    [
        (dict(tokens_per_s=-1.0), "--tokens-per-s"),
        (dict(load_factor=0.0), "--load-factor"),
        (dict(load_factor=1.5), "--load-factor"),
        (dict(pue=0.9), "--pue"),
    ],
)
def test_bad_inputs_are_user_errors(kwargs, flag) -> None:
    args = dict(tokens_per_s=None, load_factor=1.0) | kwargs
    (value,) = kwargs.values()
    with pytest.raises(UserError, match=re.escape(flag) + ".*" + re.escape(f"got {value}")):
        plan_table(_summary(), "DEU", **args)
    with pytest.raises(UserError, match="total_j_per_token"):
        plan_table(pd.DataFrame({"model": ["m"]}), "DEU", None)


def _results_dir(tmp_path):
    out = tmp_path / "res"
    out.mkdir()
    _summary().to_csv(out / "summary.csv", index=False)
    return out


def test_plan_command_prints_and_writes_csv(tmp_path) -> None:
    out, csv = _results_dir(tmp_path), tmp_path / "plan.csv"
    res = CliRunner().invoke(
        plan, [str(out), "--region", "frankfurt", "--tokens-per-s", "1e6", "--csv", str(csv)]
    )
    assert res.exit_code == 0, res.output
    assert "frankfurt" in res.output and "int8-weight" in res.output
    written = pd.read_csv(csv)
    assert len(written) == 2 and written["facility_mw"].notna().all()


def test_plan_command_user_errors_exit_2(tmp_path) -> None:
    out = _results_dir(tmp_path)
    res = CliRunner().invoke(plan, [str(out), "--region", "frankfrut"])
    assert res.exit_code == 2 and "did you mean 'frankfurt'" in res.output
    res = CliRunner().invoke(plan, [str(tmp_path / "nothing-here")])
    assert res.exit_code == 2 and "not found" in res.output


@pytest.mark.slow
def test_quickstart_run_with_a_region_then_plan(tmp_path, fast_args) -> None:
    """End to end: `tokenwatt run --region` writes the carbon and floor columns; plan reads them."""
    from tokenwatt.cli import cli

    out, cfg = tmp_path / "q", tmp_path / "no-fidelity.yaml"
    cfg.write_text("fidelity: {enabled: false}\n")  # fidelity is not what this test is about
    args = ["run", str(cfg), *fast_args, "--region", "iceland-norway", "--pue", "1.1",
            "--out", str(out), "-q"]  # fmt: skip
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rows = pd.read_csv(out / "results.csv")
    ice = resolve_region("iceland-norway").carbon_intensity_g_per_kwh
    expected = rows["total_j_per_token"] * 1000 / 3.6e6 * ice * 1.1
    assert rows["g_co2_per_1k_tokens"].to_numpy() == pytest.approx(expected.to_numpy())
    assert rows["floor_ratio"].notna().all() and (rows["floor_hardware"] == "generic-cpu").all()
    summary = pd.read_csv(out / "summary.csv").iloc[0]  # recomputed from the trial means
    j_mean = summary["total_j_per_token_mean"]
    assert summary["g_co2_per_1k_tokens"] == pytest.approx(j_mean * 1000 / 3.6e6 * ice * 1.1)
    assert summary["floor_ratio"] > 0
    res = CliRunner().invoke(plan, [str(out), "--tokens-per-s", "1000"])
    assert res.exit_code == 0, res.output
    assert "west-texas" in res.output


def _header(output: str) -> str:
    return next(ln for ln in output.splitlines() if "J/token" in ln and "Model" in ln)


def test_relative_column_names_its_real_reference(tmp_path) -> None:
    """With a bf16 case the column is "vs bf16"; without one, the precision it divides by."""
    out = _results_dir(tmp_path)
    res = CliRunner(env={"COLUMNS": "200"}).invoke(plan, [str(out), "--region", "frankfurt"])
    assert "vs bf16" in _header(res.output)
    no_bf16 = _summary().assign(precision=["int8-weight", "fp32"])
    no_bf16.to_csv(out / "summary.csv", index=False)
    table = plan_table(no_bf16, "frankfurt", None)
    assert set(table["relative_to"]) == {"int8-weight"}  # the first case measured
    res = CliRunner(env={"COLUMNS": "200"}).invoke(plan, [str(out), "--region", "frankfurt"])
    assert res.exit_code == 0, res.output
    header = _header(res.output)
    assert "vs int8-weight" in header and "bf16" not in res.output
