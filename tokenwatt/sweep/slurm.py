"""Sweeps on Slurm through submitit: one job array per GPU count, each task one case.

How many GPUs a case's job asks for is placement's rule (`placement.hold_for`) applied to
what the partition offers: `gpus:` N asks for N, `cpu` for none, `cuda` for one, and `auto`
for one only when the partition's nodes have GPUs (their GRES, from sinfo) or
`gpus_per_case` says so. The job's own process then resolves `auto` by what its torch sees
and records how in `device_resolved_from`.

Before anything is written or submitted, `preflight` asks the cluster (slurm_cluster.py)
whether it would take the sweep: its commands, its controller, the partition, `sbatch
--test-only` on each array's exact script, a results folder its nodes can see.

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

import contextlib
import io
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt._util.extras import require
from tokenwatt.errors import SlurmRefused
from tokenwatt.placement import Hold, Offer, hold_for
from tokenwatt.results.folder import LOGS, case_states
from tokenwatt.sweep.case import record_failure
from tokenwatt.sweep.executors import Executor, OnEvent, case_file, case_spec, model_here
from tokenwatt.sweep.plan import Case
from tokenwatt.sweep.slurm_cluster import (
    Partition,
    check_script,
    check_shared,
    fix_for,
    last_line,
    need_commands,
    read_partition,
)
from tokenwatt.sweep.slurm_options import SlurmOptions

__all__ = ["SlurmExecutor", "SlurmOptions", "arrays", "describe_arrays", "preflight"]

POLL_S = 2.0
TERMINATED_EXIT = 143  # 128 + SIGTERM, as a shell reports a process SIGTERM ended
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "PREEMPTED", "NODE_FAIL",
         "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")  # fmt: skip


def offer_of(opts: SlurmOptions, part: Partition) -> Offer:
    """What the partition offers a case that does not name its boards: gpus_per_case when set
    (the flag or the sweep's slurm: block), else whether its nodes have GPUs (their GRES)."""
    if opts.gpus_per_case is not None:
        return Offer(opts.gpus_per_case, f"gpus_per_case {opts.gpus_per_case} set for the sweep")
    return Offer(part.gpus, part.source)


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
    """submitit AutoExecutor parameters of one array (a CPU array asks for no GPU)."""
    extra: dict[str, Any] = {}
    for flag in opts.sbatch:
        key, _, value = flag[2:].partition("=")
        extra[key.replace("-", "_")] = value or True
    params: dict[str, Any] = {"timeout_min": opts.time_limit, "nodes": 1, "tasks_per_node": 1,
                              "cpus_per_task": opts.cpus_per_task, "name": f"tokenwatt-{gpus}gpu",
                              "slurm_array_parallelism": min(opts.array_parallelism, tasks),
                              "slurm_additional_parameters": extra}  # fmt: skip
    if gpus:
        params["gpus_per_node"] = gpus
    for key in ("partition", "account", "qos", "constraint", "mem"):
        if getattr(opts, key) is not None:
            params[f"slurm_{key}"] = getattr(opts, key)
    return params


def array_executor(opts: SlurmOptions, out: Path, gpus: int, tasks: int) -> Any:
    """The submitit executor of one array (creates no file until it submits)."""
    import submitit

    ex = submitit.AutoExecutor(folder=out / LOGS / "slurm" / "%j", cluster="slurm")
    ex.update_parameters(**sbatch_parameters(opts, gpus, tasks))
    return ex


def batch_script(opts: SlurmOptions, out: Path, gpus: int, tasks: int) -> str:
    """The sbatch script submitit submits for an array of `tasks` (built by its own function, as
    its map_array does; tests compare the two)."""
    from submitit.slurm.slurm import _make_sbatch_string

    inner = array_executor(opts, out, gpus, tasks)._executor
    return _make_sbatch_string(command=inner._submitit_command_str, folder=inner.folder,
                               map_count=tasks, **inner.parameters)  # fmt: skip


def preflight(cases: list[Case], opts: SlurmOptions, out: Path) -> Offer:
    """Everything Slurm would refuse, found before anything is written or submitted: its
    commands, its controller, the partition, each array's script (sbatch --test-only), a
    results folder the nodes cannot see. Returns what the partition offers."""
    need_commands()
    part = read_partition(opts.partition)
    offer = offer_of(opts, part)
    for gpus, group in arrays(cases, offer).items():
        what = f"the array of {len(group)} case(s) with {gpus or 'no'} GPU(s) each"
        check_script(batch_script(opts, out, gpus, len(group)), what)
    check_shared(out, part)
    return offer


def run_case_file(path: str) -> int:
    """The job's body: the same case process as a local sweep (its output goes to the log)."""
    with forwarded_sigterm() as term:
        return term.run([sys.executable, "-m", "tokenwatt.sweep.case", path])


@dataclass
class ForwardedTerm:
    received: bool = False
    child: subprocess.Popen[bytes] | None = None

    def run(self, cmd: list[str]) -> int:
        """Run `cmd` unless a SIGTERM came first; its exit code."""
        if self.received:  # cancelled before the case began: it never starts
            return TERMINATED_EXIT
        self.child = subprocess.Popen(cmd)
        if self.received:  # came while the process was being started
            self.child.send_signal(signal.SIGTERM)
        return self.child.wait()


@contextlib.contextmanager
def forwarded_sigterm() -> Iterator[ForwardedTerm]:
    """SIGTERM remembered and passed to the case process. Slurm stops a cancelled or timed-out
    job with SIGTERM, then SIGKILL after KillWait (30 s by default), but submitit's own process
    ignores SIGTERM (it requeues on USR2): one that comes before the case process exists would
    be lost, and a short case would run on and count as complete for a job that was cancelled."""
    term = ForwardedTerm()

    def on_term(signum: int, frame: Any) -> None:
        term.received = True
        if term.child is not None and term.child.poll() is None:
            term.child.send_signal(signum)

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield term
    finally:
        signal.signal(signal.SIGTERM, previous)


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
        self.offer: Offer | None = None

    def preflight(self, cases: list[Case], out: Path) -> None:
        self.offer = preflight(cases, self.opts, out)

    def run(self, case: Case, out: Path, on_event: OnEvent | None = None) -> None:
        self.run_all([case], out, on_event)

    def run_all(self, cases: list[Case], out: Path, on_event: OnEvent | None = None) -> None:
        use_squeue_fallback()
        if self.offer is None:
            self.offer = offer_of(self.opts, read_partition(self.opts.partition))
        jobs = self._submit(cases, out, self.offer)
        try:
            self._wait(jobs, out, on_event)
        except KeyboardInterrupt:
            if self.confirm_cancel():
                cancel([job for _, job in jobs])
            raise

    def _submit(self, cases: list[Case], out: Path, offer: Offer) -> list[tuple[Case, Any]]:
        """One array per GPU count; an sbatch that fails after the preflight cancels what this
        call submitted and is one line (submitit would print sbatch's stderr and a traceback)."""
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        jobs: list[tuple[Case, Any]] = []
        try:
            for gpus, group in arrays(cases, offer).items():
                ex = array_executor(self.opts, out, gpus, len(group))
                holds = [hold_of(c, offer) for c in group]
                # a job holding no GPU sees none, whatever the node has
                paths = [str(case_file(c, out, h, "" if h.boards == 0 else None))
                         for c, h in zip(group, holds)]  # fmt: skip
                with contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):  # fmt: skip
                    jobs += zip(group, ex.map_array(run_case_file, paths))
        except (FailedJobError, FailedSubmissionError, OSError) as e:
            ids = cancel([job for _, job in jobs])
            left = f"; job array(s) {', '.join(ids)} submitted before were cancelled" if ids else ""
            raise SlurmRefused(f"sbatch failed: {last_line(str(e))}; {fix_for(str(e))}"
                               f"{left}") from None  # fmt: skip
        return jobs

    def _wait(self, jobs: list[tuple[Case, Any]], out: Path, on_event: OnEvent | None) -> None:
        left = list(jobs)
        assert self.offer is not None
        while left:
            time.sleep(POLL_S)
            for case, job in list(left):
                state = str(job.watcher.get_state(job.job_id, mode="force"))
                if not state.startswith(FINAL):
                    continue
                left.remove((case, job))
                status = case_states(out).get(case.case_id)
                if status not in ("complete", "failed"):  # killed from outside: wrote nothing
                    spec = case_spec(case, hold_of(case, self.offer))
                    record_failure(out, spec, f"Slurm job {job.job_id} ended {state} "
                                   f"without a result; log {job.paths.stdout}")  # fmt: skip
                    status = "failed"
                if on_event:
                    on_event(case, {"event": "done" if status == "complete" else "failed"})


