"""Running a planned sweep: record the plan, run the pending cases through an executor, and
read back from the results folder what happened (the folder, not the executor, is the truth).

One sweep at a time per folder: a sweep holds OUT/.sweep.lock while it runs (the kernel drops
it when the process dies), and a second one is refused with a line naming the first. Energy
measurements must not share a machine, so two sweeps never split the work between them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import utc_now
from tokenwatt._util.reasons import by_reason
from tokenwatt.config import RunConfig
from tokenwatt.errors import FolderBusy
from tokenwatt.results.columns import RESULTS_CSV
from tokenwatt.results.folder import (
    CASES,
    LOGS,
    STAGING,
    SWEEP_JSON,
    SWEEP_LOCK,
    SWEEP_YAML,
    case_states,
    check_out_dir,
    prepare_out_dir,
)
from tokenwatt.results.store import holder, locked, read_rows, try_claim, update_json, write_atomic
from tokenwatt.runner.faults import DEGRADED
from tokenwatt.sweep.plan import Case, batches, runs_done, schedule_of


@dataclass
class SweepOutcome:
    out: Path
    planned: list[Case]
    skipped: list[str]  # case ids already complete (or failed, unless retried)
    ran: list[str]
    failed: dict[str, str]  # case id -> its latest one-line error: short of its runs, or failed now
    status: dict[str, str] = field(default_factory=dict)  # case id -> complete | failed
    degraded: Counter[str] = field(default_factory=Counter)  # reason -> trials, of runs made now
    degraded_cases: set[str] = field(default_factory=set)

    @property
    def done(self) -> bool:
        """Everything asked for is done: no case failed or short, no trial degraded now."""
        return not self.failed and not self.degraded


OnEvent = Callable[[Case, dict[str, Any]], None]


def run_sweep(
    data: dict[str, Any],
    cases: list[Case],
    executor: Any = None,
    force: bool = False,
    retry_failed: bool = False,
    on_event: OnEvent | None = None,
    config_text: str | None = None,
) -> SweepOutcome:
    """Run the pending cases of a planned sweep through `executor` (a fresh process per case)."""
    from tokenwatt.sweep.executors import LocalProcessExecutor

    executor = executor or LocalProcessExecutor()
    out = check_out_dir(data.get("out") or RunConfig().out)
    sched = schedule_of(data)
    if todo := unfinished(cases, out, sched.rounds, force, retry_failed):
        executor.preflight(todo, out)  # what the executor would refuse, before OUT is made
    out = prepare_out_dir(out)
    claim = try_claim(out / SWEEP_LOCK, "sweep")
    if claim is None:
        raise FolderBusy(f"out: another sweep is running in {str(out)!r}: "
                         f"{holder(out / SWEEP_LOCK)}; wait for it to end or give another "
                         "--out")  # fmt: skip
    ran: list[str] = []
    try:
        before = {r.get("run_id") for r in read_rows(out / RESULTS_CSV)[0]}
        _record_plan(out, data, cases, config_text)
        clear_stale(out)
        try:  # rounds: one batch per round (or per run); without: the pending cases at once
            for batch in batches(cases, sched, lambda: runs_done(out), force, retry_failed):
                ran += [c.case_id for c in batch if c.case_id not in ran]
                executor.run_all(batch, out, on_event)
        finally:
            clear_stale(out)  # an interrupted case process leaves its staging folder
            _remove_empty(out)
    finally:
        claim.release()
    return read_back(out, cases, ran, sched.rounds, before)


def unfinished(cases: list[Case], out: Path, rounds: int, force: bool,
               retry_failed: bool) -> list[Case]:  # fmt: skip
    """The cases a sweep may still run (a rerun of a finished sweep submits nothing, so an
    executor has nothing to check)."""
    if force:
        return list(cases)
    done, failed = runs_done(out)
    return [c for c in cases if done[c.case_id] < rounds
            and (retry_failed or not failed[c.case_id] or done[c.case_id])]  # fmt: skip


def read_back(out: Path, cases: list[Case], ran: list[str], rounds: int,
              before: set[str | None]) -> SweepOutcome:  # fmt: skip
    """What the folder says of the planned cases after a sweep; `before`: the run ids that
    results.csv held before it, so runs made now (failed, degraded) are told apart."""
    planned = {c.case_id for c in cases}
    rows = [r for r in read_rows(out / RESULTS_CSV)[0] if r.get("case_id") in planned]
    new = [r for r in rows if r.get("run_id") not in before]
    errors = {r["case_id"]: r.get("error") or "unknown error" for r in rows
              if r.get("status") == "failed"}  # fmt: skip
    failed_now = {r["case_id"] for r in new if r.get("status") == "failed"}
    runs, _ = runs_done(out)
    failed = {c: errors.get(c, "no result (not run)") for c in planned
              if runs[c] < rounds or c in failed_now}  # fmt: skip
    trials = {(r["run_id"], r.get("trial")): r for r in new if r.get("status") == DEGRADED}
    reasons = Counter(r.get("status_reason") or "unknown reason" for r in trials.values())
    return SweepOutcome(
        out=out,
        planned=cases,
        skipped=[c.case_id for c in cases if c.case_id not in ran],
        ran=ran,
        failed={c.case_id: failed[c.case_id] for c in cases if c.case_id in failed},
        status={k: v for k, v in case_states(out).items() if k in planned},
        degraded=reasons,
        degraded_cases={r["case_id"] for r in trials.values()},
    )


def _record_plan(
    out: Path, data: dict[str, Any], cases: list[Case], config_text: str | None
) -> None:
    """sweep.json keeps every invocation's plan (case ids, tags, resolved configs)."""
    record = {
        "started_utc": utc_now(),
        "sweep": data,
        "cases": [{"case_id": c.case_id, "tags": c.tags, "config": c.config_dict()} for c in cases],
    }
    with locked(out):
        update_json(out / SWEEP_JSON, "sweeps", record)
        if config_text is not None:
            write_atomic(out / SWEEP_YAML, config_text)


