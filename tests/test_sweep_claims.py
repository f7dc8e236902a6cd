"""Sweeps that lose a parent or meet another sweep: no case lost, run twice, or failed for it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.errors import FolderBusy
from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV
from tokenwatt.results.store import append_rows
from tokenwatt.sweep import case as case_mod
from tokenwatt.sweep.executors import LocalProcessExecutor
from tokenwatt.sweep.plan import Case, plan
from tokenwatt.sweep.run import run_sweep

HOLD = """
import sys, time
from pathlib import Path
from tokenwatt.results.store import try_claim
claim = try_claim(Path(sys.argv[1]), sys.argv[2])
print("held", flush=True)
time.sleep(float(sys.argv[3]))
"""


def _hold(path: Path, what: str, seconds: float = 60) -> subprocess.Popen:
    """Another live process holding a claim (a sweep, or a case of a killed sweep)."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path), what, str(seconds)],
                         stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def _stop(p: subprocess.Popen) -> None:
    p.kill()
    p.wait()


BASE = {"name": "s", "model": "preset:tiny-llama", "device": "cpu"}


def test_a_second_sweep_on_a_folder_is_refused_naming_the_first(tmp_path, invoke):
    out = tmp_path / "o"
    out.mkdir()
    other = _hold(out / ".sweep.lock", "sweep")
    try:
        cfg = tmp_path / "s.yaml"
        cfg.write_text(f"model: preset:tiny-llama\nprecision: [fp32, bf16]\nout: {out}\n")
        from click.testing import CliRunner

        from tokenwatt.cli import cli

        r = CliRunner().invoke(cli, ["sweep", str(cfg), "-q"])
        err = r.stderr.strip()
        assert r.exit_code == 2 and "\n" not in err, r.output
        assert "another sweep is running" in err and f"pid {other.pid}" in err
        assert not (out / "sweep.json").exists()  # nothing written
    finally:
        _stop(other)
    assert run_sweep({**BASE, "out": str(out)}, [], executor=_Nothing()).planned == []


class _Nothing(LocalProcessExecutor):
    def run(self, case, out, on_event=None):
        raise AssertionError("no case should run")


def _spec(out: Path, **extra) -> dict:
    c = plan({**BASE, "out": str(out), "precision": "fp32"})[0]
    return {"case_id": c.case_id, "config": c.config_dict(), "out": str(out), "tags": {}, **extra}


def test_a_case_held_by_a_live_process_is_not_run_twice(tmp_path, monkeypatch, capsys):
    spec = _spec(tmp_path, complete_runs=[])
    holder = _hold(case_mod.case_lock(tmp_path, spec["case_id"]), f"case {spec['case_id']}")
    monkeypatch.setattr(case_mod, "HOLD_WAIT_S", 0.5)
    monkeypatch.setattr(case_mod, "run_case", lambda spec: pytest.fail("ran a held case"))
    try:
        assert case_mod.claimed_run(spec) == case_mod.HELD_EXIT
    finally:
        _stop(holder)
    err = capsys.readouterr().err
    assert f"pid {holder.pid}" in err and "being measured by" in err


def test_a_case_completed_meanwhile_by_another_process_is_skipped(tmp_path, monkeypatch):
    spec = _spec(tmp_path, complete_runs=["old-run"])
    append_rows(tmp_path / SUMMARY_CSV, [{"run_id": "old-run", "case_id": spec["case_id"]}])
    ran = []
    monkeypatch.setattr(case_mod, "run_case", lambda spec: ran.append(1) or 0)
    assert case_mod.claimed_run(spec) == 0 and ran == [1]  # only the old run: measure again
    append_rows(tmp_path / SUMMARY_CSV, [{"run_id": "orphans-run", "case_id": spec["case_id"]}])
    assert case_mod.claimed_run(spec) == 0 and ran == [1]  # an orphan finished it: skip


def test_a_case_whose_parent_is_already_gone_stops_at_once():
    with pytest.raises(KeyboardInterrupt):
        case_mod.watch_parent(os.getppid() + 100_000)


def _fake_python(tmp_path: Path, body: str) -> str:
    fake = tmp_path / "fake_python"
    fake.write_text("#!/bin/sh\n" + body + "\n")
    fake.chmod(0o755)
    return str(fake)


def test_a_case_stopped_by_sigterm_is_an_interruption_not_a_failure(tmp_path):
    case = Case("c1", plan({**BASE, "out": str(tmp_path)})[0].config)
    ex = LocalProcessExecutor(python=_fake_python(tmp_path, "kill -TERM $$"))
    with pytest.raises(KeyboardInterrupt):
        ex.run(case, tmp_path)
    assert not (tmp_path / RESULTS_CSV).exists()  # no failed row
    assert not (tmp_path / ".cases" / "c1.json").exists()


