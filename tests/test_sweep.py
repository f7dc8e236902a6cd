"""sweep: planning, resume state, the executor seam, and the done-when end to end."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.config import RunConfig, case_id, validate
from tokenwatt.errors import ConfigError
from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.folder import case_states
from tokenwatt.results.store import append_rows, update_json
from tokenwatt.sweep.case import FAILED_EXIT, merge_stage, record_failure
from tokenwatt.sweep.executors import Executor, LocalProcessExecutor
from tokenwatt.sweep.plan import Case, pending, plan
from tokenwatt.sweep.run import failure_summary, run_sweep

BASE = {"name": "s", "model": "preset:tiny-llama", "device": "cpu", "out": "unused"}


def test_lists_expand_into_the_full_product_in_order():
    data = {
        **BASE,
        "precision": ["fp32", "bf16"],
        "workload": {"batch_size": [1, 2], "prompt_tokens": 8},
    }
    cases = plan(data)
    got = [(c.config.precision, c.config.workload.batch_size) for c in cases]
    assert got == [("fp32", 1), ("fp32", 2), ("bf16", 1), ("bf16", 2)]
    for c in cases:
        assert c.case_id == case_id(c.config)
        assert c.config.workload.prompt_tokens == 8
    assert len({c.case_id for c in cases}) == 4


def test_cases_list_is_a_union_of_sub_grids_without_duplicates():
    data = {
        **BASE,
        "precision": "fp32",
        "cases": [
            {"workload": {"batch_size": [1, 2]}},
            {"precision": "fp8", "workload": {"batch_size": 1}},
            {"workload": {"batch_size": 1}},  # the same as the first grid's first case
        ],
    }
    got = [(c.config.precision, c.config.workload.batch_size) for c in plan(data)]
    assert got == [("fp32", 1), ("fp32", 2), ("fp8", 1)]


def test_case_id_ignores_out_and_name():
    a = plan({**BASE, "precision": "bf16"})[0]
    b = plan({**BASE, "precision": "bf16", "name": "other", "out": "elsewhere"})[0]
    assert a.case_id == b.case_id


@pytest.mark.parametrize(
    "data, match",
    [
        ({"measure": {"repeats": [1, 2]}}, "measure.repeats is a list"),
        ({"name": ["a", "b"]}, "name is a list"),
        ({"precision": []}, "precision is an empty list"),
        ({"precision": ["bf16", "fp9"]}, "unknown precision 'fp9'"),
        ({"cases": {"precision": "bf16"}}, "cases must be a list"),
    ],
)
def test_bad_sweeps_are_one_line_config_errors(data, match):
    with pytest.raises(ConfigError, match=match):
        plan({**BASE, **data})


def test_agent_turns_grow_the_context():
    data = {
        **BASE,
        "precision": ["bf16", "fp32"],
        "agent": {"turns": 3, "system_tokens": 100, "user_tokens": 10, "reply_tokens": 20},
    }
    cases = plan(data)
    assert len(cases) == 6
    bf16 = [c for c in cases if c.config.precision == "bf16"]
    assert [c.config.workload.prompt_tokens for c in bf16] == [110, 140, 170]
    assert {c.config.workload.new_tokens for c in bf16} == {20}
    assert [c.tags["turn"] for c in bf16] == [1, 2, 3]
    assert bf16[0].tags["request"] == "s" and bf16[1].config.name == "s-turn2"
    with pytest.raises(ConfigError, match="agent needs integer"):
        plan({**BASE, "agent": {"turns": 2}})


def _row(cid, trial=0, status="ok", run="r"):
    return {"run_id": f"{run}-{cid}", "case_id": cid, "trial": trial, "status": status}


def test_resume_state_from_the_folder(tmp_path):
    append_rows(
        tmp_path / RESULTS_CSV,
        [_row("done"), _row("done", 1), _row("failed", "", "failed"), _row("partial")],
        TRIAL_COLUMNS,
    )
    append_rows(tmp_path / SUMMARY_CSV, [{"run_id": "r-done", "case_id": "done"}])
    states = case_states(tmp_path)
    assert states == {"done": "complete", "failed": "failed"}  # partial: trials, no summary
    cases = [Case(c, {}) for c in ("done", "failed", "partial", "new")]
    ids = lambda cs: [c.case_id for c in cs]  # noqa: E731
    assert ids(pending(cases, states, force=False, retry_failed=False)) == ["partial", "new"]
    assert ids(pending(cases, states, False, True)) == ["failed", "partial", "new"]
    assert ids(pending(cases, states, True, False)) == ["done", "failed", "partial", "new"]
    # a failed case that later completed is complete
    append_rows(tmp_path / SUMMARY_CSV, [{"run_id": "r-failed", "case_id": "failed"}])
    assert case_states(tmp_path)["failed"] == "complete"


def _stage(stage: Path, cid: str, run_id: str) -> None:
    stage.mkdir(parents=True)
    rows = [
        {"run_id": run_id, "case_id": "local-id", "device": "cuda", "trial": i, "status": "ok"}
        for i in range(2)
    ]
    append_rows(stage / RESULTS_CSV, rows, TRIAL_COLUMNS)
    append_rows(stage / SUMMARY_CSV, [{"run_id": run_id, "case_id": "local-id", "device": "cuda"}])
    update_json(
        stage / "run.json",
        "runs",
        {"run_id": run_id, "case_id": "local-id", "config": {}, "summary": {"device": "cuda"}},
    )


def test_merge_restores_planned_ids_and_is_idempotent(tmp_path):
    out, stage = tmp_path / "out", tmp_path / "out" / ".staging" / "c-1"
    _stage(stage, "c", "run1")
    spec = {
        "case_id": "c",
        "config": {"device": "cuda:1", "precision": "bf16"},
        "local_device": "cuda",
    }
    merge_stage(stage, out, spec, "run1")
    merge_stage(stage, out, spec, "run1")  # a second merge (e.g. after a crash) adds nothing
    trials = pd.read_csv(out / RESULTS_CSV)
    assert len(trials) == 2 and set(trials["case_id"]) == {"c"}
    assert set(trials["device"]) == {"cuda:1"}
    assert len(pd.read_csv(out / SUMMARY_CSV)) == 1
    runs = json.loads((out / "run.json").read_text())["runs"]
    assert len(runs) == 1 and runs[0]["config"]["device"] == "cuda:1"


SPEC = {
    "case_id": "c9",
    "config": {
        "name": "s",
        "model": "m",
        "precision": "fp8",
        "compile": False,
        "device": "cpu",
        "workload": {"batch_size": 1, "prompt_tokens": 8, "new_tokens": 6},
    },
    "tags": {},
}


def test_failed_row_carries_status_and_error(tmp_path):
    record_failure(tmp_path, SPEC, "PrecisionUnsupported: fp8 needs a GPU")
    df = pd.read_csv(tmp_path / RESULTS_CSV)
    assert df.loc[0, "status"] == "failed" and df.loc[0, "precision"] == "fp8"
    assert df.loc[0, "error"] == "PrecisionUnsupported: fp8 needs a GPU"
    assert case_states(tmp_path) == {"c9": "failed"}


def test_a_case_process_that_dies_is_recorded_for_it(tmp_path):
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\necho 'Segmentation fault in kernel' >&2\nexit 7\n")
    fake.chmod(0o755)
    case = Case("c9", RunConfig.model_validate(SPEC["config"]))
    LocalProcessExecutor(python=str(fake)).run(case, tmp_path)
    df = pd.read_csv(tmp_path / RESULTS_CSV)
    assert df.loc[0, "status"] == "failed"
    assert "exited with code 7" in df.loc[0, "error"] and "Segmentation fault" in df.loc[0, "error"]


class RecordingExecutor(Executor):
    """In-process stand-in: completes every case except fp8, which fails."""

    def __init__(self):
        self.ran = []

    def run(self, case, out, on_event=None):
        self.ran.append(case.case_id)
        spec = {"case_id": case.case_id, "config": case.config_dict(), "tags": case.tags}
        if case.config.precision == "fp8":
            record_failure(out, spec, "PrecisionUnsupported: fp8 needs a GPU")
            return
        append_rows(out / SUMMARY_CSV, [{"run_id": f"r{len(self.ran)}", "case_id": case.case_id}])


def test_run_sweep_skips_complete_and_reports_failures(tmp_path):
    data = {**BASE, "out": str(tmp_path / "o"), "precision": ["fp32", "fp8"]}
    cases = plan(data)
    first = RecordingExecutor()
    outcome = run_sweep(data, cases, executor=first)
    assert len(first.ran) == 2 and outcome.skipped == []
    assert list(outcome.failed.values()) == ["PrecisionUnsupported: fp8 needs a GPU"]
    assert failure_summary(outcome).startswith(
        "1 of 2 cases failed: 1 x PrecisionUnsupported: fp8 needs a GPU; logs: "
    )
    again = RecordingExecutor()
    outcome = run_sweep(data, cases, executor=again)
    assert again.ran == [] and len(outcome.skipped) == 2 and len(outcome.failed) == 1
    retry = RecordingExecutor()
    run_sweep(data, cases, executor=retry, retry_failed=True)
    assert retry.ran == [cases[1].case_id]
    assert len(json.loads((tmp_path / "o" / "sweep.json").read_text())["sweeps"]) == 3


# --- end to end: real case processes, a real SIGINT -------------------------------------------

SWEEP = """name: e2e
model: preset:tiny-llama
precision: [fp32, fp8]
device: cpu
workload: {batch_size: [1, 2], prompt_tokens: 8, new_tokens: 6}
measure: {warmup: 0, repeats: 2, min_seconds: 0, idle_seconds: 0.05}
fidelity: {enabled: false}
out: OUT
"""


def _sweep_cmd(cfg: Path) -> list[str]:
    return [sys.executable, "-m", "tokenwatt.cli", "sweep", str(cfg), "-q"]


def _wait_for(pred, proc, timeout=240.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        assert proc.poll() is None, "the sweep ended before it could be interrupted"
        time.sleep(0.05)
    raise AssertionError("timed out")


@pytest.mark.slow
def test_sweep_interrupted_then_resumed_then_compare_and_report(tmp_path, invoke):
    """2 precisions x 2 batch sizes; fp8 cannot run on CPU. Ctrl-C while the second case runs,
    rerun: the remaining cases run, no row is duplicated or lost, failures are summarised."""
    out = tmp_path / "sweep"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(SWEEP.replace("OUT", str(out)))
    proc = subprocess.Popen(
        _sweep_cmd(cfg),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    summary = out / SUMMARY_CSV
    second_running = lambda: summary.is_file() and any((out / ".staging").glob("*"))  # noqa: E731
    _wait_for(second_running, proc)
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    first = pd.read_csv(out / RESULTS_CSV)
    assert len(pd.read_csv(summary)) == 1 and len(first) == 2  # nothing of the second case
    assert not any((out / ".staging").glob("*"))  # the case cleaned up or left nothing behind

    done = subprocess.run(_sweep_cmd(cfg), capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr  # failed cases: exit 1 after the summary
    assert "4 cases, 2 complete (1 skipped as already done), 2 failed" in done.stdout
    assert "2 of 4 cases failed:" in done.stderr and "2 x PrecisionUnsupported" in done.stderr

    rows = pd.read_csv(out / RESULTS_CSV)
    ok = rows[rows["status"] == "ok"]
    assert len(ok) == 4 and not ok.duplicated(["case_id", "trial"]).any()
    assert ok["run_id"].nunique() == 2 and first["run_id"].iloc[0] in set(ok["run_id"])
    failed = rows[rows["status"] == "failed"]
    assert sorted(failed["batch_size"]) == [1, 2] and set(failed["precision"]) == {"fp8"}
    assert failed["error"].str.contains("compute capability").all()
    assert len(pd.read_csv(summary)) == 2

    r = invoke("compare", str(out), "--baseline", "batch_size=1", "--csv", str(tmp_path / "c.csv"))
    assert r.exit_code == 0, r.output
    assert len(pd.read_csv(tmp_path / "c.csv")) == 1
    r = invoke("report", str(out))
    assert r.exit_code == 0, r.output
    md = (out / "report.md").read_text()
    assert "## Failed cases (2)" in md and "Comparison against batch_size=1" in md
    for stem in ("power_trace", "j_per_token", "j_per_token_vs_batch_size"):
        assert (out / "figures" / f"{stem}.png").stat().st_size > 1000


def test_case_module_exit_code_when_the_case_fails(tmp_path):
    """fp8 on CPU: the case process records a failed row and exits FAILED_EXIT (in-process)."""
    from tokenwatt.sweep.case import run_case

    spec = {
        **SPEC,
        "out": str(tmp_path),
        "config": validate(
            {**BASE, "precision": "fp8", "device": "cpu", "out": str(tmp_path)}
        ).model_dump(mode="json"),
    }
    assert run_case(spec) == FAILED_EXIT
    assert case_states(tmp_path) == {"c9": "failed"}
    assert not any((tmp_path / ".staging").glob("*"))


def test_region_and_pue_flags_reach_every_case_and_bad_region_is_one_line(tmp_path):
    from tokenwatt.errors import ConfigError
    from tokenwatt.sweep.plan import load_sweep

    cfg = tmp_path / "s.yaml"
    cfg.write_text("model: preset:tiny-llama\nprecision: [fp32, bf16]\nout: OUT\n")
    _, cases = load_sweep(cfg, str(tmp_path / "o"), region="frankfurt", pue=1.3)
    assert len(cases) == 2
    assert all(c.config.carbon.model_dump() == {"region": "frankfurt", "pue": 1.3} for c in cases)
    with pytest.raises(ConfigError, match="did you mean 'frankfurt'"):
        load_sweep(cfg, str(tmp_path / "o"), region="frankfrt")
