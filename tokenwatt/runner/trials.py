"""One trial: repeat prefill + decode until it lasts `measure.min_seconds`, read the meters at
every phase mark, and make the trial's row."""

from __future__ import annotations

import random
import time
from typing import Any

from tokenwatt._util.ids import utc_now
from tokenwatt.config import RunConfig
from tokenwatt.energy.recorder import PhaseEnergy, PhaseRecorder, dynamic_joules
from tokenwatt.engines.base import Batch, Engine, Mark, no_mark
from tokenwatt.errors import EngineFault, UserError
from tokenwatt.runner.boards import board_columns, board_detail
from tokenwatt.runner.contention import ContentionMonitor, Readings, gpu_pids_of
from tokenwatt.runner.faults import is_oom, one_line
from tokenwatt.runner.rows import cooldown_s, enrich
from tokenwatt.runner.session import Session


def pause_between_trials(cfg: RunConfig, i: int, device: str = "cpu") -> None:
    pause = cooldown_s(cfg, device)
    if i > 0 and pause:
        time.sleep(pause)
    if cfg.measure.random_delay_s:
        time.sleep(random.uniform(0, cfg.measure.random_delay_s))


def contention_monitor(session: Session) -> ContentionMonitor:
    """The trial's contention record, with the server's processes (a served model) apart."""
    server = session.server
    forest = server.forest if server else None
    readings = Readings(gpu_other_pids=gpu_pids_of(session.meters), server=forest)
    return ContentionMonitor(readings, server_inside=bool(server and server.inside_this_tree))


def run_trial(session: Session, index: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Repeat the generation until the trial lasts at least min_seconds; its rows (one, or one
    per window for a served engine) and its run.json detail."""
    cfg, engine = session.cfg, session.engine
    rec = PhaseRecorder(
        session.meters,
        interval_s=cfg.measure.sample_interval_ms / 1000,
        idle_power_w=session.idle_power_w,
        clock=engine.clock,
        changes_at_marks=engine.windows == "phases",  # serving windows' edges are not changes
    )
    batches: list[Batch] = []
    start = time.perf_counter()
    edge_start = [m.edge_state() for m in session.meters]
    contention = contention_monitor(session).start()
    try:
        engine.trial_started()
        if not engine.live_marks:
            rec.start()
        while True:
            batches.append(generate_batch(engine, rec.mark if engine.live_marks else no_mark))
            if time.perf_counter() - start >= cfg.measure.min_seconds:
                break
        for batch in batches:
            for phase, t in batch.marks:
                rec.mark_at(phase, t)
        phases = rec.phases()
    except BaseException:  # a failed trial never reaches phases(), which stops the sampler
        if rec.sampler is not None:
            rec.sampler.stop()
        contention.stop()
        raise
    load = contention.stop()
    quality = rec.quality()
    if engine.windows == "serving":
        from tokenwatt.runner.serving import serving_rows

        rows = serving_rows(session, index, batches, phases)
    else:
        rows = [trial_row(session, index, batches, phases)]
    extra = {**load, "counter_vs_trace_gap_pct": quality.get("counter_vs_trace_gap_pct"),
             "quality_flags": quality.get("flags", ""),
             "update_period_s": quality.get("update_period_s"),
             **quality_columns(quality), **engine.trial_columns(batches)}  # fmt: skip
    for row in rows:
        row.update(extra)
    detail = {
        "trial": index,
        "repetitions": len(batches),
        "quality": quality,
        "marks": [{"phase": m.phase, "t_s": m.t} for m in rec.marks],
        "trace": rec.trace(),
        "phases": {k: {"seconds": v.seconds, "joules": v.joules} for k, v in phases.items()},
        **board_detail(session.meters, phases),
        "edge_start": edge_start,
        "edge_end": [m.edge_state() for m in session.meters],
    }
    if engine.windows == "serving":
        from tokenwatt.runner.serving import request_detail

        detail["requests"] = request_detail(batches)
    return rows, detail


def generate_batch(engine: Engine, mark: Mark) -> Batch:
    """One batch; an engine outside this process that fails (a server answering errors, a
    dead engine core) is an EngineFault, which marks the trial degraded."""
    try:
        return engine.generate(mark)
    except (UserError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as e:
        if engine.errors_are_own or is_oom(e):
            raise
        raise EngineFault(f"engine {engine.name}: {one_line(e)}") from e


def quality_columns(quality: dict[str, Any]) -> dict[str, Any]:
    """The counter's coverage and the phases' uncertainty, from the recorder's quality."""
    seen, expected = quality.get("updates_seen"), quality.get("updates_expected")
    err = quality.get("phase_j_err") or {}
    return {
        "updates_seen": seen,
        "updates_expected": expected,
        "missed_updates": None if seen is None or expected is None else seen < expected,
        "prefill_j_err": err.get("prefill"),
        "decode_j_err": err.get("decode"),
    }


def trial_row(
    session: Session, index: int, batches: list[Batch], phases: dict[str, PhaseEnergy]
) -> dict[str, Any]:
    pre, dec = phases.get("prefill", PhaseEnergy()), phases.get("decode", PhaseEnergy())
    tokens = sum(b.tokens_generated for b in batches)  # counted from each batch's outputs
    decode_tokens = sum(b.decode_tokens for b in batches)
    requests = sum(b.batch_size for b in batches)
    prompt_tokens = sum(b.batch_size * b.prompt_tokens for b in batches)
    idle_w = session.idle_power_w
    total_j, total_s = pre.total_j + dec.total_j, pre.seconds + dec.seconds
    row = {
        **session.constants,
        "timestamp_utc": utc_now(),
        "trial": index,
        "status": "ok",
        "window": "whole-run",
        "tokens_generated": tokens,
        "decode_tokens": decode_tokens,
        "repetitions": len(batches),
        "prefill_s": pre.seconds,
        "decode_s": dec.seconds,
        "prefill_j": pre.total_j,
        "decode_j": dec.total_j,
        "total_j": total_j,
        "prefill_j_per_token": _div(pre.total_j, prompt_tokens),
        "prefill_j_per_request": _div(pre.total_j, requests),
        "decode_j_per_token": _div(dec.total_j, decode_tokens),
        "total_j_per_token": _div(total_j, tokens),
        "decode_tokens_per_s": _div(decode_tokens, dec.seconds),
        "avg_power_w": _div(total_j, total_s),
        "idle_power_w": idle_w,
        "dynamic_decode_j_per_token": _div(
            dynamic_joules(dec.total_j, idle_w, dec.seconds), decode_tokens
        ),  # fmt: skip
        "peak_memory_mb": peak_memory_mb(session),
        "cooldown_s": cooldown_s(session.cfg, session.device) if index > 0 else 0.0,
        **board_columns(session.meters, phases, tokens, decode_tokens, session.idle_by_channel),
    }
    return enrich(row, session)


def reset_peak_memory(device: str) -> None:
    """Start the peak at the trials, so the fidelity reference model loaded before is not in it."""
    import torch

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats(torch.device(device))
        return
    try:  # Linux >= 4.0: writing 5 resets the process's peak resident set (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory_mb(session: Session) -> float:
    """The in-process model's peak memory; NaN for an engine whose model lives elsewhere
    (vLLM's engine core, a server), where this process's memory says nothing about it."""
    if session.model is None:
        return float("nan")
    return _peak_memory_mb(session.device)


def _peak_memory_mb(device: str) -> float:
    """Device peak allocated on a GPU; peak resident memory of the process on CPU."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated(torch.device(device)) / 2**20
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _div(a: float, b: float) -> float:
    return a / b if b else float("nan")