def test_a_held_case_stops_the_sweep_with_its_line(tmp_path):
    case = Case("c1", plan({**BASE, "out": str(tmp_path)})[0].config)
    line = "Error: case c1 is being measured by pid 42 on h (case c1, since now); wait"
    ex = LocalProcessExecutor(python=_fake_python(tmp_path, f"echo '{line}' >&2; exit 4"))
    with pytest.raises(FolderBusy, match="pid 42"):
        ex.run(case, tmp_path)
    assert not (tmp_path / RESULTS_CSV).exists()


def test_stale_case_files_are_cleaned_and_held_ones_kept(tmp_path):
    cases = tmp_path / ".cases"
    cases.mkdir()
    for name in ("stale.json", "stale.lock", "lockless.json"):
        (cases / name).write_text("{}")
    (cases / "live.json").write_text("{}")
    live = _hold(cases / "live.lock", "case live")
    try:
        run_sweep({**BASE, "out": str(tmp_path)}, [], executor=_Nothing())
        assert sorted(p.name for p in cases.iterdir()) == ["live.json", "live.lock"]
    finally:
        _stop(live)


# --- end to end: the sweep process alone SIGKILLed, a resume started at once ---------------

SWEEP = """name: orphan
model: preset:tiny-llama
precision: [fp32, bf16]
device: cpu
workload: {batch_size: 1, prompt_tokens: 8, new_tokens: 6}
measure: {meter: estimate, warmup: 0, repeats: 20, min_seconds: 0.1, idle_seconds: 0}
fidelity: {enabled: false}
out: OUT
"""


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit is reaped by whoever adopted it, or not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _staged_rows(out: Path) -> int:
    n = 0
    for p in (out / ".staging").glob("*/results.csv"):
        try:
            n = max(n, len(p.read_text().splitlines()) - 1)
        except FileNotFoundError:
            pass
    return n


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sweep_killed_alone_then_resumed_at_once(tmp_path):
    """SIGKILL of the sweep alone: its case notices (PR_SET_PDEATHSIG), stops as an
    interruption (no failed row), and a resume started at once waits for it rather than
    measuring the same case beside it. Every case ends complete, once."""
    out = tmp_path / "sweep"
    cfg = tmp_path / "sweep.yaml"
    cfg.write_text(SWEEP.replace("OUT", str(out)))
    cmd = [sys.executable, "-m", "tokenwatt.cli", "sweep", str(cfg), "-q"]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _staged_rows(out) < 2:
        assert first.poll() is None and time.monotonic() < deadline, "the case never started"
        time.sleep(0.05)
    (lock,) = (out / ".cases").glob("*.lock")
    orphan = json.loads(lock.read_text())["pid"]
    os.kill(first.pid, signal.SIGKILL)  # the sweep alone; its case lives on, for a moment
    first.wait()
    resume = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while _running(orphan):
        assert time.monotonic() < deadline, "the orphaned case did not stop"
        time.sleep(0.05)
    stdout, stderr = resume.communicate(timeout=600)
    assert resume.returncode == 0, stderr
    assert "2 cases, 2 complete (0 skipped as already done), 0 failed" in stdout
    summary = pd.read_csv(out / SUMMARY_CSV)
    assert len(summary) == 2 and summary["case_id"].is_unique
    rows = pd.read_csv(out / RESULTS_CSV)
    assert (rows["status"] == "ok").all() and len(rows) == 40
    assert set(rows["run_id"]) == set(summary["run_id"])  # no trial of a run left incomplete
    meta = json.loads((out / "run.json").read_text())
    assert len(meta["runs"]) == 2 and not meta.get("failures")
    assert not (out / ".staging").exists() and not (out / ".cases").exists()


@pytest.mark.slow
def test_two_sweeps_started_at_once_measure_each_case_once(tmp_path):
    out = tmp_path / "sweep"
    cfg = tmp_path / "sweep.yaml"
    one_case = SWEEP.replace("[fp32, bf16]", "fp32").replace("repeats: 20", "repeats: 2")
    cfg.write_text(one_case.replace("OUT", str(out)))
    cmd = [sys.executable, "-m", "tokenwatt.cli", "sweep", str(cfg), "-q"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]  # fmt: skip
    results = [(p.wait(timeout=900), p.stdout.read(), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    if codes == [0, 0]:  # the machine was so slow that one began after the other had ended
        assert any("(1 skipped as already done)" in out for _, out, _ in results), results
    else:
        assert codes == [0, 2], results
        (refused,) = [err for code, _, err in results if code == 2]
        assert "another sweep is running" in refused and len(refused.strip().splitlines()) == 1
    assert len(pd.read_csv(out / SUMMARY_CSV)) == 1
