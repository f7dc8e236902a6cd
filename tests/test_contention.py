"""Contention: what other processes did during each trial, and the `contended` flag on every
surface (results.csv, summary.csv, the console, the report)."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.loads import busy_sibling, orphan_busy, spinning_server
from tokenwatt._util.proctree import MachineCpu, ProcessTree
from tokenwatt.runner import contention
from tokenwatt.runner.contention import ContentionMonitor, Readings, assess


class FakeMachine:
    """System CPU counters that advance by `others + ours` busy cores per second of clock."""

    def __init__(self, clock, others: float, ours: float = 1.0, steal: float = 0.0) -> None:
        self.clock, self.others, self.ours, self.steal = clock, others, ours, steal

    def machine(self) -> MachineCpu:
        t = self.clock()
        return MachineCpu(busy_s=(self.others + self.ours) * t, steal_s=self.steal * t,
                          total_s=2.0 * t)  # fmt: skip

    def tree(self) -> float:
        return self.ours * self.clock()


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _monitor(others: float, runnable: int, steal: float = 0.0, gpu: list[int] | None = None):
    clock = Clock()
    fake = FakeMachine(clock, others, steal=steal)
    readings = Readings(machine=fake.machine, tree_cpu_s=fake.tree, clock=clock,
                        tree_pids=lambda: {1}, other_runnable=lambda ours: runnable,
                        gpu_other_pids=lambda: gpu or [])  # fmt: skip
    mon = ContentionMonitor(readings, sample_s=60).start()
    clock.t += 5.0  # a five-second trial
    return mon.stop()


def test_a_quiet_machine_is_not_contended() -> None:
    cols = _monitor(others=0.05, runnable=0)
    assert cols["other_cpu_cores"] == pytest.approx(0.05)
    assert cols["other_runnable"] == 0 and cols["cpu_steal_pct"] == 0
    assert cols["contended"] is False and cols["contention_reason"] == ""


@pytest.mark.parametrize(
    ("kw", "reason"),
    [(dict(others=1.5, runnable=0), "1.50 CPU cores"), (dict(others=0.2, runnable=2), "runnable"),
     (dict(others=0.0, runnable=0, steal=0.2), "steal"),
     (dict(others=0.0, runnable=0, gpu=[4242]), "other processes on the measured GPUs")],
)  # fmt: skip
def test_each_kind_of_load_flags_the_trial(kw, reason) -> None:
    cols = _monitor(**kw)
    assert cols["contended"] is True and reason in cols["contention_reason"]


def test_summary_counts_contended_trials_and_warns() -> None:
    from tokenwatt.runner.contention import summarise_contention

    quiet, busy = _monitor(0.0, 0), _monitor(1.2, 0)
    out, warnings = summarise_contention([quiet, busy, quiet])
    assert out["contended"] and out["n_contended"] == 1
    assert out["other_cpu_cores_max"] == pytest.approx(1.2)
    assert warnings and warnings[0].startswith("contended:") and "1 of 3" in warnings[0]
    assert summarise_contention([quiet]) == ({"contended": False, "n_contended": 0,
                                              "other_cpu_cores_max": 0.0}, [])  # fmt: skip


def test_assess_of_an_empty_window() -> None:
    m = MachineCpu(1.0, 0.0, 2.0)
    cols = assess(m, m, 0.0, 0.0, [], 0)
    assert math.isnan(cols["other_cpu_cores"]) and cols["contended"] is False


def test_process_tree_counts_a_busy_child() -> None:
    """The estimate and the contention record count this tree's children as ours."""
    tree = ProcessTree()
    before = tree.cpu_seconds()
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"]
    )
    try:
        time.sleep(0.2)
        tree._scanned = -1e9  # rescan now rather than within a second
        assert child.pid in {c.pid for c in tree.children()}
        child.wait(timeout=30)
    finally:
        child.kill()
    assert tree.cpu_seconds() - before > 0.5  # the reaped child's CPU time is kept


def test_a_run_beside_a_busy_process_is_flagged_everywhere(tmp_path, fast_args) -> None:
    """results.csv, summary.csv, the console and the report all say CONTENDED."""
    out = tmp_path / "busy"
    load = busy_sibling()
    try:
        time.sleep(0.5)
        cmd = [sys.executable, "-m", "tokenwatt.cli", "run", *fast_args, "--device", "cpu",
               "--precision", "fp32", "--meter", "estimate", "--min-seconds", "1",
               "--no-fidelity", "--out", str(out)]  # fmt: skip
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    finally:
        load.kill()
        load.wait()
    assert p.returncode == 0, p.stderr
    trials = pd.read_csv(out / "results.csv")
    assert trials["contended"].all()
    assert (trials["other_cpu_cores"] >= 0.5).all()  # the busy sibling's core, at least
    summary = pd.read_csv(out / "summary.csv")
    assert summary["contended"].all() and "contended" in summary["summary_flags"].iloc[0]
    assert "CONTENDED" in p.stdout and "contended:" in p.stderr
    from tokenwatt.report.document import write_report

    write_report(out)  # matplotlib is in the test extras
    assert "**CONTENDED:" in (out / "report.md").read_text()


