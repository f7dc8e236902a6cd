"""One case of a sweep, run in its own process: `python -m tokenwatt.sweep.case CASE.json`.

CASE.json holds {"case_id", "config" (a resolved RunConfig dict), "out", "tags",
"local_device", "held_boards", "held_why"} (the hold its executor decided: placement.Hold),
"complete_runs" (the case's summary run ids when it was started), and, when the executor
chose them, "cuda_visible_devices" (set before anything starts CUDA) and "parent_pid". The
case first claims OUT/.cases/<case_id>.lock, so no two live processes ever measure one case
at once (a resumed sweep waits for an orphan of a killed one), and skips itself when
another process completed it meanwhile. It measures into OUT/.staging/<case_id>-<pid>/ and,
only when every trial is done, appends its run.json
record, its trial rows and its summary row (last: the mark of a complete case) to OUT in one
transaction with SIGINT and SIGTERM held off. An interrupted case therefore leaves nothing in
OUT: a rerun measures it again without duplicating or losing rows. A case that fails writes
one status=failed row with its one-line error and exits FAILED_EXIT; the sweep goes on.

When the sweep that started it dies (SIGKILL of the sweep alone), the case stops as an
interruption, not a failure: Linux delivers SIGTERM through PR_SET_PDEATHSIG; elsewhere a
thread watches the parent's pid.

The case knows nothing of how it was started (local process, Slurm job): it needs only the
file, a Python with tokenwatt, and OUT on a filesystem it can lock.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import new_run_id, utc_now
from tokenwatt.errors import ResultsFolderError, WriteFailed
from tokenwatt.results.columns import RESULTS_CSV, RUN_JSON, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.folder import CASES, STAGING, complete_summaries, was_stopped
from tokenwatt.results.store import (
    append_rows,
    holder,
    read_rows,
    transaction,
    try_claim,
    update_json,
)
from tokenwatt.runner.faults import one_line
from tokenwatt.runner.serving import REQUESTS_JSONL

FAILED_EXIT = 3
HELD_EXIT = 4  # another live process holds this case: the sweep stops and names it
OUT_FAULT_EXIT = 5  # OUT cannot be written (disk full, read-only, damaged): the sweep stops
INTERRUPTED_EXIT = 130
EVENT_PREFIX = "@@tokenwatt "  # stdout lines the executor parses for progress
HOLD_WAIT_S = 120.0  # how long to wait for an orphan of a killed sweep to stop
PR_SET_PDEATHSIG = 1
HELD = (signal.SIGINT, signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tokenwatt.sweep.case CASE.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    if "cuda_visible_devices" in spec:  # the boards its executor gave it, before CUDA starts
        os.environ["CUDA_VISIBLE_DEVICES"] = spec["cuda_visible_devices"]
    # A sweep started from a non-interactive shell hands SIGINT down ignored, yet it stops its
    # case with SIGINT: take the default back. SIGTERM (a scheduler's limit) stops the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        watch_parent(spec.get("parent_pid"))
        return claimed_run(spec)
    except KeyboardInterrupt:
        shutil.rmtree(stage_dir(spec), ignore_errors=True)
        print("interrupted: this case left no rows; rerun the sweep to measure it", file=sys.stderr)
        return INTERRUPTED_EXIT
    except (WriteFailed, ResultsFolderError) as e:
        shutil.rmtree(stage_dir(spec), ignore_errors=True)
        print(f"Error: {e}", file=sys.stderr)
        return OUT_FAULT_EXIT


def claimed_run(spec: dict[str, Any]) -> int:
    """Run the case while holding its claim; HELD_EXIT when another process keeps it."""
    out, cid = Path(spec["out"]), spec["case_id"]
    lock = case_lock(out, cid)
    claim = try_claim(lock, f"case {cid}", wait_s=HOLD_WAIT_S)
    if claim is None:
        print(f"Error: case {cid} in {str(out)!r} is being measured by {holder(lock)}; wait "
              "for it to end, then rerun the sweep", file=sys.stderr)  # fmt: skip
        return HELD_EXIT
    try:
        if done_by_another(spec):
            emit({"event": "done", "skipped": "completed by another process"}, stop=False)
            return 0
        return run_case(spec)
    finally:
        claim.release()


def case_lock(out: Path, case_id: str) -> Path:
    return out / CASES / f"{case_id}.lock"


def done_by_another(spec: dict[str, Any]) -> bool:
    """A summary row of this case that was not there when the case was started."""
    if "complete_runs" not in spec:
        return False
    rows = complete_summaries(Path(spec["out"]))
    runs = {r.get("run_id") for r in rows if r.get("case_id") == spec["case_id"]}
    return bool(runs - set(spec["complete_runs"]))


def watch_parent(parent_pid: int | None) -> None:
    """Stop (SIGTERM, an interruption) when the process that started this one dies."""
    if not parent_pid:
        return
    if not _death_signal(signal.SIGTERM):
        threading.Thread(target=_poll_parent, args=(parent_pid,), daemon=True).start()
    if os.getppid() != parent_pid:  # it died before the watch began
        raise KeyboardInterrupt


def _death_signal(sig: int) -> bool:
    """PR_SET_PDEATHSIG: the kernel signals us when our parent dies (Linux only)."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _poll_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def stage_dir(spec: dict[str, Any]) -> Path:
    """Where this process measures before merging: OUT/.staging/<case_id>-<pid>."""
    return Path(spec["out"]) / STAGING / f"{spec['case_id']}-{os.getpid()}"


