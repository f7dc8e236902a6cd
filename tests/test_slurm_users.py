"""Sweeps on the real single-node Slurm (scripts/slurm-single-node.sh start: partition debug,
2 fake GPUs as GRES, a CPU build of torch), as users run them: the README's example verbatim,
a mixed cpu/auto sweep, a sweep with a failing case, and what Slurm refuses. Run with
`TOKENWATT_REQUIRE_SLURM=1 pytest -m slurm` (CI does): then a missing or dead Slurm fails these
tests instead of skipping them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REQUIRED = bool(os.environ.get("TOKENWATT_REQUIRE_SLURM"))
pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(shutil.which("sbatch") is None and not REQUIRED,
                       reason="no Slurm here (TOKENWATT_REQUIRE_SLURM=1 makes this a failure)"),
]  # fmt: skip
README = Path(__file__).resolve().parents[1] / "README.md"
SMALL = """name: NAME
model: preset:tiny-llama
precision: PRECISION
device: DEVICE
workload: {prompt_tokens: 8, new_tokens: 4}
measure: {meter: estimate, warmup: 0, repeats: 1, min_seconds: 0, idle_seconds: 0}
fidelity: {enabled: false}
"""


@pytest.fixture(scope="module", autouse=True)
def slurm_answers() -> None:
    p = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True)
    assert p.returncode == 0 and "debug" in p.stdout, f"Slurm is not up: {p.stderr}"


def readme_sweep() -> str:
    """The YAML block of the README's "Sweeps" section, as a user copies it."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("\n## Sweeps\n") :]
    return re.search(r"```yaml\n(.*?)```", section, re.S).group(1)


def sweep(cfg: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "--executor", "slurm",
           "--out", str(out), "-q", *flags]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=420, env=env,
                          cwd=cfg.parent)  # fmt: skip


def small(tmp_path: Path, name: str, precision: str, device: str) -> Path:
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(SMALL.replace("NAME", name).replace("PRECISION", precision)
                   .replace("DEVICE", device))  # fmt: skip
    return cfg


def job_scripts(out: Path) -> dict[str, str]:
    """Array job id -> the sbatch script submitit submitted (kept under OUT/.logs/slurm/)."""
    found = {}
    for p in (out / ".logs" / "slurm").glob("*/*_submission.sh"):
        found[p.parent.name.split("_")[0]] = p.read_text()
    return found


def test_the_readme_sweep_runs_as_written(tmp_path):
    text = readme_sweep()
    assert "device" not in text and "precision: [fp32, bf16]" in text
    cfg = tmp_path / "tiny-grid.yaml"
    cfg.write_text(text)
    out = tmp_path / "tiny-grid"
    p = sweep(cfg, out)
    assert p.returncode == 0, p.stderr
    assert "4 cases, 4 complete (0 skipped as already done), 0 failed" in p.stdout
    assert p.stderr == ""
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["status"]) == {"ok"} and rows["case_id"].nunique() == 4
    assert len(pd.read_csv(out / "summary.csv")) == 4
    # the partition offers 2 GPUs, so each auto case asked for one; torch here is a CPU build
    assert all("#SBATCH --gpus-per-node=1" in s for s in job_scripts(out).values())
    assert set(rows["device"]) == {"cpu"}
    why = rows["device_resolved_from"]
    assert why.str.startswith("auto: a GPU was allocated (CUDA_VISIBLE_DEVICES=").all(), why
    assert why.str.contains("torch sees none").all()


def test_a_mixed_sweep_asks_no_gpu_for_its_cpu_cases(tmp_path):
    cfg = small(tmp_path, "mixed", "fp32", "[cpu, auto]")
    out = tmp_path / "mixed"
    p = sweep(cfg, out)
    assert p.returncode == 0, p.stderr
    scripts = job_scripts(out)
    asks = {j: bool(re.search(r"^#SBATCH --(gpus|gres)", s, re.M)) for j, s in scripts.items()}
    assert sorted(asks.values()) == [False, True], scripts
    for job, gpu in asks.items():  # and Slurm agrees: only the auto case's job holds a GPU
        shown = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True)
        assert "JobState=COMPLETED" in shown.stdout, shown.stdout
        assert ("TresPerNode=gres:gpu:1" in shown.stdout) == gpu, shown.stdout
    rows = pd.read_csv(out / "results.csv").drop_duplicates("case_id")
    by = dict(zip(rows["device_resolved_from"].str.split(":").str[0], rows["device"]))
    assert by == {"given": "cpu", "auto": "cpu"}, rows["device_resolved_from"]


def test_a_failing_case_exits_1_and_the_summary_names_it(tmp_path):
    cfg = small(tmp_path, "fails", "[fp32, fp8]", "cpu")  # fp8 needs a GPU
    out = tmp_path / "fails"
    p = sweep(cfg, out)
    assert p.returncode == 1, p.stderr
    assert "2 cases, 1 complete (0 skipped as already done), 1 failed" in p.stdout
    err = p.stderr.strip()
    assert "\n" not in err and err.startswith("Error: 1 of 2 cases failed: 1 x "
                                              "PrecisionUnsupported: "), err  # fmt: skip
    assert f"logs: {out / '.logs'}" in err


def test_what_slurm_refuses_is_one_line_and_nothing_is_submitted(tmp_path):
    cfg = small(tmp_path, "refused", "fp32", "auto")
    jobs = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                          text=True).stdout.split()  # fmt: skip
    for flags, needle in [(("--partition", "nope"), "partition 'nope' is not one Slurm knows"),
                          (("--constraint", "h100"), "Invalid feature specification")]:  # fmt: skip
        p = sweep(cfg, tmp_path / "o", *flags)
        err = p.stderr.strip()
        assert p.returncode == 2 and "\n" not in err and needle in err, err
    assert not (tmp_path / "o").exists()
    after = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i"], capture_output=True,
                           text=True).stdout.split()  # fmt: skip
    assert after == jobs


def test_no_controller_answering_is_one_line(tmp_path, monkeypatch):
    """Slurm's client pointed at a port where no controller listens (the real one keeps
    running): what users see when slurmctld is down."""
    conf = Path(os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")).read_text()
    dead = tmp_path / "slurm.conf"
    dead.write_text(re.sub(r"(?m)^SlurmctldPort=.*$", "SlurmctldPort=6899", conf))
    cfg = small(tmp_path, "down", "fp32", "auto")
    monkeypatch.setenv("SLURM_CONF", str(dead))
    p = sweep(cfg, tmp_path / "o")
    err = p.stderr.strip()
    assert p.returncode == 2 and "\n" not in err, err
    assert "Unable to contact slurm controller" in err and "start slurmctld" in err
    assert not (tmp_path / "o").exists()
