"""Faults during a run, handled so that nothing finished is lost and no file is half-written.

- A meter read that fails inside a trial (NVML: GPU lost, not supported, unknown error; an
  unreadable RAPL file) marks that trial `status=degraded` with the reason; the run goes on,
  and stops cleanly after MAX_CONSECUTIVE_DEGRADED failed trials in a row.
- Out of memory ends the case: the frames holding the model are dropped, memory is released,
  and a one-line CaseOutOfMemory says what to lower. A sweep records it as a failed case and
  runs the next one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenwatt._util.ids import utc_now
from tokenwatt.config import RunConfig
from tokenwatt.errors import EngineFault, MeterError
from tokenwatt.results.folder import STOPPED

MAX_CONSECUTIVE_DEGRADED = 3
DEGRADED = "degraded"


def one_line(e: BaseException) -> str:
    """`Type: first line of the message`, short enough for a CSV cell and a summary."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def is_oom(e: BaseException) -> bool:
    """CUDA/accelerator out-of-memory, a host allocation failure, or their RuntimeError form."""
    if isinstance(e, MemoryError):
        return True
    import torch

    oom_types = tuple(
        t
        for t in (getattr(torch, "OutOfMemoryError", None), torch.cuda.OutOfMemoryError)
        if isinstance(t, type)
    )
    if oom_types and isinstance(e, oom_types):
        return True
    msg = str(e).lower()
    return isinstance(e, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg
    )


def release_memory(device: str) -> None:
    """Free what the failed case held: Python garbage first, then the CUDA cache."""
    import gc

    import torch

    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def oom_message(cfg: RunConfig, device: str, error: str, out: str) -> str:
    w = cfg.workload
    return (
        f"out of memory on {device} at batch_size={w.batch_size}, prompt_tokens="
        f"{w.prompt_tokens}, new_tokens={w.new_tokens}, precision={cfg.precision} ({error}); "
        f"finished trials are kept in {out!r}; lower --batch-size or --prompt-tokens, or use "
        "a smaller --precision"
    )


@dataclass(frozen=True)
class Fault:
    """Why a trial was degraded, and whose the fault was: the stop line is worded by it."""

    reason: str
    source: str  # "meter" or "engine"


def guarded_trial(
    run: Callable[[Any, int], tuple[list[dict[str, Any]], dict[str, Any]]],
    session: Any,
    index: int,
) -> tuple[list[dict[str, Any]], dict[str, Any], Fault | None]:
    """Run one trial; a meter or engine failure gives a degraded row and its fault instead of
    a crash (finished trials are kept)."""
    try:
        rows, detail = run(session, index)
        return rows, detail, None
    except (MeterError, EngineFault) as e:
        reason = one_line(e)
        row = {
            **session.constants,
            "timestamp_utc": utc_now(),
            "trial": index,
            "status": DEGRADED,
            "status_reason": reason,
        }
        fault = Fault(reason, "meter" if isinstance(e, MeterError) else "engine")
        return [row], {"trial": index, "status": DEGRADED, "status_reason": reason}, fault


def note_degraded(
    summary: dict[str, Any], warnings: list[str], trials: list[dict[str, Any]], stopped: bool
) -> None:
    """Count degraded trials into the summary row and its warnings; a run `stopped` on them
    is flagged so: its rows are kept, but a sweep does not count the case complete."""
    bad = [t for t in trials if t.get("status") == DEGRADED]
    summary["n_degraded"] = len(bad)
    if not bad:
        return
    warnings.append(
        f"degraded: {len(bad)} trial(s) lost their energy reading or their engine "
        f"({bad[-1]['status_reason']}); the summary uses the {summary['n_trials']} good ones"
    )
    flags = (summary.get("summary_flags"), "degraded", STOPPED if stopped else "")
    summary["summary_flags"] = ";".join(f for f in flags if f)


def stopped_message(fault: Fault | None, streak: int, finished: int, out: Any,
                    cfg: RunConfig, engine: Any) -> str:  # fmt: skip
    """The one line of a run stopped after `streak` degraded trials in a row, worded by whose
    fault it was; `finished` counts trials (a served trial writes a row per window)."""
    reason = fault.reason if fault else "no trial finished"
    kept = (f"{finished} finished trial(s) are saved in {str(out)!r}" if finished
            else "no trial finished, nothing was measured")  # fmt: skip
    if fault and fault.source == "engine" and not engine.in_process:
        log = " (its log is saved beside the results)" if cfg.server.launch else ""
        what = f"the server at {cfg.server.url} failed {streak} trial(s) in a row"
        fix = f"check that the server is running and answering{log}"
    elif fault and fault.source == "engine":
        what = f"engine {engine.name} failed {streak} trial(s) in a row"
        fix = "check the engine's error"
    else:
        what = f"{streak} trial(s) in a row lost their energy reading"
        other = "" if cfg.measure.meter == "estimate" else " (or use --meter estimate)"
        fix = f"check the meter{other}"
    return f"stopped: {what} ({reason}); {kept}; {fix}, and rerun the same command to measure more"
