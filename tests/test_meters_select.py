"""Meter choice, `tokenwatt meters`, and `tokenwatt run --meter nvml` on a simulated GPU."""

import os
import subprocess
import sys
from types import SimpleNamespace

import pandas as pd
import pytest

from tokenwatt.meters.select import open_meters
from tokenwatt.sim import shim_dir


def test_auto_on_cpu_without_rapl_is_the_labelled_estimate():
    (m,) = open_meters(SimpleNamespace(meter="auto", cpu_tdp_w=None), "cpu")
    assert m.channels[0].source == "estimate-tdp-utilisation" and not m.channels[0].measured


def test_meters_command_explains_no_gpu_and_no_rapl_here():
    from click.testing import CliRunner

    from tokenwatt.cli_meters import meters

    env = {"PYTHONPATH": ""}
    r = CliRunner().invoke(meters, ["--idle-seconds", "0"], env=env)
    assert r.exit_code == 0
    assert "nvml" in r.output and "rapl: NOT AVAILABLE" in r.output
    assert "fix:" in r.output and "estimate: available" in r.output


def test_meters_command_lists_a_simulated_gpu():
    env = {**os.environ, "PYTHONPATH": shim_dir(), "TOKENWATT_SIM_POWER_W": "70"}
    code = "from tokenwatt.cli_meters import meters; meters(['--idle-seconds', '0.3'])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "nvml:gpu0: available" in p.stdout, p.stderr
    period = float(p.stdout.split("update_period_s: ")[1].split()[0])
    assert period == pytest.approx(0.1, abs=0.003) and "idle_power_w: 70" in p.stdout


@pytest.mark.slow
def test_run_with_simulated_nvml_reports_the_counter_and_its_power(tmp_path, fast_args):
    env = {**os.environ, "PYTHONPATH": shim_dir(), "TOKENWATT_SIM_POWER_W": "250"}
    cmd = [sys.executable, "-m", "tokenwatt.cli", "run", *fast_args, "--meter", "nvml",
           "--device", "cpu", "--min-seconds", "0.3", "--out", str(tmp_path), "-q"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    df = pd.read_csv(tmp_path / "results.csv")
    assert set(df["energy_source"]) == {"nvml-energy-counter"}
    assert df["measured"].all()
    assert ((df["avg_power_w"] - 250.0).abs() / 250.0 < 0.02).all()
