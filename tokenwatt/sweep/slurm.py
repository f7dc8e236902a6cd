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
from tokenwatt.placement import Hold, Offer, hold_for
from tokenwatt.results.folder import LOGS, case_states
from tokenwatt.sweep.case import record_failure
from tokenwatt.sweep.executors import Executor, OnEvent, case_file, case_spec, model_here
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
    gpus_per_case: int | None = None  # GPUs a device-auto case asks for (None: the partition's)


def partition_offer(opts: SlurmOptions) -> Offer:
    """What the partition offers a case that does not name its boards: --gpus-per-case when
    given, else whether its nodes have GPUs (their GRES, as sinfo lists them)."""
    if opts.gpus_per_case is not None:
        return Offer(opts.gpus_per_case, f"--gpus-per-case {opts.gpus_per_case}")
    cmd = ["sinfo", "-h", "-o", "%P|%G"] + (["-p", opts.partition] if opts.partition else [])
    lines = subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.split()
    rows = [line.split("|", 1) for line in lines if "|" in line]
    if not opts.partition:  # the default partition: sinfo marks it with a '*'
        rows = [r for r in rows if r[0].endswith("*")]
    name = rows[0][0].rstrip("*") if rows else (opts.partition or "default")
    gres = sorted({r[1] for r in rows})
    gpus = max((gpu_count(g) for g in gres), default=0)
    return Offer(gpus, f"partition {name} offers {','.join(gres) or 'nothing'} (sinfo)")


def gpu_count(gres: str) -> int:
    """GPUs per node in a GRES string: gpu:2, gpu:a100:4(S:0-1), gpu:2,mps:100 -> 2, 4, 2."""
    total = 0
    for item in gres.split(","):
        parts = item.split("(")[0].split(":")
        if parts[0] == "gpu" and parts[-1].isdigit():
            total += int(parts[-1])
    return total


def hold_of(case: Case, offer: Offer) -> Hold:
    """The boards a case's job holds (Slurm renumbers them: cuda:N runs as cuda)."""
    return hold_for(case.config, offer, model_here=model_here(case))


def arrays(cases: list[Case], offer: Offer) -> dict[int, list[Case]]:
    """{GPUs per task: its cases}: one array per GPU count (an array asks one size for all)."""
    out: dict[int, list[Case]] = {}
    for c in cases:
        out.setdefault(hold_of(c, offer).boards, []).append(c)
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
        offer = partition_offer(self.opts)
        jobs: list[tuple[Case, Any]] = []
        for gpus, group in arrays(cases, offer).items():
            ex = submitit.AutoExecutor(folder=out / LOGS / "slurm" / "%j", cluster="slurm")
            ex.update_parameters(**sbatch_parameters(self.opts, gpus, len(group)))
            holds = [hold_of(c, offer) for c in group]
            # a job holding no GPU sees none, whatever the node has
            paths = [str(case_file(c, out, h, "" if h.boards == 0 else None))
                     for c, h in zip(group, holds)]  # fmt: skip
            jobs += zip(group, ex.map_array(run_case_file, paths))
        self._offer = offer
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
                    spec = case_spec(case, hold_of(case, self._offer))
                    record_failure(out, spec, f"Slurm job {job.job_id} ended {state} "
                                   f"without a result; log {job.paths.stdout}")  # fmt: skip
                    status = "failed"
                if on_event:
                    on_event(case, {"event": "done" if status == "complete" else "failed"})


def describe_arrays(cases: list[Case], opts: SlurmOptions,
                    offer: Offer | None = None) -> list[str]:  # fmt: skip
    """What --dry-run --executor slurm prints: one line per array, then how each case's
    GPUs were decided."""
    offer = offer or partition_offer(opts)
    lines = []
    for gpus, group in arrays(cases, offer).items():
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
        whys = sorted({hold_of(c, offer).why for c in group})
        lines += [f"  {why}" for why in whys]
    return lines
