"""One case of a sweep, run in its own process: `python -m tokenwatt.sweep.case CASE.json`.

CASE.json holds {"case_id", "config" (a resolved RunConfig dict), "out", "tags",
"local_device"}. The case measures into a staging folder OUT/.staging/<case_id>-<pid>/ and,
only when every trial is done, appends its trial rows, its summary row (last: the mark of a
complete case) and its run.json record to OUT in one locked step with SIGINT held off. An
interrupted case therefore leaves nothing in OUT's CSVs: a rerun measures it again without
duplicating or losing rows. A case that fails writes one status=failed row with its one-line
error and exits FAILED_EXIT; the sweep goes on.

The case knows nothing of how it was started (local process, Slurm job): it needs only the
file, a Python with tokenwatt, and OUT on a filesystem it can lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import new_run_id, utc_now
from tokenwatt.results.columns import RESULTS_CSV, RUN_JSON, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.store import append_rows, locked, read_rows, update_json
from tokenwatt.runner.faults import one_line

FAILED_EXIT = 3
INTERRUPTED_EXIT = 130
EVENT_PREFIX = "@@tokenwatt "  # stdout lines the executor parses for progress
STAGING = ".staging"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tokenwatt.sweep.case CASE.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    signal.signal(signal.SIGTERM, _terminate)  # a scheduler's time limit: stop like Ctrl-C
    try:
        return run_case(spec)
    except KeyboardInterrupt:
        shutil.rmtree(stage_dir(spec), ignore_errors=True)
        print("interrupted: this case left no rows; rerun the sweep to measure it", file=sys.stderr)
        return INTERRUPTED_EXIT


def stage_dir(spec: dict[str, Any]) -> Path:
    """Where this process measures before merging: OUT/.staging/<case_id>-<pid>."""
    return Path(spec["out"]) / STAGING / f"{spec['case_id']}-{os.getpid()}"


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def run_case(spec: dict[str, Any]) -> int:
    """Measure one case and merge its rows into OUT; 0 when done, FAILED_EXIT when it failed."""
    from tokenwatt.config import validate
    from tokenwatt.runner.quiet import quiet_libraries

    quiet_libraries(whole_process=True)
    out = Path(spec["out"])
    stage = stage_dir(spec)
    local = dict(
        spec["config"], out=str(stage), device=spec.get("local_device") or spec["config"]["device"]
    )
    try:
        from tokenwatt.runner.run import run_config

        cfg = validate(local, f"case {spec['case_id']}")
        emit({"event": "start", "case_id": spec["case_id"]})
        outcome = run_config(cfg, on_trial=_on_trial, on_phase=_on_phase)
    except Exception as e:  # OOM, unsupported precision, a model that does not load, ...
        staged = read_rows(stage / SUMMARY_CSV)[0]
        if staged:  # stopped after its summary (e.g. a meter degraded): keep what it measured
            merge_stage(stage, out, spec, staged[-1]["run_id"])
        else:
            record_failure(out, spec, one_line(e))
        shutil.rmtree(stage, ignore_errors=True)
        emit({"event": "failed", "error": one_line(e)})
        return 0 if staged else FAILED_EXIT
    merge_stage(stage, out, spec, outcome.run_id)
    shutil.rmtree(stage, ignore_errors=True)
    emit({"event": "done", "run_id": outcome.run_id})
    return 0


def emit(event: dict[str, Any]) -> None:
    print(EVENT_PREFIX + json.dumps(event), flush=True)


def _on_trial(done: int, total: int) -> None:
    emit({"event": "trial", "done": done, "total": total})


def _on_phase(phase: str, text: str) -> None:
    emit({"event": "phase", "phase": phase, "text": text})


def failed_row(spec: dict[str, Any], error: str) -> dict[str, Any]:
    cfg, w = spec["config"], spec["config"]["workload"]
    return {
        "run_id": new_run_id(),
        "case_id": spec["case_id"],
        "timestamp_utc": utc_now(),
        "name": cfg["name"],
        "model": cfg["model"],
        "precision": cfg["precision"],
        "compile": cfg["compile"],
        "device": cfg["device"],
        "batch_size": w["batch_size"],
        "prompt_tokens": w["prompt_tokens"],
        "new_tokens": w["new_tokens"],
        "status": "failed",
        "error": error,
    }


def record_failure(out: Path, spec: dict[str, Any], error: str) -> None:
    """One status=failed row in results.csv and the config in run.json's `failures`."""
    row = failed_row(spec, error)
    with _no_sigint(), locked(out):
        append_rows(out / RESULTS_CSV, [row], TRIAL_COLUMNS)
        record = {
            "run_id": row["run_id"],
            "case_id": spec["case_id"],
            "error": error,
            "config": spec["config"],
            "tags": spec.get("tags", {}),
        }
        update_json(out / RUN_JSON, "failures", record)


def merge_stage(stage: Path, out: Path, spec: dict[str, Any], run_id: str) -> None:
    """Append the staged rows to OUT: run.json, trials, then the summary row (the mark)."""
    trials, _ = read_rows(stage / RESULTS_CSV)
    summary, summary_header = read_rows(stage / SUMMARY_CSV)
    runs = json.loads((stage / RUN_JSON).read_text(encoding="utf-8"))["runs"]
    remap = _remap(spec)
    for row in trials + summary:
        row.update(remap)
    for run in runs:
        run.update(case_id=spec["case_id"], config=spec["config"], tags=spec.get("tags", {}))
        run["summary"].update(remap)
    with _no_sigint(), locked(out):
        if run_id in {r.get("run_id") for r in read_rows(out / SUMMARY_CSV)[0]}:
            return  # already merged
        for run in runs:
            update_json(out / RUN_JSON, "runs", run)
        append_rows(out / RESULTS_CSV, trials, TRIAL_COLUMNS)
        append_rows(out / SUMMARY_CSV, summary, summary_header)


def _remap(spec: dict[str, Any]) -> dict[str, Any]:
    """The planned case id always; the planned device when the process saw it renumbered."""
    fix: dict[str, Any] = {"case_id": spec["case_id"]}
    if spec.get("local_device") and spec["local_device"] != spec["config"]["device"]:
        fix["device"] = spec["config"]["device"]
    return fix


@contextmanager
def _no_sigint():
    """Hold Ctrl-C off while rows are merged, so a merge is never half done."""
    try:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: nothing to hold off
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if __name__ == "__main__":
    sys.exit(main())
