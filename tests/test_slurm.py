"""A sweep on the real single-node Slurm (scripts/slurm-single-node.sh start), as job arrays
through submitit, on the simulated NVML: a case scancel'ed as it starts and one scancel'ed
mid-trial are recorded failed, --retry-failed completes them, nothing is measured twice.
Run with `pytest -m slurm`."""

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


def _wait_for(what, t0: float, fail: str, limit_s: float = 240):
    while time.time() - t0 < limit_s:
        if found := what():
            return found
        time.sleep(0.2)
    raise AssertionError(fail)


def _log(out, task: str) -> str:
    """What the array task's job printed (submitit's log, the case's progress lines in it)."""
    path = out / ".logs" / "slurm" / task / f"{task}_0_log.out"
    return path.read_text(errors="replace") if path.exists() else ""


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
    # one task cancelled the moment it runs (before or while its case process starts), one
    # in the middle of its trial: neither may leave a result, both are failed rows
    early = _wait_for(lambda: _running_task(set()), t0, "no array task started")
    subprocess.run(["scancel", early], check=True)
    late = _wait_for(lambda: _running_task({early}), t0, "no second array task started")
    _wait_for(lambda: '"phase": "trials"' in _log(out, late), t0, f"task {late} never measured")
    subprocess.run(["scancel", late], check=True)
    stdout, stderr = proc.communicate(timeout=400)
    logs = {t: _log(out, t)[-600:] for t in (early, late)}
    assert proc.returncode == 1, (stdout, stderr, logs)  # exit 1 after the one-line summary
    assert "2 complete" in stdout and "2 failed" in stdout, (stdout, logs)
    assert stderr.startswith("Error: 2 of 4 cases failed: ") and stderr.count("CANCELLED") == 2
    rows = pd.read_csv(out / "results.csv")
    failed = rows[rows["status"] == "failed"]
    assert len(failed) == 2 and failed["error"].str.contains("CANCELLED").all()
    assert failed["error"].str.contains("log ").all()
    # the rerun resubmits only the failed case
    proc = _sweep(cfg, env, "--retry-failed")
    stdout, stderr = proc.communicate(timeout=400)
    assert proc.returncode == 0, stderr
    assert "4 complete" in stdout and "2 skipped" in stdout, stdout
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
