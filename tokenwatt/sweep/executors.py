"""Executors: how a sweep gets its cases run. The sweep plans; an executor runs; the case
process (tokenwatt.sweep.case) measures and writes its own rows.

The seam is `Executor.run_all(cases, out, on_event)`. `LocalProcessExecutor` runs the cases
one after another (energy measurements must not share the machine), each in a fresh
`python -m tokenwatt.sweep.case CASE.json` that sees only the devices it needs through
CUDA_VISIBLE_DEVICES. The sweep never reads an executor's return value: it reads the state
of the results folder afterwards, so an asynchronous executor fits the same seam.

A SlurmExecutor needs no change to the case code:
  - `case_file(case, out, local_device)` writes the same CASE.json into OUT/.cases/ on the
    shared filesystem;
  - `run_all` submits one job per case, e.g.
    `sbatch --gres=gpu:1 --job-name tw-<case_id> --output OUT/.logs/<case_id>.log
    --wrap "python -m tokenwatt.sweep.case OUT/.cases/<case_id>.json"` (Slurm sets
    CUDA_VISIBLE_DEVICES to the allocated GPU, so local_device is "cuda"), then waits for the
    jobs (`sbatch --wait`, or poll `squeue`) and reports progress from `case_states(out)`;
  - a job that dies without writing (node failure) is recorded with
    `tokenwatt.sweep.case.record_failure`, as `_died` does here; one stopped by a signal
    (a time limit's SIGTERM) is an interruption, not a failure.
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
from tokenwatt.results.columns import SUMMARY_CSV
from tokenwatt.results.folder import CASES, LOGS
from tokenwatt.results.store import read_rows, write_atomic
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

    def run_all(self, cases: list[Case], out: Path, on_event: OnEvent | None = None) -> None:
        for case in cases:
            self.run(case, out, on_event)

    @abstractmethod
    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        """Run one case to its end (done or failed, both recorded in `out`)."""


def case_file(case: Case, out: Path, local_device: str, parent_pid: int | None = None) -> Path:
    """The CASE.json a case process reads (with the case's complete runs so far, so it can
    tell that another process completed it meanwhile)."""
    path = out / CASES / f"{case.case_id}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = read_rows(out / SUMMARY_CSV)[0]
    spec = {
        "case_id": case.case_id,
        "config": case.config,
        "out": str(out),
        "tags": case.tags,
        "local_device": local_device,
        "complete_runs": [r["run_id"] for r in summary if r.get("case_id") == case.case_id],
    }
    if parent_pid:
        spec["parent_pid"] = parent_pid
    write_atomic(path, json.dumps(spec, indent=1))
    return path


def device_env(device: str, visible: str | None, boards: int = 0) -> tuple[str, str]:
    """(CUDA_VISIBLE_DEVICES for the case, the device name the case uses inside it).

    cpu sees no GPU; cuda:N sees only GPU N (counted within the parent's own visible list,
    which may hold UUIDs) and calls it "cuda"; auto and cuda see the first visible GPU. A
    case that holds `boards` GPUs (its `gpus` field) sees the first that many.
    """
    gpus = [g.strip() for g in visible.split(",") if g.strip()] if visible else []
    if boards > 1 or (device == "cpu" and boards):  # a case holding boards (gpus: N): the first N
        names = gpus[:boards] if gpus else [str(i) for i in range(boards)]
        return ",".join(names), "cpu" if device == "cpu" else "cuda"
    if device == "cpu":
        return "", "cpu"
    if device.startswith("cuda:"):
        index = int(device.split(":")[1])
        if gpus:
            physical = gpus[index] if index < len(gpus) else str(index)
        else:
            physical = str(index)
        return physical, "cuda"
    return (gpus[0] if gpus else "0"), device


class LocalProcessExecutor(Executor):
    """One fresh Python process per case, one case at a time."""

    def __init__(self, python: str | None = None, grace_s: float = 30.0) -> None:
        self.python = python or sys.executable
        self.grace_s = grace_s

    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        gpus = case.config.get("gpus")
        held = 0 if gpus is None else gpus if isinstance(gpus, int) else len(gpus)
        visible, local = device_env(case.config["device"], os.environ.get("CUDA_VISIBLE_DEVICES"),
                                    held)  # fmt: skip
        path = case_file(case, out, local, parent_pid=os.getpid())
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=visible, PYTHONUNBUFFERED="1")
        if isinstance(gpus, list):  # boards named by the case, in the parent's numbering: keep it
            env.pop("CUDA_VISIBLE_DEVICES")
            env.update({k: v for k, v in os.environ.items() if k == "CUDA_VISIBLE_DEVICES"})
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
            _died(out, case, local, code, log)

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


def _died(out: Path, case: Case, local: str, code: int, log: Path) -> None:
    """The process ended without recording itself (killed, crashed): record it for it."""
    why = f"case process exited with code {code}"
    if code < 0:
        why = f"case process killed by signal {-code} (out of host memory?)"
    if tail := _last_line(log):
        why += f"; last log line: {tail[:200]}"
    spec = {
        "case_id": case.case_id,
        "config": case.config,
        "tags": case.tags,
        "local_device": local,
    }
    record_failure(out, spec, why)


def _last_line(log: Path) -> str:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else ""
