"""A sweep on the real single-node Slurm (scripts/slurm-single-node.sh start), as job arrays
through submitit, on the simulated NVML: one case scancel'ed mid-run is recorded failed,
--retry-failed completes it, nothing is measured twice. Run with `pytest -m slurm`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pandas as pd
import pytest

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None and not os.environ.get(
        "TOKENWATT_REQUIRE_SLURM"), reason="no Slurm here (TOKENWATT_REQUIRE_SLURM=1 makes "
        "this a failure)"),
]  # fmt: skip

SWEEP = """name: slurm-tiny
model: preset:tiny-llama
precision: fp32
device: cpu
gpus: 1
fidelity: {enabled: false}
workload: {prompt_tokens: 8, new_tokens: [4, 5, 6, 7]}
measure: {meter: nvml, warmup: 0, repeats: 1, min_seconds: 6, idle_seconds: 0.2}
out: OUT
"""


def _env(tmp_path):
    return {**os.environ, "TOKENWATT_NVML_MODULE": "tokenwatt.sim.nvml",
            "TOKENWATT_SIM_GPUS": "2", "TOKENWATT_SIM_POWER_W": "61,74",
            "HF_HUB_OFFLINE": "1"}  # fmt: skip


def _sweep(cfg, env, *extra, **kw):
    cmd = [sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "--executor", "slurm",
           "--partition", "debug", "--time-limit", "10", "--array-parallelism", "2", "-q",
           *extra]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)  # fmt: skip


def _running_task(before: set[str]) -> str | None:
    q = subprocess.run(["squeue", "-h", "-t", "R", "-o", "%i|%j"], capture_output=True,
                       text=True).stdout.split()  # fmt: skip
    ids = [line.split("|")[0] for line in q if "tokenwatt" in line]
    return next((i for i in ids if i not in before), None)


def test_array_sweep_with_a_cancelled_case_and_retry(tmp_path):
    out = tmp_path / "o"
    cfg = tmp_path / "s.yaml"
    cfg.write_text(SWEEP.replace("OUT", str(out)))
    env = _env(tmp_path)
    dry = subprocess.run([sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "--dry-run",
                          "--executor", "slurm", "--partition", "debug"], env=env,
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert "array of 4 case(s), 1 GPU(s) each: --array=0-3%4 " in dry.stdout
    assert "--gpus-per-node=1" in dry.stdout and "4 x gpus: 1" in dry.stdout
    t0 = time.time()
    proc = _sweep(cfg, env)
    victim = None
    while victim is None and time.time() - t0 < 180:
        time.sleep(1)
        victim = _running_task(set())
    assert victim, "no array task started"
    time.sleep(2)
    subprocess.run(["scancel", victim], check=True)
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 1, stderr  # a case failed: exit 1 after the one-line summary
    assert "3 complete" in stdout and "1 failed" in stdout, stdout
    assert stderr.startswith("Error: 1 of 4 cases failed: 1 x Slurm job ") and "CANCELLED" in stderr
    rows = pd.read_csv(out / "results.csv")
    failed = rows[rows["status"] == "failed"]
    assert len(failed) == 1 and "CANCELLED" in failed["error"].iloc[0]
    assert "log " in failed["error"].iloc[0]
    # the rerun resubmits only the failed case
    proc = _sweep(cfg, env, "--retry-failed")
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr
    assert "4 complete" in stdout and "3 skipped" in stdout, stdout
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and summary["case_id"].is_unique
    ok = pd.read_csv(out / "results.csv").query("status == 'ok'")
    assert len(ok) == 4 and ok["case_id"].is_unique
    # each case held its own board: Slurm's CUDA_VISIBLE_DEVICES named one of the two boards
    assert set(ok["boards"]) == {1}
    from tokenwatt.sim import nvml as sim

    uuids = {g.uuid for g in sim.configure(2, 300.0)}
    assert set(ok["board_uuids"]) <= uuids
    # the same sweep run here has the same cases and columns
    local_out = tmp_path / "local"
    local = subprocess.run([sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "--out",
                            str(local_out), "-q"], env={**env, "CUDA_VISIBLE_DEVICES": "0"},
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert local.returncode == 0, local.stderr
    here = pd.read_csv(local_out / "summary.csv")
    assert set(here["case_id"]) == set(summary["case_id"])
    assert set(here.columns) == set(summary.columns)
    print(f"slurm sweep test took {time.time() - t0:.0f} s")