def test_injected_quiet_readings_give_an_uncontended_run(tmp_path, invoke, fast_args,
                                                         monkeypatch) -> None:  # fmt: skip
    """The same run with the load reading injected as quiet: nothing is flagged."""
    clock = Clock()

    def machine() -> MachineCpu:
        clock.t += 0.01
        return MachineCpu(busy_s=0.0, steal_s=0.0, total_s=2 * clock.t)

    monkeypatch.setattr(contention, "machine_cpu", machine)
    monkeypatch.setattr(contention, "RunnableElsewhere", lambda: lambda ours: None)
    out = tmp_path / "quiet"
    r = invoke("run", *fast_args, "--device", "cpu", "--precision", "fp32", "--meter",
               "estimate", "--no-fidelity", "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    assert not pd.read_csv(out / "results.csv")["contended"].any()
    summary = pd.read_csv(out / "summary.csv")
    assert not summary["contended"].any() and "CONTENDED" not in r.output


def test_waiting_processes_that_get_little_cpu_are_contention():
    """Two busy processes beside a server whose threads spin on every core get little CPU
    (0.1 core between them in CI beside vLLM) but wait all the time: contention."""
    cols = _monitor(others=0.05, runnable=2)
    assert cols["other_runnable"] == 2 and cols["contended"]
    assert "2.0 runnable threads" in cols["contention_reason"]


def _stat(pid: int, name: str, state: str, ticks: int, threads: int) -> str:
    """A /proc/PID/stat line: pid (comm) state, then fields 4.. with utime/stime and
    num_threads where proc(5) puts them (14, 15, 20)."""
    rest = ["0"] * 49
    rest[10], rest[11], rest[16] = str(ticks), "0", str(threads)
    return f"{pid} ({name}) {state} " + " ".join(rest) + "\n"


def _fake_proc(root, procs: dict[int, tuple[str, int, list[str]]]):
    """/proc with `procs`: pid -> (main state, CPU ticks, its threads' states)."""
    import shutil

    shutil.rmtree(root, ignore_errors=True)
    for pid, (state, ticks, threads) in procs.items():
        d = root / str(pid)
        (d / "task").mkdir(parents=True)
        (d / "stat").write_text(_stat(pid, "a (b) c", state, ticks, len(threads)))
        for i, t in enumerate(threads):
            (d / "task" / str(pid + i)).mkdir()
            (d / "task" / str(pid + i) / "stat").write_text(_stat(pid + i, "w", t, 0, 1))
    (root / "loadavg").write_text("0.1 0.1 0.1 1/50 9\n")  # not a pid: skipped


def test_runnable_elsewhere_reads_threads_only_of_processes_that_ran(tmp_path):
    """One read per idle process; a many-threaded one's threads are read when its main thread
    runs or it used CPU since the last call; excluded pids are never read."""
    from tokenwatt._util.proctree import RunnableElsewhere

    proc = tmp_path / "proc"
    count = RunnableElsewhere(proc)
    procs = {10: ("R", 5, ["R"]),  # a busy single-threaded process
             20: ("S", 7, ["S", "R", "R"]),  # a worker pool: main thread asleep, two running
             30: ("R", 1, ["R", "R"]),  # ours (excluded)
             40: ("S", 0, ["S"])}  # fmt: skip
    _fake_proc(proc, procs)
    assert count({30}) == 3  # first call: every many-threaded process is new
    procs[10] = ("R", 9, ["R"])
    _fake_proc(proc, procs)  # process 20 used no CPU since: its threads are not read
    assert count({30}) == 1
    procs[20] = ("S", 8, ["S", "R", "S"])
    _fake_proc(proc, procs)
    assert count({30}) == 2
    assert count({10, 20, 30}) == 0
    assert RunnableElsewhere(tmp_path / "none")(set()) is None  # no /proc: unmeasured


def test_busy_processes_beside_a_spinning_server_are_counted_the_server_not():
    """Real /proc: beside a server with 8 spinning threads (its own load, excluded by pid), no
    other thread waits; two busy processes more are two runnable threads, whatever CPU the
    server leaves them."""
    from tokenwatt._util.proctree import ProcessForest

    server = spinning_server()
    hogs: list[int] = []
    try:
        readings = Readings(server=ProcessForest({server.pid}))
        alone = ContentionMonitor(readings, sample_s=0.1).start()
        time.sleep(2.0)
        alone = alone.stop()
        hogs = [orphan_busy() for _ in range(2)]
        time.sleep(0.3)
        beside = ContentionMonitor(readings, sample_s=0.1).start()
        time.sleep(2.0)
        beside = beside.stop()
    finally:
        server.kill()
        server.wait()
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
    assert alone["server_cpu_cores"] > 0.5, alone  # the server did spin
    assert alone["other_runnable"] < 1.0 and not alone["contended"], alone
    assert 1.5 <= beside["other_runnable"] < 4.0, beside  # the hogs, not the server's 8
    assert beside["contended"] and "runnable threads" in beside["contention_reason"]
