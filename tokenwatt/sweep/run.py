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
from tokenwatt.config import RunConfig
from tokenwatt.errors import FolderBusy
from tokenwatt.results.folder import (
    CASES,
    STAGING,
    SWEEP_JSON,
    SWEEP_LOCK,
    SWEEP_YAML,
    case_states,
    check_out_dir,
    failures,
    prepare_out_dir,
)
from tokenwatt.results.store import holder, locked, try_claim, update_json, write_atomic
from tokenwatt.sweep.plan import Case, batches, runs_done, schedule_of


@dataclass
class SweepOutcome:
    out: Path
    planned: list[Case]
    skipped: list[str]  # case ids already complete (or failed, unless retried)
    ran: list[str]
    failed: dict[str, str]  # case id -> one-line error, for every case failed now
    status: dict[str, str] = field(default_factory=dict)  # case id -> complete | failed


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
    executor.preflight(cases, out)  # what the executor would refuse, before OUT is made
    out = prepare_out_dir(out)
    claim = try_claim(out / SWEEP_LOCK, "sweep")
    if claim is None:
        raise FolderBusy(f"out: another sweep is running in {str(out)!r}: "
                         f"{holder(out / SWEEP_LOCK)}; wait for it to end or give another "
                         "--out")  # fmt: skip
    sched = schedule_of(data)
    ran: list[str] = []
    try:
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
    states = case_states(out)
    errors = failures(out)
    planned = {c.case_id for c in cases}
    return SweepOutcome(
        out=out,
        planned=cases,
        skipped=[c.case_id for c in cases if c.case_id not in ran],
        ran=ran,
        failed={k: v for k, v in errors.items() if k in planned},
        status={k: v for k, v in states.items() if k in planned},
    )


def _record_plan(
    out: Path, data: dict[str, Any], cases: list[Case], config_text: str | None
) -> None:
    """sweep.json keeps every invocation's plan (case ids, tags, resolved configs)."""
    record = {
        "started_utc": utc_now(),
        "sweep": data,
        "cases": [{"case_id": c.case_id, "tags": c.tags, "config": c.config_dict()}
                  for c in cases],
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


def failure_summary(outcome: SweepOutcome) -> list[str]:
    """Lines saying how many cases failed and why, grouped by error."""
    if not outcome.failed:
        return []
    by_error = Counter(outcome.failed.values())
    lines = [f"{len(outcome.failed)} of {len(outcome.planned)} cases failed:"]
    lines += [f"  {n} x {err}" for err, n in by_error.most_common()]
    return lines
