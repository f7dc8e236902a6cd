"""Provenance in every row: versions, the checkout's commit, a salted machine id (never the
hostname), the boards' state at the start, and the MLPerf-style method columns."""

from __future__ import annotations

import csv
import socket
import subprocess
from pathlib import Path

from tokenwatt._util.ids import machine_id
from tokenwatt._util.version import commit
from tokenwatt.sim import nvml as sim

ROOT = Path(__file__).parents[1]


def test_machine_id_is_a_stable_salted_hash_not_a_name():
    mid = machine_id()
    assert len(mid) == 16 and int(mid, 16) >= 0 and mid == machine_id()
    assert socket.gethostname().split(".")[0].lower() not in mid
    raw = Path("/etc/machine-id")
    if raw.is_file():
        assert raw.read_text().strip()[:16] != mid  # hashed with a salt, not copied


def test_commit_is_the_checkouts_and_says_dirty():
    if not (ROOT / ".git").exists():
        assert commit() == ""
        return
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()  # fmt: skip
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain",
                            "--untracked-files=no", "--", "tokenwatt"], capture_output=True,
                           text=True, check=True).stdout.strip()  # fmt: skip
    assert commit() == (f"{head}-dirty" if dirty else head)


def test_rows_carry_provenance_and_method(tmp_path, invoke, monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim.configure(2, [300.0, 300.0])
    out = tmp_path / "o"
    r = invoke("run", "--device", "cpu", "--model-gpus", "2", "--meter", "nvml",
               "--prompt-tokens", "8", "--new-tokens", "6", "--repeats", "1", "--warmup", "0",
               "--min-seconds", "0", "--idle-seconds", "0.1", "--sample-interval-ms", "25",
               "--no-fidelity", "--out", str(out), "-q")  # fmt: skip
    assert r.exit_code in (0, 1), r.output
    for name in ("results.csv", "summary.csv"):
        row = next(csv.DictReader((out / name).open()))
        assert row["tokenwatt_version"] and row["machine_id"] == machine_id()
        assert row["tokenwatt_commit"] == commit()
        assert row["torch_version"].startswith("2.") and row["transformers_version"]
        assert row["driver_version"] == sim.nvmlSystemGetDriverVersion()
        assert float(row["power_limit_w"]) == 2 * 700.0  # both boards' enforced limits
        assert float(row["mem_clock_mhz"]) > 0 and float(row["gpu_clock_mhz"]) > 0
        assert row["measurement_method"] == "energy-counter"
        assert float(row["sampling_rate_hz"]) == 40.0 and float(row["idle_baseline_s"]) == 0.1
        assert row["warmup_generations"] == "0"


def test_a_cpu_run_has_no_gpu_provenance(tmp_path, invoke, fast_args):
    out = tmp_path / "o"
    assert invoke("run", *fast_args, "--device", "cpu", "--meter", "estimate", "--out",
                  str(out), "-q").exit_code == 0  # fmt: skip
    row = next(csv.DictReader((out / "results.csv").open()))
    assert row["measurement_method"] == "tdp-estimate"
    assert row["driver_version"] == row["cuda_version"] == row["power_limit_w"] == ""
