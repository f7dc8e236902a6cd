"""Exit codes as a script or CI gets them: 0 only when everything asked for is done, 1 when
something failed (a degraded trial; no usable row for compare/report/plan), 2 bad input.
Interrupted runs (130/143) are tested in tests/test_signals.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from fake_openai import FakeOpenAI
from synth_results import write_folder
from test_faults import BASE, break_trials, fail_counter_while

from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.store import append_rows

CASE = {"precision": "bf16", "batch_size": 1, "prompt_tokens": 8, "new_tokens": 6,
        "decode_j_per_token": 0.1}  # fmt: skip
DEVICE_ERROR = "UserError: device: 'cuda' asked for but no CUDA GPU is visible; use --device cpu"


def tokenwatt(*args: str, **env: str) -> subprocess.CompletedProcess:
    """`python -m tokenwatt ARGS` as a script runs it: the process's own exit status."""
    environ = {**os.environ, "HF_HUB_OFFLINE": "1", **env}
    environ.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.run([sys.executable, "-m", "tokenwatt", *args], capture_output=True,
                          text=True, env=environ, timeout=300)  # fmt: skip


def error_line(stderr: str) -> str:
    """The one `Error:` line, which is the last line on stderr."""
    lines = stderr.strip().splitlines()
    errors = [ln for ln in lines if ln.startswith("Error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr
    assert "Traceback" not in stderr
    return errors[0]


# --- run --------------------------------------------------------------------------------------


def test_run_with_every_trial_ok_exits_0(tmp_path, fast_args):
    out = tmp_path / "o"
    p = tokenwatt("run", *fast_args, "--device", "cpu", "--meter", "estimate", "--no-fidelity",
                  "--out", str(out), "-q")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "Error" not in p.stderr and set(pd.read_csv(out / RESULTS_CSV)["status"]) == {"ok"}


def degrade_trial_1(monkeypatch, sim) -> None:
    """Trial 1's energy counter read fails: NVML's 'GPU is lost' while that trial runs."""
    state: dict = {}
    fail_counter_while(monkeypatch, sim, state, sim.NVML_ERROR_GPU_IS_LOST)
    break_trials(monkeypatch, {1}, state)


@pytest.mark.parametrize("quiet", [False, True])
def test_a_degraded_trial_exits_1_after_the_outcome_and_one_line(tmp_path, monkeypatch, invoke,
                                                                 sim_board, quiet):  # fmt: skip
    degrade_trial_1(monkeypatch, sim_board)
    cfg, out = tmp_path / "c.yaml", tmp_path / "o"
    cfg.write_text(json.dumps(BASE))
    r = invoke("run", str(cfg), "--out", str(out), *(["-q"] if quiet else []))
    assert r.exit_code == 1, r.output
    line = error_line(r.stderr)
    assert line.startswith("Error: 1 of 4 trials degraded: 1 x MeterError: ")
    assert "GPU is lost" in line and f"the summary uses the 3 good ones, every row is in {out}" \
        in line  # fmt: skip
    if quiet:
        assert r.stdout == "" and r.stderr.strip() == line
    else:  # the outcome is printed first, as on success
        assert "results:" in r.stdout and "decode J/token" in r.stdout
    assert list(pd.read_csv(out / RESULTS_CSV)["status"]) == ["ok", "degraded", "ok", "ok"]
    assert pd.read_csv(out / SUMMARY_CSV)["n_trials"].tolist() == [3]


def test_the_python_api_returns_a_degraded_outcome(tmp_path, monkeypatch, sim_board):
    """The exit status is the command line's business: tokenwatt.run raises nothing."""
    import tokenwatt
    from tokenwatt.config import validate

    degrade_trial_1(monkeypatch, sim_board)
    outcome = tokenwatt.run(validate({**BASE, "out": str(tmp_path / "o")}))
    assert [t["status"] for t in outcome.trials] == ["ok", "degraded", "ok", "ok"]
    assert outcome.summary["n_degraded"] == 1


@pytest.mark.slow
def test_a_served_run_counts_trials_not_rows_and_the_process_exits_1(tmp_path):
    """A server dying mid-run, `python -m tokenwatt run --engine openai`: two rows (windows)
    per trial, the summary line counts trials."""
    out = tmp_path / "o"
    # 1 probe + 16 requests of trial 0 finish; the server dies inside trial 1
    with FakeOpenAI(delay_s=0.002, kill_after=24) as fake:
        p = tokenwatt("run", "--engine", "openai", "--url", fake.url, "--gpus", "0",
                      "--batch-size", "4", "--requests", "16", "--new-tokens", "24",
                      "--prompt-tokens", "8", "--repeats", "3", "--warmup", "0",
                      "--min-seconds", "0", "--idle-seconds", "0.2", "--request-timeout-s", "2",
                      "--out", str(out), "-q",
                      TOKENWATT_NVML_MODULE="tokenwatt.sim.nvml")  # fmt: skip
    rows = pd.read_csv(out / RESULTS_CSV)
    assert len(rows) > 3 and sorted(set(rows["trial"])) == [0, 1, 2]
    assert list(rows["window"])[:2] == ["whole-run", "steady-state"]
    assert p.returncode == 1, p.stderr
    line = error_line(p.stderr)
    print(line)
    assert line.startswith("Error: 2 of 3 trials degraded: 1 x ") and "requests" in line
    assert "the summary uses the 1 good one," in line


def test_a_trial_with_one_bad_window_is_one_bad_trial():
    from tokenwatt.cli.console import trial_failures

    def rows(trial, *statuses):
        return [
            {
                "trial": trial,
                "window": w,
                "status": s,
                "status_reason": s != "ok" and f"{w}: empty window" or None,
            }
            for w, s in zip(("whole-run", "steady"), statuses)
        ]

    trials = rows(0, "ok", "ok") + rows(1, "ok", "degraded") + rows(2, "degraded", "degraded")
    line = trial_failures(SimpleNamespace(trials=trials, out="OUT"))
    assert line == (
        "2 of 3 trials degraded: 1 x steady: empty window; 1 x whole-run: empty "
        "window; the summary uses the 1 good one, every row is in OUT"
    )
    assert trial_failures(SimpleNamespace(trials=rows(0, "ok", "ok"), out="OUT")) is None


# --- compare, report, plan ------------------------------------------------------------------

COMMANDS = {
    "compare": ["--baseline", "precision=bf16"],
    "report": [],
    "plan": ["--region", "frankfurt"],
}


def all_failed(folder: Path) -> Path:
    """A sweep whose four cases all failed: failed rows, no summary.csv."""
    failed = [{"case_id": f"c{i}", "precision": p, "error": DEVICE_ERROR}
              for i, p in enumerate(("fp32", "bf16", "fp16", "int8-weight"))]  # fmt: skip
    return write_folder(folder, [], failed=failed)


def unfinished(folder: Path) -> Path:
    """Runs interrupted before their summary: ok trial rows, no complete run."""
    return write_folder(folder, [{**CASE, "case_id": "a", "complete": False}], trials=3)


def all_degraded(folder: Path) -> Path:
    """A run whose every trial lost its meter (it stopped: no summary)."""
    folder.mkdir(parents=True)
    rows = [{"run_id": "r1", "case_id": "a", "schema_version": 1, "trial": i,
             "status": "degraded", "status_reason": "MeterError: GPU is lost"}
            for i in range(3)]  # fmt: skip
    append_rows(folder / RESULTS_CSV, rows, TRIAL_COLUMNS)
    return folder


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("make,found,fix", [
    (all_failed, "4 failed rows (4 x UserError: device:", "rerun the sweep with --retry-failed"),
    (unfinished, "3 ok rows of 1 unfinished run, no complete run", "rerun the sweep"),
    (all_degraded, "3 degraded rows (3 x MeterError: GPU is lost), no complete run",
     "check the meter"),
])  # fmt: skip
def test_no_usable_row_exits_1_with_what_was_found(tmp_path, invoke, command, make, found, fix):
    folder = make(tmp_path / "res")
    before = sorted(p.name for p in folder.iterdir())
    out = ["--out", str(tmp_path / "rep")] if command == "report" else []
    r = invoke(command, str(folder), *COMMANDS[command], *out)
    assert r.exit_code == 1, r.output
    line = error_line(r.stderr)
    assert line.startswith(f"Error: {command}: no usable row in {folder}: ")
    assert found in line and fix in line
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not (tmp_path / "rep").exists()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_usable_folder_beside_a_failed_one_exits_0(tmp_path, invoke, command):
    good = write_folder(
        tmp_path / "good", [{**CASE, "case_id": "b"}, {**CASE, "case_id": "a", "precision": "fp32"}]
    )
    folders = [str(all_failed(tmp_path / "bad")), str(good)]
    if command == "report":  # one folder
        folders = folders[1:]
    r = invoke(command, *folders, *COMMANDS[command])
    assert r.exit_code == 0, r.output


def damaged_summary(folder: Path) -> Path:
    write_folder(folder, [{**CASE, "case_id": "a"}])
    (folder / SUMMARY_CSV).write_bytes(b"\x00\xff garbage\n")
    return folder


def damaged_results(folder: Path) -> Path:
    folder.mkdir()
    (folder / RESULTS_CSV).write_text("not,a\ntokenwatt,file\n")
    return folder


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("make", [
    lambda f: f,  # missing
    lambda f: (f.mkdir(), f)[1],  # an empty folder
    damaged_results,
    damaged_summary,
], ids=["missing", "empty", "damaged-results", "damaged-summary"])  # fmt: skip
def test_bad_input_stays_exit_2(tmp_path, invoke, command, make):
    folder = make(tmp_path / "res")
    r = invoke(command, str(folder), *COMMANDS[command])
    assert r.exit_code == 2, r.output
    assert error_line(r.stderr)


def test_the_process_exit_status_of_the_analysis_commands(tmp_path):
    """What a shell sees, not click's result: 1 for no usable row, 2 for a missing folder."""
    failed = all_failed(tmp_path / "res")
    p = tokenwatt("compare", str(failed), "--baseline", "precision=bf16")
    assert p.returncode == 1 and "no usable row" in error_line(p.stderr), p.stderr
    p = tokenwatt("plan", str(tmp_path / "missing"))
    assert p.returncode == 2 and "not found" in error_line(p.stderr), p.stderr
