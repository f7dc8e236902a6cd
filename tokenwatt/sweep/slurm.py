"""Sweeps on Slurm through submitit: one job array per GPU count, each task one case.

Each task runs the same `python -m tokenwatt.sweep.case CASE.json` as the local executor
(Slurm's CUDA_VISIBLE_DEVICES gives the case its own boards), so the results folder (on a
shared filesystem, written under its file lock) stays the truth: the sweep reads it after the
arrays end, and a rerun skips what it shows finished. A job killed from outside (scancel, a
time limit, preemption, a node failure) writes nothing: it is recorded here as a failed row
with the job's state and log path, so `--retry-failed` measures it again.

submitit polls sacct for states; clusters without accounting answer nothing (states stay
UNKNOWN and killed jobs never end), so the watcher falls back to squeue, which keeps finished
jobs for MinJobAge seconds.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt._util.extras import require
from tokenwatt.results.folder import LOGS, case_states
from tokenwatt.sweep.case import record_failure
from tokenwatt.sweep.executors import Executor, OnEvent, case_file
from tokenwatt.sweep.plan import Case

POLL_S = 2.0
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")  # fmt: skip


@dataclass
class SlurmOptions:
    partition: str | None = None
    time_min: int = 60
    account: str | None = None
    sbatch: list[str] = field(default_factory=list)  # extra flags: --qos=high, --constraint=h100
    parallelism: int = 8  # array tasks running at once
    cpus_per_task: int = 2


def board_count(case: Case) -> int:
    """The GPUs a case's job asks for (0 for a CPU case)."""
    from tokenwatt.config import RunConfig

    return RunConfig.model_validate(case.config).board_count()


def arrays(cases: list[Case]) -> dict[int, list[Case]]:
    """{GPUs per task: its cases}: one array per GPU count (an array asks one size for all)."""
    out: dict[int, list[Case]] = {}
    for c in cases:
        out.setdefault(board_count(c), []).append(c)
    return dict(sorted(out.items()))


def sbatch_parameters(opts: SlurmOptions, gpus: int, tasks: int) -> dict[str, Any]:
    """submitit AutoExecutor parameters of one array."""
    extra: dict[str, Any] = {}
    for flag in opts.sbatch:
        key, _, value = flag.lstrip("-").partition("=")
        extra[key.replace("-", "_")] = value or True
    if opts.account:
        extra["account"] = opts.account
    params: dict[str, Any] = {"timeout_min": opts.time_min, "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": opts.cpus_per_task, "name": f"tokenwatt-{gpus}gpu",
                              "slurm_array_parallelism": min(opts.parallelism, tasks),
                              "slurm_additional_parameters": extra}  # fmt: skip
    if gpus:
        params["gpus_per_node"] = gpus
    if opts.partition:
        params["slurm_partition"] = opts.partition
    return params


def run_case_file(path: str) -> int:
    """The job's body: the same case process as a local sweep (its output goes to the log)."""
    return subprocess.call([sys.executable, "-m", "tokenwatt.sweep.case", path])


def use_squeue_fallback() -> None:
    """Make submitit read states from squeue when sacct is disabled (see module doc)."""
    from submitit.slurm import slurm as sslurm

    class SqueueFallbackWatcher(sslurm.SlurmInfoWatcher):
        def update(self) -> None:
            command = self._make_command()
            if command is None:
                return
            try:
                p = subprocess.run(command, capture_output=True, text=True, timeout=30)
                text = p.stdout if p.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired):
                text = None
            if text is None:
                ids = ",".join(command[i + 1] for i, a in enumerate(command) if a == "-j")
                sq = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i|%T|%N", "-j", ids],
                                    capture_output=True, text=True, timeout=30)  # fmt: skip
                text = "JobID|State|NodeList\n" + sq.stdout
            self._num_calls += 1
            self._info_dict.update(self.read_info(text))
            self._last_status_check = time.time()
            for job_id in self._registered - self._finished:
                if self.is_done(job_id, mode="cache"):
                    self._finished.add(job_id)

    if type(sslurm.SlurmJob.watcher).__name__ != "SqueueFallbackWatcher":  # once a process
        sslurm.SlurmJob.watcher = SqueueFallbackWatcher(delay_s=POLL_S)


