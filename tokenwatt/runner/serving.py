"""The rows of a served engine's trial (one per window, whole run and steady state) and its
per-request records (OUT/requests.jsonl).

A served trial is one or more passes of the load shape's streamed requests (engines/openai.py,
engines/load_shape.py). Each pass dates four marks (ramp-up, steady,
ramp-down, end: engines/serving.py); the recorder attributes the boards' energy to them. The
whole-run window is ramp-up + steady + ramp-down, the steady-state window (the ML.ENERGY rule:
from when the batch is full until the ramp-down starts) is the steady phase alone. Tokens are
those the server's streamed usage counted inside each window.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import utc_now
from tokenwatt.energy.recorder import PhaseEnergy, dynamic_joules
from tokenwatt.engines.base import Batch
from tokenwatt.errors import WriteFailed
from tokenwatt.runner.boards import board_meters
from tokenwatt.runner.rows import cooldown_s, enrich
from tokenwatt.runner.session import Session

WHOLE_RUN, STEADY_STATE = "whole-run", "steady-state"
WINDOW_PHASES = {WHOLE_RUN: ("ramp-up", "steady", "ramp-down"), STEADY_STATE: ("steady",)}
REQUESTS_JSONL = "requests.jsonl"
CLOCK = "monotonic"  # engine openai's clock (time.monotonic), the run.json marks' too


def merged(phases: dict[str, PhaseEnergy], names: tuple[str, ...]) -> PhaseEnergy:
    """One window's energy: its phases' seconds and joules summed, errors in quadrature."""
    out = PhaseEnergy()
    for name in names:
        pe = phases.get(name)
        if pe is None:
            continue
        out.seconds += pe.seconds
        for key, j in pe.joules.items():
            out.joules[key] = out.joules.get(key, 0.0) + j
            err = pe.joules_err.get(key, 0.0)
            out.joules_err[key] = math.hypot(out.joules_err.get(key, 0.0), err)
    return out


def window_edges(batch: Batch, window: str) -> tuple[float, float] | None:
    """(t0, t1) of one pass's window from its marks; None where the window is empty."""
    at = dict(batch.marks)
    if window == WHOLE_RUN:
        return (batch.marks[0][1], batch.marks[-1][1]) if batch.marks else None
    if "steady" in at and "ramp-down" in at and at["ramp-down"] > at["steady"]:
        return at["steady"], at["ramp-down"]
    return None


def serving_rows(session: Session, index: int, batches: list[Batch],
                 phases: dict[str, PhaseEnergy]) -> list[dict[str, Any]]:  # fmt: skip
    return [window_row(session, index, batches, phases, w) for w in WINDOW_PHASES]


def window_row(session: Session, index: int, batches: list[Batch],
               phases: dict[str, PhaseEnergy], window: str) -> dict[str, Any]:  # fmt: skip
    from tokenwatt.engines.serving import latency_stats, tokens_between

    pe = merged(phases, WINDOW_PHASES[window])
    spans = [(b, e) for b in batches if (e := window_edges(b, window))]
    tokens = sum(tokens_between(b.requests, t0, t1) for b, (t0, t1) in spans)
    requests = [r for b in batches for r in b.requests]
    latency = latency_stats([(b.requests, t0, t1) for b, (t0, t1) in spans])
    idle_w, j = session.idle_power_w, pe.total_j
    ok = pe.seconds > 0 and tokens > 0
    row = {
        **session.constants,
        "timestamp_utc": utc_now(),
        "trial": index,
        "status": "ok",
        "window": window,
        "tokens_generated": tokens,
        "decode_tokens": tokens,
        "repetitions": len(batches),
        "window_s": pe.seconds,
        "total_j": j if ok else math.nan,
        "total_j_per_token": j / tokens if ok else math.nan,
        "decode_tokens_per_s": tokens / pe.seconds if ok else math.nan,
        "avg_power_w": j / pe.seconds if pe.seconds > 0 else math.nan,
        "idle_power_w": idle_w,
        "dynamic_total_j_per_token": (
            dynamic_joules(j, idle_w, pe.seconds) / tokens if ok else math.nan
        ),  # fmt: skip
        "total_j_err": pe.total_err_j,
        "requests": len(requests),
        "requests_failed": sum(1 for r in requests if not r.ok),
        # an open loop's arrivals that found batch_size in flight and waited for a slot
        "requests_delayed": sum(1 for r in requests if getattr(r, "delayed", False)),
        "peak_memory_mb": math.nan,
        "cooldown_s": cooldown_s(session.cfg, session.device) if index > 0 else 0.0,
        **latency,
        **window_board_columns(session, pe, tokens),
    }
    if not ok:
        row["status"] = "degraded"
        row["status_reason"] = f"{window}: empty window (requests {len(requests)}, batch " \
            f"{session.cfg.workload.batch_size}); raise --requests"  # fmt: skip
    failed = row["requests_failed"]
    if failed:
        row["status"] = "degraded"
        first = next(r.error for r in requests if not r.ok)
        row["status_reason"] = f"{failed} of {len(requests)} requests failed ({first})"
    return enrich(row, session)


