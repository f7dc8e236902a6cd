"""Executors: how a sweep gets its cases run. The sweep plans; an executor runs; the case
process (tokenwatt.sweep.case) measures and writes its own rows.

The seam is `Executor.run_all(cases, out, on_event)`. `LocalProcessExecutor` runs the cases
one after another (energy measurements must not share the machine), each in a fresh
`python -m tokenwatt.sweep.case CASE.json` that sees only the devices it needs through
CUDA_VISIBLE_DEVICES. How many boards a case holds is placement's decision
(`placement.hold_for`, from what this machine offers); the executor only carries it out. The
sweep never reads an executor's return value: it reads the state of the results folder
afterwards, so an asynchronous executor fits the same seam (sweep/slurm.py: the same
CASE.json, a job per case; a job that dies without writing is recorded with
`tokenwatt.sweep.case.record_failure`, as `_died` does here).
Results merge safely because every write to OUT holds OUT's file lock (filelock works on
NFS/Lustre when the cluster supports fcntl or lockf on it; check once).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenwatt.errors import FolderBusy, WriteFailed
from tokenwatt.placement import Hold, Offer, hold_for, local_offer, visible_for
from tokenwatt.results.folder import CASES, LOGS, complete_summaries
from tokenwatt.results.store import write_atomic
from tokenwatt.sweep.case import (
    EVENT_PREFIX,
    FAILED_EXIT,
    HELD_EXIT,
    INTERRUPTED_EXIT,
    OUT_FAULT_EXIT,
    record_failure,
)
from tokenwatt.sweep.plan import Case

# A case ended by one of these was stopped (Ctrl-C, a time limit, a closed terminal), not
# broken: the sweep stops as interrupted and a rerun measures the case again.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

OnEvent = Callable[[Case, dict[str, Any]], None]


class Executor(ABC):
    """Runs cases of a sweep; each case writes its own rows into `out`."""

    def preflight(self, cases: list[Case], out: Path) -> None:  # noqa: B027 - optional hook
        """Refuse, in one line, a sweep this executor cannot run, before OUT is created or
        anything starts (Slurm: its controller, partition, flags). Here: nothing to check."""

    def run_all(self, cases: list[Case], out: Path, on_event: OnEvent | None = None) -> None:
        for case in cases:
            self.run(case, out, on_event)

    @abstractmethod
    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        """Run one case to its end (done or failed, both recorded in `out`)."""


def case_file(case: Case, out: Path, hold: Hold, visible: str | None = None,
              parent_pid: int | None = None) -> Path:  # fmt: skip
    """The CASE.json a case process reads: the case's config, the hold its executor decided
    (the device its process is given; `visible`, when not None, the CUDA_VISIBLE_DEVICES it
    sets before anything starts CUDA) and the case's complete runs so far, so it can tell that
    another process completed it meanwhile."""
    path = out / CASES / f"{case.case_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = complete_summaries(out)  # a stopped run's summary does not complete a case
    spec = {
        **case_spec(case, hold),
        "out": str(out),
        "complete_runs": [r["run_id"] for r in summary if r.get("case_id") == case.case_id],
    }
    if visible is not None:
        spec["cuda_visible_devices"] = visible
    if parent_pid:
        spec["parent_pid"] = parent_pid
    write_atomic(path, json.dumps(spec, indent=1))
    return path


def case_spec(case: Case, hold: Hold) -> dict[str, Any]:
    """What record_failure needs of a case, and what every CASE.json starts with."""
    return {
        "case_id": case.case_id,
        "config": case.config_dict(),
        "tags": case.tags,
        "local_device": hold.device,
        "held_boards": hold.boards,
        "held_why": hold.why,
    }


def model_here(case: Case) -> bool:
    """Whether the case's model runs where the case runs (its engine says)."""
    from tokenwatt.engines import engine_class

    return engine_class(case.config.engine).runs_model_here(case.config)


class LocalProcessExecutor(Executor):
    """One fresh Python process per case, one case at a time."""

    def __init__(self, python: str | None = None, grace_s: float = 30.0) -> None:
        self.python = python or sys.executable
        self.grace_s = grace_s
        self._offer: Offer | None = None

    @property
    def offer(self) -> Offer:
        """What this machine offers a case that does not name its boards (asked once)."""
        if self._offer is None:
            self._offer = local_offer()
        return self._offer

    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        hold = hold_for(case.config, self.offer, model_here=model_here(case),
                        renumbered=not isinstance(case.config.gpus, list))  # fmt: skip
        visible = visible_for(case.config, hold, os.environ.get("CUDA_VISIBLE_DEVICES"))
        path = case_file(case, out, hold, visible, parent_pid=os.getpid())
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        log = out / LOGS / f"{case.case_id}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [self.python, "-m", "tokenwatt.sweep.case", str(path)]
        with open(log, "w", encoding="utf-8") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, text=True)
            try:
                self._follow(proc, case, on_event)
                code = proc.wait()
            except BaseException:  # Ctrl-C, SIGTERM (cli's Terminated), anything: no orphans
                self._stop(proc)
                raise
        path.unlink(missing_ok=True)
        if code == INTERRUPTED_EXIT or -code in STOP_SIGNALS:
            raise KeyboardInterrupt
        if code == HELD_EXIT:
            raise FolderBusy(_last_line(log).removeprefix("Error: "))
        if code == OUT_FAULT_EXIT:
            raise WriteFailed(_last_line(log).removeprefix("Error: "))
        if code not in (0, FAILED_EXIT):
            _died(out, case, hold, code, log)

    def _follow(self, proc: subprocess.Popen, case: Case, on_event: OnEvent | None) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith(EVENT_PREFIX) and on_event:
                on_event(case, json.loads(line[len(EVENT_PREFIX) :]))

    def _stop(self, proc: subprocess.Popen) -> None:
        """Ctrl-C reached us: make sure the case stops too (it may share our terminal's
        signal, or not, when only this process was signalled)."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=self.grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _died(out: Path, case: Case, hold: Hold, code: int, log: Path) -> None:
    """The process ended without recording itself (killed, crashed): record it for it."""
    why = f"case process exited with code {code}"
    if code < 0:
        why = f"case process killed by signal {-code} (out of host memory?)"
    if tail := _last_line(log):
        why += f"; last log line: {tail[:200]}"
    record_failure(out, case_spec(case, hold), why)


def _last_line(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
