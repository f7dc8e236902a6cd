"""`tokenwatt sweep`'s exit status, as pytest and make: 0 only when every case asked for is
done; 1 after a one-line summary grouped by reason when a case failed or a run made now had
degraded trials (the other cases still run); 2 for bad input; 130/143 interrupted (the
Ctrl-C test is tests/test_sweep.py's). Local executor here; the Slurm executor's codes are in
tests/test_slurm_users.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.test_bad_input import assert_one_line, cli_run
from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.store import append_rows, read_rows
from tokenwatt.sweep.case import record_failure
from tokenwatt.sweep.executors import Executor, LocalProcessExecutor
from tokenwatt.sweep.plan import plan
from tokenwatt.sweep.run import failure_summary, run_sweep

SWEEP = """name: exit
model: preset:tiny-llama
precision: PRECISION
device: cpu
workload: {batch_size: [1, 2], prompt_tokens: 8, new_tokens: 4}
measure: {meter: estimate, warmup: 0, repeats: 1, min_seconds: 0, idle_seconds: 0}
fidelity: {enabled: false}
out: OUT
"""


def sweep_file(tmp_path: Path, precision: str, name: str = "s") -> tuple[Path, Path]:
    out = tmp_path / f"{name}-out"
    cfg = tmp_path / f"{name}.yaml"
    cfg.write_text(SWEEP.replace("PRECISION", precision).replace("OUT", str(out)))
    return cfg, out


def tokenwatt(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "tokenwatt", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_every_case_failing_exits_1_with_a_one_line_summary(tmp_path):
    cfg, out = sweep_file(tmp_path, "fp8")  # fp8 needs a GPU: both cases fail in their process
    p = tokenwatt("sweep", str(cfg), "-q")
    assert p.returncode == 1, p.stderr
    assert "2 cases, 0 complete (0 skipped as already done), 2 failed" in p.stdout
    err = p.stderr.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("Error: 2 of 2 cases failed: 2 x PrecisionUnsupported: "), err
    assert f"; logs: {out / '.logs'}; --retry-failed reruns the failed cases" in err
    # still not done on a rerun that skips them: exit 1 again, nothing run
    again = tokenwatt("sweep", str(cfg), "-q")
    assert again.returncode == 1 and "2 skipped" in again.stdout, again.stderr


def test_every_case_done_exits_0(tmp_path):
    cfg, out = sweep_file(tmp_path, "fp32")
    p = tokenwatt("sweep", str(cfg), "-q")
    assert p.returncode == 0, p.stderr
    assert "2 cases, 2 complete" in p.stdout and p.stderr == ""
    again = tokenwatt("sweep", str(cfg), "-q")  # all done before: still everything asked for
    assert again.returncode == 0 and "2 skipped" in again.stdout, again.stderr


def test_bad_input_exits_2(tmp_path):
    cfg, out = sweep_file(tmp_path, "fp32")
    assert_one_line(cli_run("sweep", str(cfg), "--max-cases", "1"), "2 cases", "--max-cases")
    assert not out.exists()


def degraded_run(case, out: Path, run_id: str, windows: int = 2) -> None:
    """What a served run with one degraded trial of three leaves: a row per window of each
    trial, and a summary row per window (the rows a trial or a run is counted by)."""
    base = {"run_id": run_id, "case_id": case.case_id, "schema_version": 1}
    rows = [{**base, "trial": t, "window": w, "status": "degraded" if t == 1 else "ok",
             "status_reason": "MeterError: GPU is lost" if t == 1 else ""}
            for t in range(3) for w in range(windows)]  # fmt: skip
    append_rows(out / RESULTS_CSV, rows, TRIAL_COLUMNS)
    append_rows(out / SUMMARY_CSV, [{"run_id": run_id, "case_id": case.case_id}] * windows)


def test_degraded_trials_of_a_run_made_now_exit_1(tmp_path, monkeypatch):
    cfg, out = sweep_file(tmp_path, "fp32")
    made: list[str] = []

    def run(self, case, out, on_event=None):  # a case process, in process
        made.append(case.case_id)
        degraded_run(case, out, f"run{len(made)}", windows=2 if len(made) == 1 else 1)

    monkeypatch.setattr(LocalProcessExecutor, "run", run)
    r = cli_run("sweep", str(cfg), "-q")
    assert r.exit_code == 1, r.output
    err = r.stderr.strip()
    # two cases, each one degraded trial: counted by trial, not by row or window
    assert err == (f"Error: 2 of 2 cases had 2 degraded trial(s): 2 x MeterError: GPU is "
                   f"lost; logs: {out / '.logs'}"), err  # fmt: skip
    assert "2 cases, 2 complete" in r.stdout
    r = cli_run("sweep", str(cfg), "-q")  # degraded before, skipped now: nothing made now
    assert r.exit_code == 0 and len(made) == 2, r.output


class RoundTwoFails(Executor):
    """fp32 completes every round; bf16 completes round 1 and fails in round 2."""

    def run(self, case, out, on_event=None):
        spec = {"case_id": case.case_id, "config": case.config_dict(), "tags": case.tags}
        if case.config.precision == "bf16" and case.tags["round"] == 2:
            record_failure(out, spec, "CaseOutOfMemory: out of memory")
            return
        n = len(read_rows(out / SUMMARY_CSV)[0])
        append_rows(out / SUMMARY_CSV, [{"run_id": f"r{n}", "case_id": case.case_id}])


def test_a_case_short_of_its_rounds_is_not_done(tmp_path):
    data = {"name": "r", "model": "preset:tiny-llama", "device": "cpu", "rounds": 2,
            "precision": ["fp32", "bf16"], "out": str(tmp_path / "o")}  # fmt: skip
    outcome = run_sweep(data, plan(data), executor=RoundTwoFails())
    assert outcome.status == {c: "complete" for c in outcome.status}  # a summary row each
    assert list(outcome.failed.values()) == ["CaseOutOfMemory: out of memory"]
    assert failure_summary(outcome).startswith("1 of 2 cases failed: 1 x CaseOutOfMemory")


def test_the_summary_names_the_commonest_reasons():
    from collections import Counter

    from tokenwatt.sweep.run import SweepOutcome

    failed = {f"c{i}": f"E{i % 5}: why" for i in range(12)}
    degraded = Counter({"MeterError: lost": 3})
    outcome = SweepOutcome(Path("o"), [None] * 12, [], [], failed,  # type: ignore[list-item]
                           degraded=degraded, degraded_cases={"d"})  # fmt: skip
    line = failure_summary(outcome, most=2)
    assert line == ("12 of 12 cases failed: 3 x E0: why, 3 x E1: why, 6 x other reasons; 1 of "
                    "12 cases had 3 degraded trial(s): 3 x MeterError: lost; logs: o/.logs; "
                    "--retry-failed reruns the failed cases")  # fmt: skip
