"""Meter choice, `measure.gpus`, `tokenwatt meters`, and `tokenwatt run --meter nvml` against
the simulated NVML chosen by the explicit setting (TOKENWATT_NVML_MODULE), not by a branch."""

import os
import subprocess
import sys

import pandas as pd
import pytest

from tokenwatt.energy.meters.rapl import readable
from tokenwatt.energy.meters.select import boards_not_running_the_model, open_meters
from tokenwatt.errors import UserError
from tokenwatt.placement import measured_boards
from tokenwatt.sim import nvml as sim

SIM = {"TOKENWATT_NVML_MODULE": "tokenwatt.sim.nvml"}
# These read the real /sys/class/powercap and assume a machine without RAPL.
needs_no_rapl = pytest.mark.skipif(readable(), reason="this machine can read RAPL")


@needs_no_rapl
def test_auto_on_cpu_without_rapl_is_the_labelled_estimate():
    (m,) = open_meters("auto")
    assert m.channels[0].source == "estimate-tdp-process-cpu" and not m.channels[0].measured


@pytest.fixture
def two_boards(monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    return sim.configure(2, [100.0, 200.0])


def test_gpus_by_index_uuid_and_bus_id_measure_exactly_those_boards(two_boards):
    g0, g1 = two_boards
    for spec in (["1"], [g1.uuid], [g1.uuid[:12]], [g1.pci_bus_id], [g1.pci_bus_id[9:].lower()]):
        boards = measured_boards(spec)
        assert boards == (g1.uuid,), spec
        meters = open_meters("nvml", boards)
        assert [m.index for m in meters] == [1], spec
        for m in meters:
            m.close()
    both = open_meters("auto", measured_boards(["0", g1.uuid, "0"]))  # auto + boards -> nvml
    assert [m.index for m in both] == [0, 1]
    assert "do not run the model" in boards_not_running_the_model(both, "cpu")
    for m in both:
        m.close()


def test_bad_board_ids_are_one_line_user_errors(two_boards):
    for spec, needle in ((["7"], "NVML GPU 7"), (["GPU-nope"], "matches 0 GPUs"),
                         (["abc"], "not an NVML index"), (["MIG-1"], "MIG")):  # fmt: skip
        with pytest.raises(UserError, match=f"measure.gpus: .*{needle}") as e:
            measured_boards(spec)
        assert "\n" not in str(e.value)


def test_nvml_for_a_cpu_model_needs_named_boards(two_boards):
    with pytest.raises(UserError, match="--gpus 0"):
        open_meters("nvml", ())


def test_a_run_refuses_meters_it_cannot_open_before_loading_anything(tmp_path):
    """What a user types on a CPU machine: refused in one line before any model is built, and
    without importing torch (the time is the interpreter's and tokenwatt's imports)."""
    env = {**os.environ, "TOKENWATT_NVML_MODULE": "no_such_nvml_binding"}
    for flags, needle in ((["--meter", "nvml"], "no boards are named"),
                          (["--gpus", "0"], "measure.gpus:")):  # fmt: skip
        code = ("import sys, runpy; sys.argv = ['tokenwatt', 'run', '--device', 'cpu', "
                f"'--out', {str(tmp_path / 'o')!r}, *{flags!r}]\n"
                "try:\n    runpy.run_module('tokenwatt', run_name='__main__')\n"
                "finally:\n    print('torch imported:', 'torch' in sys.modules)")  # fmt: skip
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           env=env, timeout=60)  # fmt: skip
        assert p.returncode == 2, p.stderr
        assert needle in p.stderr and p.stderr.count("Error:") == 1, p.stderr
        assert "torch imported: False" in p.stdout
        assert not (tmp_path / "o").exists()


def _nvml_starts() -> bool:
    """Whether the real NVML library starts here (checked without tokenwatt's own code)."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:
        return False
    pynvml.nvmlShutdown()
    return True


@needs_no_rapl
def test_meters_command_explains_no_gpu_and_no_rapl_here():
    from click.testing import CliRunner

    from tokenwatt.cli.meters import meters

    if _nvml_starts():
        pytest.skip("this machine has a working NVIDIA driver")
    r = CliRunner().invoke(meters, ["--idle-seconds", "0"], env={"TOKENWATT_NVML_MODULE": ""})
    assert r.exit_code == 0
    assert "nvml: NOT AVAILABLE" in r.output and "rapl: NOT AVAILABLE" in r.output
    assert r.output.count("  fix: ") == 2  # one for NVML, one for RAPL
    assert "estimate: available" in r.output
    assert "No energy can be measured on this machine" in r.output


def test_meters_command_lists_a_simulated_gpu():
    env = {**os.environ, **SIM, "TOKENWATT_SIM_POWER_W": "70"}
    code = "from tokenwatt.cli.meters import meters; meters(['--idle-seconds', '0.3'])"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "nvml:gpu0: available" in p.stdout, p.stderr
    period = float(p.stdout.split("update_period_s: ")[1].split()[0])
    assert period == pytest.approx(0.1, abs=0.003) and "idle_power_w: 70" in p.stdout
    assert "simulated: True" in p.stdout


def test_run_with_simulated_nvml_reports_the_counter_and_its_power(tmp_path, invoke, monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    sim.configure(1, 250.0)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "model: preset:tiny-llama\nprecision: fp32\ndevice: cpu\nfidelity: {enabled: false}\n"
        "workload: {prompt_tokens: 8, new_tokens: 6}\n"
        "measure: {meter: nvml, gpus: [0], warmup: 0, repeats: 2, min_seconds: 0.3, "
        "idle_seconds: 0.2}\n"
    )
    r = invoke("run", str(cfg), "--out", str(tmp_path / "o"))
    assert r.exit_code == 0, r.output
    assert "do not run the model" in r.output  # the one warning line: the model is on the CPU
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert set(df["energy_source"]) == {"simulated-nvml-energy-counter"}
    assert not df["measured"].any()
    assert ((df["avg_power_w"] - 250.0).abs() / 250.0 < 0.02).all()
    assert (df["idle_power_w"] - 250.0).abs().max() < 5.0


def test_fresh_process_run_on_the_simulated_board_by_setting(tmp_path):
    """What a user types: the simulation named by the setting, the board by --gpus."""
    env = {**os.environ, **SIM, "TOKENWATT_SIM_POWER_W": "300"}
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "tokenwatt", "run", "--meter", "nvml", "--gpus", "0",
           "--device", "cpu", "--precision", "fp32", "--prompt-tokens", "8", "--new-tokens",
           "6", "--repeats", "1", "--warmup", "0", "--min-seconds", "0.3", "--idle-seconds",
           "0.2", "--no-fidelity", "--out", str(out), "-q"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert row["energy_source"] == "simulated-nvml-energy-counter"
    assert row["avg_power_w"] == pytest.approx(300.0, rel=0.02)