def cancel(jobs: list[Any]) -> list[str]:
    """scancel the arrays these jobs belong to, in one call; their ids."""
    ids = sorted({str(job.job_id).split("_")[0] for job in jobs})
    if ids:
        subprocess.run(["scancel", *ids], capture_output=True, timeout=60, check=False)
    return ids


# sbatch lines of submitit's own (logs, signals) that say nothing about what a case asks for
QUIET = ("--output=", "--error=", "--open-mode=", "--signal=", "--wckey=", "--job-name=")


def describe_arrays(cases: list[Case], opts: SlurmOptions, offer: Offer, out: Path) -> list[str]:
    """What --dry-run --executor slurm prints: per array the flags of the script submitit
    would submit, then how its cases' GPUs were decided (auto: from what the partition
    offers, or gpus_per_case) and which cases."""
    lines = []
    for gpus, group in arrays(cases, offer).items():
        script = batch_script(opts, out, gpus, len(group))
        flags = [ln.removeprefix("#SBATCH ") for ln in script.splitlines()
                 if ln.startswith("#SBATCH ") and not ln[8:].startswith(QUIET)]  # fmt: skip
        lines.append(f"array of {len(group)} case(s), {gpus or 'no'} GPU(s) each: "
                     + " ".join(flags))  # fmt: skip
        whys: dict[str, list[str]] = {}
        for c in group:
            whys.setdefault(hold_of(c, offer).why, []).append(c.case_id)
        lines += [f"  {len(ids)} x {why}: {', '.join(ids)}" for why, ids in whys.items()]
    return lines
