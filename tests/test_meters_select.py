"""Meter choice, `tokenwatt meters`, and `tokenwatt run --meter nvml` on a simulated GPU."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from tokenwatt.energy.meters.select import open_meters
from tokenwatt.sim import shim_dir


def test_auto_on_cpu_without_rapl_is_the_labelled_estimate():
    (m,) = open_meters(SimpleNamespace(meter="auto", cpu_tdp_w=None), "cpu")
    assert m.channels[0].source == "estimate-tdp-utilisation" and not m.channels[0].measured


def test_meters_command_explains_no_gpu_and_no_rapl_here():
    from click.testing import CliRunner

    from tokenwatt.cli.meters import meters

    env = {"PYTHONPATH": ""}
    r = CliRunner().invoke(meters, ["--idle-seconds", "0"], env=env)
    assert r.exit_code == 0
    assert "nvml" in r.output and "rapl: NOT AVAILABLE" in r.output
    assert "fix:" in r.output and "estimate: available" in r.output


def test_meters_command_lists_a_simulated_gpu():
    env = {**os.environ, "PYTHONPATH": shim_dir(), "TOKENWATT_SIM_POWER_W": "70"}
    code = "from tokenwatt.cli.meters import meters; meters(['--idle-seconds', '0.3'])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "nvml:gpu0: available" in p.stdout, p.stderr
    period = float(p.stdout.split("update_period_s: ")[1].split()[0])
    assert period == pytest.approx(0.1, abs=0.003) and "idle_power_w: 70" in p.stdout


def test_run_with_simulated_nvml_reports_the_counter_and_its_power(tmp_path, invoke, monkeypatch):
    from tokenwatt.sim import nvml as sim

    sim.configure(1, 250.0)
    monkeypatch.setitem(sys.modules, "pynvml", sim)  # what the shim on PYTHONPATH does
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: preset:tiny-llama\nprecision: fp32\ndevice: cpu\nfidelity: {enabled: false}\n"
        "workload: {prompt_tokens: 8, new_tokens: 6}\n"
        "measure: {meter: nvml, warmup: 0, repeats: 2, min_seconds: 0.3, idle_seconds: 0.2}\n"
    )
    r = invoke("run", str(cfg), "--out", str(tmp_path / "o"), "-q")
    assert r.exit_code == 0, r.output
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(df["energy_source"]) == {"nvml-energy-counter"}
    assert df["measured"].all()
    assert ((df["avg_power_w"] - 250.0).abs() / 250.0 < 0.02).all()
    assert (df["idle_power_w"] - 250.0).abs().max() < 5.0