class SlurmExecutor(Executor):
    """Submits the cases as job arrays and waits for them, reading progress from the folder.

    `confirm_cancel` is asked on Ctrl-C (True: scancel the submitted jobs; False: leave them
    running, and a later rerun skips what they finish)."""

    def __init__(self, opts: SlurmOptions,
                 confirm_cancel: Callable[[], bool] = lambda: True) -> None:  # fmt: skip
        require("slurm", "sweeps on Slurm")
        self.opts = opts
        self.confirm_cancel = confirm_cancel

    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        self.run_all([case], out, on_event)

    def run_all(self, cases: list[Case], out: Path, on_event: OnEvent | None = None) -> None:
        import submitit

        use_squeue_fallback()
        jobs: list[tuple[Case, Any]] = []
        for gpus, group in arrays(cases).items():
            ex = submitit.AutoExecutor(folder=out / LOGS / "slurm" / "%j", cluster="slurm")
            ex.update_parameters(**sbatch_parameters(self.opts, gpus, len(group)))
            paths = [str(case_file(c, out, _local_device(c))) for c in group]
            jobs += zip(group, ex.map_array(run_case_file, paths))
        try:
            self._wait(jobs, out, on_event)
        except KeyboardInterrupt:
            if self.confirm_cancel():
                for _, job in jobs:
                    job.cancel(check=False)
            raise

    def _wait(self, jobs: list[tuple[Case, Any]], out: Path, on_event: OnEvent | None) -> None:
        left = list(jobs)
        while left:
            time.sleep(POLL_S)
            for case, job in list(left):
                state = str(job.watcher.get_state(job.job_id, mode="force"))
                if not state.startswith(FINAL):
                    continue
                left.remove((case, job))
                status = case_states(out).get(case.case_id)
                if status not in ("complete", "failed"):  # killed from outside: wrote nothing
                    record_failure(out, _spec(case), f"Slurm job {job.job_id} ended {state} "
                                   f"without a result; log {job.paths.stdout}")  # fmt: skip
                    status = "failed"
                if on_event:
                    on_event(case, {"event": "done" if status == "complete" else "failed"})


def _spec(case: Case) -> dict[str, Any]:
    return {"case_id": case.case_id, "config": case.config, "tags": case.tags,
            "local_device": _local_device(case)}  # fmt: skip


def _local_device(case: Case) -> str:
    """Inside a job Slurm's CUDA_VISIBLE_DEVICES holds only the case's boards: plain cuda."""
    return "cpu" if case.config.get("device") == "cpu" else "cuda"


def describe_arrays(cases: list[Case], opts: SlurmOptions) -> list[str]:
    """What --dry-run --executor slurm prints: one line per array."""
    lines = []
    for gpus, group in arrays(cases).items():
        p = sbatch_parameters(opts, gpus, len(group))
        flags = [f"--array=0-{len(group) - 1}%{p['slurm_array_parallelism']}",
                 f"--gpus-per-node={gpus}" if gpus else "(no GPU)", f"--time={opts.time_min}",
                 f"--cpus-per-task={opts.cpus_per_task}"]  # fmt: skip
        if opts.partition:
            flags.append(f"--partition={opts.partition}")
        extra = p["slurm_additional_parameters"].items()
        flags += [f"--{k.replace('_', '-')}={v}" for k, v in extra]
        lines.append(f"array {gpus} GPU(s)/task, {len(group)} cases: {' '.join(flags)}: "
                     + ", ".join(c.case_id for c in group))  # fmt: skip
    return lines