def _remove_empty(out: Path) -> None:
    for name in (STAGING, CASES):
        try:
            (out / name).rmdir()
        except OSError:
            pass  # not there, or not empty (an orphaned case still running)


def clear_stale(out: Path) -> None:
    """Remove what case processes that are gone left behind: staging folders, CASE.json
    files and their claims (a case still running, an orphan of a killed sweep, holds its
    claim and keeps its files)."""
    import shutil

    from tokenwatt.sweep.case import case_lock

    for d in (out / STAGING).glob("*-*"):
        pid = d.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(d, ignore_errors=True)
    for case_id in {p.stem for p in (out / CASES).glob("*.json")} | {
        p.stem for p in (out / CASES).glob("*.lock")
    }:
        claim = try_claim(case_lock(out, case_id), "cleaning up")
        if claim is not None:  # nobody measures this case: its files are stale
            (out / CASES / f"{case_id}.json").unlink(missing_ok=True)
            claim.release()  # and its lock file goes with the claim


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def failure_summary(outcome: SweepOutcome, most: int = 3) -> str | None:
    """One line saying what is not done and why, grouped by reason (the `most` commonest),
    and where the logs are; None when everything asked for is done."""
    n = len(outcome.planned)
    parts = []
    if outcome.failed:
        parts.append(f"{len(outcome.failed)} of {n} cases failed: "
                     + by_reason(outcome.failed.values(), most, sep=", "))  # fmt: skip
    if outcome.degraded:
        trials = sum(outcome.degraded.values())
        parts.append(
            f"{len(outcome.degraded_cases)} of {n} cases had {trials} degraded "
            f"trial(s): {by_reason(outcome.degraded.elements(), most, sep=', ')}"
        )
    if not parts:
        return None
    parts.append(f"logs: {outcome.out / LOGS}")
    if outcome.failed:
        parts.append("--retry-failed reruns the failed cases")
    return "; ".join(parts)