def window_board_columns(session: Session, pe: PhaseEnergy, tokens: int) -> dict[str, Any]:
    """Each measured board's joules over the window (a window has no prefill/decode split)."""
    out: dict[str, Any] = {}
    for i, m in enumerate(board_meters(session.meters)):
        key = m.channels[0].key
        j = pe.joules.get(key, math.nan)
        out[f"board{i}_total_j"] = j
        out[f"board{i}_total_j_per_token"] = j / tokens if tokens else math.nan
        out[f"board{i}_idle_power_w"] = session.idle_by_channel.get(key, math.nan)
    return out


def request_detail(batches: list[Batch]) -> list[dict[str, Any]]:
    """run.json's per-request record, on the engine's clock: when each was due (open loop),
    sent, got its first token and ended, its tokens and error, and whether its first token
    fell in its pass's steady-state window (the requests that window's TTFT is over)."""
    out = []
    for i, b in enumerate(batches):
        steady = window_edges(b, STEADY_STATE)
        for k, r in enumerate(b.requests):
            first = r.first_token_t
            out.append({"pass": i, "request": k,
                        "scheduled_t_s": getattr(r, "scheduled_t", None),
                        "sent_t_s": r.sent_t, "first_token_t_s": first, "end_t_s": r.end_t,
                        "output_tokens": r.output_tokens, "prompt_tokens": r.prompt_tokens,
                        "delayed": getattr(r, "delayed", False),
                        "steady_state": bool(steady and first is not None
                                             and steady[0] <= first <= steady[1]),
                        "error": r.error})  # fmt: skip
    return out


def request_lines(row: dict[str, Any], detail: dict[str, Any]) -> list[dict[str, Any]]:
    """requests.jsonl's lines for one trial: run.json's per-request records with the run's
    ids, times in seconds from the trial's start (its first request's arrival, or its send
    in the closed loop), and that start on the clock, so run.json's marks line up."""
    reqs = detail.get("requests") or []
    if not reqs:
        return []
    start = min(r["scheduled_t_s"] if r["scheduled_t_s"] is not None else r["sent_t_s"]
                for r in reqs)  # fmt: skip

    def rel(t: float | None) -> float | None:
        return None if t is None else t - start

    ids = {"run_id": row.get("run_id"), "case_id": row.get("case_id"), "trial": detail["trial"]}
    return [{**ids, "pass": r["pass"], "request": r["request"], "clock": CLOCK,
             "trial_start_clock_s": start, "scheduled_s": rel(r["scheduled_t_s"]),
             "sent_s": rel(r["sent_t_s"]), "first_token_s": rel(r["first_token_t_s"]),
             "end_s": rel(r["end_t_s"]), "prompt_tokens": r["prompt_tokens"],
             "output_tokens": r["output_tokens"], "delayed": r["delayed"],
             "steady_state": r["steady_state"], "error": r["error"] or None}
            for r in reqs]  # fmt: skip


def append_requests(out: Path, row: dict[str, Any], detail: dict[str, Any]) -> None:
    """Append one trial's request lines to OUT/requests.jsonl (the caller holds the folder
    lock, and calls this right after the trial's rows, so a finished trial's records are on
    disk before the next trial starts). One write(2) on O_APPEND, fsynced: a kill lands
    before or after it; a line torn by a power cut is cut before the next append."""
    lines = request_lines(row, detail)
    if not lines:
        return
    path = out / REQUESTS_JSONL
    data = "".join(json.dumps(_finite(line), separators=(",", ":")) + "\n" for line in lines)
    try:
        _cut_torn_tail(path)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(data.encode("utf-8"))
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise WriteFailed(f"cannot write {str(path)!r} ({e.strerror or type(e).__name__}); "
                          "every row written before is kept; free space or fix the folder's "
                          "permissions, then rerun the same command") from None  # fmt: skip


def _cut_torn_tail(path: Path) -> None:
    """Drop a last line without its newline (a write that never finished)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def _finite(line: dict[str, Any]) -> dict[str, Any]:
    return {k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in line.items()}  # fmt: skip