def _terminate(signum: int, frame: Any) -> None:
    # once: Slurm signals every process of a cancelled job and the job's own process passes
    # the signal on too, and a second one must not break the cleanup the first began
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
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
    except (WriteFailed, ResultsFolderError):
        raise  # the folder's fault, not the case's: the sweep stops
    except Exception as e:  # OOM, unsupported precision, a model that does not load, ...
        with _signals_held():  # from here the outcome is recorded, whatever signal comes
            return _record_outcome(stage, out, spec, e)
    with _signals_held():
        merge_stage(stage, out, spec, outcome.run_id)
        shutil.rmtree(stage, ignore_errors=True)
        emit({"event": "done", "run_id": outcome.run_id}, stop=False)
    return 0


def _record_outcome(stage: Path, out: Path, spec: dict[str, Any], e: Exception) -> int:
    """A case that raised: what it measured is kept; it is complete only when its summary is
    of a run that finished (a run stopped on degraded trials also records the case failed,
    so the sweep says so and --retry-failed measures it again)."""
    staged = read_rows(stage / SUMMARY_CSV)[0]
    if staged:
        merge_stage(stage, out, spec, staged[-1]["run_id"])
    complete = bool(staged) and not was_stopped(staged[-1])
    if not complete:
        record_failure(out, spec, one_line(e))
    shutil.rmtree(stage, ignore_errors=True)
    emit({"event": "failed", "error": one_line(e)}, stop=False)
    return 0 if complete else FAILED_EXIT


def _hold_signals() -> list[Any]:
    """Ignore SIGINT and SIGTERM: what is merged stays merged (a signal that comes meanwhile
    has nothing left to stop). A disposition, not the main thread's signal mask: a process
    signal goes to any thread that does not block it, and torch starts threads."""
    if threading.current_thread() is not threading.main_thread():
        return []  # signals reach only the main thread's handlers: nothing to hold off
    return [signal.signal(s, signal.SIG_IGN) for s in HELD]


def emit(event: dict[str, Any], stop: bool = True) -> None:
    """A progress line for the executor; its pipe closed means the sweep is gone: stop."""
    try:
        print(EVENT_PREFIX + json.dumps(event), flush=True)
    except (BrokenPipeError, ValueError):
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - Python flushes it at exit
        if stop:
            raise KeyboardInterrupt from None


def _on_trial(done: int, total: int) -> None:
    emit({"event": "trial", "done": done, "total": total})


def _on_phase(phase: str, text: str) -> None:
    emit({"event": "phase", "phase": phase, "text": text})


def failed_row(spec: dict[str, Any], error: str) -> dict[str, Any]:
    from tokenwatt.runner.provenance import software

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
        **software(),  # which tokenwatt, on which machine, failed
    }


def record_failure(out: Path, spec: dict[str, Any], error: str) -> None:
    """One status=failed row in results.csv and the config in run.json's `failures`."""
    row = failed_row(spec, error)
    record = {
        "run_id": row["run_id"],
        "case_id": spec["case_id"],
        "error": error,
        "config": spec["config"],
        "tags": spec.get("tags", {}),
    }
    with _signals_held(), transaction(out, RESULTS_CSV, RUN_JSON):
        update_json(out / RUN_JSON, "failures", record)
        append_rows(out / RESULTS_CSV, [row], TRIAL_COLUMNS)


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
    requests = staged_requests(stage, remap)
    with _signals_held(), transaction(out, RUN_JSON, RESULTS_CSV, SUMMARY_CSV, REQUESTS_JSONL):
        if run_id in {r.get("run_id") for r in read_rows(out / SUMMARY_CSV)[0]}:
            return  # already merged
        for run in runs:
            update_json(out / RUN_JSON, "runs", run)
        append_rows(out / RESULTS_CSV, trials, TRIAL_COLUMNS)
        if requests:  # a served case's per-request records (runner/serving.py)
            with open(out / REQUESTS_JSONL, "a", encoding="utf-8") as f:
                f.write(requests)
        append_rows(out / SUMMARY_CSV, summary, summary_header)


def staged_requests(stage: Path, remap: dict[str, Any]) -> str:
    """The staged requests.jsonl's lines, with the planned case id."""
    path = stage / REQUESTS_JSONL
    if not path.is_file():
        return ""
    lines = [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln]
    return "".join(json.dumps({**ln, "case_id": remap["case_id"]}, separators=(",", ":"))
                   + "\n" for ln in lines)  # fmt: skip


def _remap(spec: dict[str, Any]) -> dict[str, Any]:
    """The planned case id always; the planned device when the process saw it renumbered."""
    fix: dict[str, Any] = {"case_id": spec["case_id"]}
    if spec.get("local_device") and spec["local_device"] != spec["config"]["device"]:
        fix["device"] = spec["config"]["device"]
    return fix


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM off while rows are merged, so a merge is never half done."""
    previous = _hold_signals()
    try:
        yield
    finally:
        for sig, handler in zip(HELD, previous):
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())
