"""One config end to end: load, apply precision, measure idle, warm up, run trials, record.

Each finished trial is on disk before the next one starts, so an interruption loses at
most the trial in flight.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokenwatt.analysis.stats import CV_WARN, describe
from tokenwatt.config import RunConfig, case_id, config_to_dict
from tokenwatt.energy.recorder import PhaseEnergy, PhaseRecorder, dynamic_joules
from tokenwatt.errors import CaseOutOfMemory, MeterError, RunStopped, UserError
from tokenwatt.results.store import (
    RESULTS_CSV,
    RUN_JSON,
    SUMMARY_CSV,
    SUMMARY_METRICS,
    TRIAL_COLUMNS,
    append_rows,
    check_out_dir,
    locked,
    prepare_out_dir,
    update_json,
)
from tokenwatt.runner.faults import (
    MAX_CONSECUTIVE_DEGRADED,
    guarded_trial,
    is_oom,
    note_degraded,
    one_line,
    oom_message,
    release_memory,
    stopped_message,
)

OnTrial = Callable[[int, int], None]  # (trials done, trials total)


@dataclass
class Session:
    """Everything a trial needs, prepared once per run."""

    cfg: RunConfig
    device: str
    model: Any
    prompts: Any
    meters: list[Any]
    generate: Callable[..., Any]
    constants: dict[str, Any]  # columns shared by every row of this run
    model_info: dict[str, Any]
    idle_power_w: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunOutcome:
    run_id: str
    out: Path
    trials: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str]


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(
            f"device: {device!r} asked for but no CUDA GPU is visible; use --device cpu"
        )
    if device.startswith("cuda:"):
        index = int(device.split(":")[1])
        if index >= torch.cuda.device_count():
            raise UserError(
                f"device: {device!r} does not exist; this machine has "
                f"{torch.cuda.device_count()} GPU(s)"
            )
    return device


def run_config(cfg: RunConfig, on_trial: OnTrial | None = None) -> RunOutcome:
    """Measure one config and append its rows to cfg.out.

    Every check that can reject the inputs (out folder, region, device, model, prompts,
    meters) runs before OUT is created, so a bad input leaves the results folder untouched.
    """
    check_out_dir(cfg.out)
    if cfg.carbon.region:
        from tokenwatt.analysis.carbon import resolve_region

        resolve_region(cfg.carbon.region)
    device = resolve_device(cfg.device)
    from tokenwatt.models.precision import check_supported

    check_supported(cfg.precision, device)  # before loading a model it could not run
    try:
        return _prepare_and_measure(cfg, device, on_trial)
    except MeterError as e:  # outside a trial (idle baseline): nothing to mark degraded
        raise RunStopped(f"meter failed: {one_line(e)}; check the meter or use --meter "
                         "estimate; finished trials are kept") from None  # fmt: skip
    except Exception as e:
        if not is_oom(e):
            raise
        error = one_line(e)
    release_memory(device)  # outside the except: the frames that held the model are gone
    raise CaseOutOfMemory(oom_message(cfg, device, error, cfg.out))


def _prepare_and_measure(cfg: RunConfig, device: str, on_trial: OnTrial | None) -> RunOutcome:
    session = prepare_session(cfg, device)
    try:
        return measure_session(session, prepare_out_dir(cfg.out), on_trial)
    finally:
        for m in session.meters:
            m.close()


def prepare_session(cfg: RunConfig, device: str) -> Session:
    import torch

    from tokenwatt.energy.meters.select import open_meters
    from tokenwatt.models.fidelity import measure_fidelity
    from tokenwatt.models.load import load_model
    from tokenwatt.models.moe import param_counts
    from tokenwatt.models.precision import apply_precision, base_dtype
    from tokenwatt.models.workload import make_prompts
    from tokenwatt.runner.environment import device_name, environment

    torch.manual_seed(cfg.workload.seed)
    loaded = load_model(
        cfg.model,
        device,
        base_dtype(cfg.precision, device),
        seed=cfg.workload.seed,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
    )
    model = loaded.model
    prec = apply_precision(model, cfg.precision, device)
    vocab = model.config.get_text_config().vocab_size
    prompts = make_prompts(cfg.workload, vocab, loaded.tokenizer, device)
    fidelity = measure_fidelity(cfg, model, device) if cfg.fidelity.enabled else {}
    meters = open_meters(cfg.measure, device)
    counts = param_counts(model)
    constants = {
        "name": cfg.name,
        "model": cfg.model,
        "precision": cfg.precision,
        "precision_backend": prec.precision_backend,
        "emulated": prec.emulated,
        "compile": cfg.compile,
        "device": device,
        "device_name": device_name(device),
        "batch_size": cfg.workload.batch_size,
        "prompt_tokens": cfg.workload.prompt_tokens,
        "new_tokens": cfg.workload.new_tokens,
        "seed": cfg.workload.seed,
        "weight_bytes": prec.weight_bytes,
        "quantized_param_fraction": prec.quantized_param_fraction,
        **counts,
        **fidelity,
        **_labels(meters),
    }
    model_info = {
        "config": model.config.to_dict(),
        "precision": cfg.precision,
        "emulated": prec.emulated,
        "weight_bytes": prec.weight_bytes,
        "kv_bytes_per_element": _kv_bytes(model),
        **counts,
        **prec.detail,
    }
    meta = {
        "environment": environment(device),
        "meters": [m.describe() for m in meters],
        "model_source": loaded.source,
        "model_info": dict(loaded.info),
        "precision_report": {"backend": prec.precision_backend, **prec.detail},
    }
    return Session(cfg, device, model, prompts, meters, _generate_fn(cfg), constants, model_info,
                   meta=meta)  # fmt: skip


def _generate_fn(cfg: RunConfig) -> Callable[..., Any]:
    if cfg.compile:
        from tokenwatt.models.decode_compiled import generate_compiled

        return generate_compiled
    from tokenwatt.models.decode import generate

    return generate


def _labels(meters: list[Any]) -> dict[str, Any]:
    channels = [c for m in meters for c in m.channels]
    return {
        "energy_source": "+".join(sorted({c.source for c in channels})),
        "energy_scope": "+".join(sorted({c.scope for c in channels})),
        "measured": all(c.measured for c in channels),
    }


def _kv_bytes(model: Any) -> int:
    """Bytes per KV-cache element: the cache is kept in the model's activation dtype."""
    return int(getattr(model.dtype, "itemsize", 2))


def measure_session(session: Session, out: Path, on_trial: OnTrial | None) -> RunOutcome:
    cfg = session.cfg
    run_id = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ-") + uuid.uuid4().hex[:6]
    session.constants["run_id"] = run_id
    session.constants["case_id"] = case_id(cfg)
    for _ in range(cfg.measure.warmup):
        session.generate(session.model, session.prompts, cfg.workload.new_tokens)
    session.idle_power_w = measure_idle_w(session.meters, cfg.measure.idle_seconds)
    _reset_peak_memory(session.device)
    trials: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    from tokenwatt.models.moe import track_routing

    streak, fault = 0, None
    with track_routing(session.model) as routing:
        for i in range(cfg.measure.repeats):
            _pause_between_trials(cfg, i)
            row, detail, fault = guarded_trial(run_trial, session, i)
            with locked(out):
                append_rows(out / RESULTS_CSV, [row], TRIAL_COLUMNS)
            trials.append(row)
            details.append(detail)
            if on_trial:
                on_trial(i + 1, cfg.measure.repeats)
            streak = streak + 1 if fault else 0
            if streak >= MAX_CONSECUTIVE_DEGRADED:
                break
    ok = [t for t in trials if t["status"] == "ok"]
    if not ok:
        raise RunStopped(stopped_message(fault or "no trial", 0, out))
    summary, warnings = summarise(session, ok, routing)
    note_degraded(summary, warnings, trials)
    with locked(out):
        append_rows(out / SUMMARY_CSV, [summary], list(_summary_first(summary)))
        update_json(out / RUN_JSON, "runs", _run_record(session, summary, details, warnings))
    if streak >= MAX_CONSECUTIVE_DEGRADED:
        raise RunStopped(stopped_message(fault or "", len(ok), out))
    return RunOutcome(run_id, out, trials, summary, warnings)


def measure_idle_w(meters: list[Any], seconds: float) -> float:
    """Idle power over `seconds` with nothing running, measured on the same meters."""
    from tokenwatt.energy.recorder import measure_idle_power

    if seconds <= 0:
        return float("nan")
    per_channel = measure_idle_power(meters, seconds)
    return sum(per_channel.values()) if per_channel else float("nan")


def _pause_between_trials(cfg: RunConfig, i: int) -> None:
    if i > 0 and cfg.measure.cooldown_s:
        time.sleep(cfg.measure.cooldown_s)
    if cfg.measure.random_delay_s:
        time.sleep(random.uniform(0, cfg.measure.random_delay_s))


def run_trial(session: Session, index: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Repeat the generation until the trial lasts at least min_seconds; one row."""
    cfg = session.cfg
    rec = PhaseRecorder(
        session.meters,
        interval_s=cfg.measure.sample_interval_ms / 1000,
        idle_power_w=session.idle_power_w,
    )
    reps, start = 0, time.perf_counter()
    edge_start = [m.edge_state() for m in session.meters]
    try:
        while True:
            gen = session.generate(session.model, session.prompts, cfg.workload.new_tokens,
                                   rec.mark)  # fmt: skip
            reps += 1
            if time.perf_counter() - start >= cfg.measure.min_seconds:
                break
        phases = rec.phases()
    except BaseException:  # a failed trial never reaches phases(), which stops the sampler
        if rec.sampler is not None:
            rec.sampler.stop()
        raise
    quality = rec.quality()
    row = trial_row(session, index, reps, gen, phases)
    row["counter_vs_trace_gap_pct"] = quality.get("counter_vs_trace_gap_pct")
    row["quality_flags"] = quality.get("flags", "")
    row["update_period_s"] = quality.get("update_period_s")
    detail = {
        "trial": index,
        "repetitions": reps,
        "quality": quality,
        "marks": [{"phase": m.phase, "t_s": m.t} for m in rec.marks],
        "trace": rec.trace(),
        "phases": {k: {"seconds": v.seconds, "joules": v.joules} for k, v in phases.items()},
        "edge_start": edge_start,
        "edge_end": [m.edge_state() for m in session.meters],
    }
    return row, detail


def trial_row(
    session: Session, index: int, reps: int, gen: Any, phases: dict[str, PhaseEnergy]
) -> dict[str, Any]:
    pre, dec = phases.get("prefill", PhaseEnergy()), phases.get("decode", PhaseEnergy())
    tokens = reps * gen.tokens_generated
    decode_tokens = reps * gen.decode_tokens
    requests = reps * gen.batch_size
    idle_w = session.idle_power_w
    total_j, total_s = pre.total_j + dec.total_j, pre.seconds + dec.seconds
    row = {
        **session.constants,
        "timestamp_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "trial": index,
        "status": "ok",
        "tokens_generated": tokens,
        "decode_tokens": decode_tokens,
        "repetitions": reps,
        "prefill_s": pre.seconds,
        "decode_s": dec.seconds,
        "prefill_j": pre.total_j,
        "decode_j": dec.total_j,
        "total_j": total_j,
        "prefill_j_per_token": _div(pre.total_j, requests * gen.prompt_tokens),
        "prefill_j_per_request": _div(pre.total_j, requests),
        "decode_j_per_token": _div(dec.total_j, decode_tokens),
        "total_j_per_token": _div(total_j, tokens),
        "decode_tokens_per_s": _div(decode_tokens, dec.seconds),
        "avg_power_w": _div(total_j, total_s),
        "idle_power_w": idle_w,
        "dynamic_decode_j_per_token": _div(
            dynamic_joules(dec.total_j, idle_w, dec.seconds), decode_tokens
        ),  # fmt: skip
        "peak_memory_mb": _peak_memory_mb(session.device),
    }
    return _enrich(row, session)


def _enrich(row: dict[str, Any], session: Session) -> dict[str, Any]:
    from tokenwatt.analysis.carbon import carbon_columns
    from tokenwatt.analysis.floor import floor_columns

    row.update(carbon_columns(row, session.cfg.carbon))
    row.update(floor_columns(row, session.model_info))
    return row


def summarise(
    session: Session, trials: list[dict[str, Any]], routing: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    summary: dict[str, Any] = {**session.constants, "n_trials": len(trials)}
    for col in ("prefill_s", "decode_s", "tokens_generated", "decode_tokens", "repetitions"):
        summary[col] = sum(t[col] for t in trials)
    means: dict[str, Any] = dict(trials[-1])
    for metric in SUMMARY_METRICS:
        d = describe([t[metric] for t in trials])
        for k in ("mean", "std", "cv", "ci95_low", "ci95_high"):
            summary[f"{metric}_{k}"] = d[k]
        means[metric] = d["mean"]
    summary["idle_power_w"] = session.idle_power_w
    summary["peak_memory_mb"] = max(t["peak_memory_mb"] for t in trials)
    summary.update({k: v for k, v in routing.items()})
    from tokenwatt.analysis.carbon import CARBON_COLUMNS
    from tokenwatt.analysis.floor import FLOOR_COLUMNS

    # The last trial's carbon and floor columns are recomputed from the means, so keep those.
    base = set(means) - set(CARBON_COLUMNS) - set(FLOOR_COLUMNS)
    summary.update({k: v for k, v in _enrich(means, session).items() if k not in base})
    warnings = _warnings(summary) + _quality_warnings(trials)
    summary["flags"] = ";".join(w.split(":")[0] for w in warnings)
    return summary, warnings


def _quality_warnings(trials: list[dict[str, Any]]) -> list[str]:
    """The meters' own flags (short window, zero joules, below idle, above limit, ...)."""
    seen: dict[str, int] = {}
    for t in trials:
        for flag in filter(None, str(t.get("quality_flags") or "").split(";")):
            seen[flag] = seen.get(flag, 0) + 1
    return [f"{flag}: flagged by the meter in {n} of {len(trials)} trials"
            for flag, n in sorted(seen.items())]  # fmt: skip


def _warnings(summary: dict[str, Any]) -> list[str]:
    out = []
    cv = summary.get("decode_j_per_token_cv")
    if cv is not None and cv == cv and cv > CV_WARN:
        out.append(
            f"cv>5%: decode J/token varies {cv:.1%} between trials; add repeats or min_seconds"
        )
    if not summary.get("measured"):
        out.append(
            f"estimate: energy is an estimate ({summary['energy_source']}), not a measurement"
        )
    if summary.get("below_floor"):
        out.append("below-floor: measured J/token is below the physical floor; check the meter")
    return out


def _summary_first(summary: dict[str, Any]) -> list[str]:
    head = [c for c in TRIAL_COLUMNS if c in summary and c != "trial"]
    return head + ["n_trials"]


def _run_record(
    session: Session, summary: dict[str, Any], details: list[dict[str, Any]], warnings: list[str]
) -> dict[str, Any]:
    return {
        "run_id": session.constants["run_id"],
        "case_id": session.constants["case_id"],
        "config": config_to_dict(session.cfg),
        "idle_power_w": session.idle_power_w,
        "summary": summary,
        "warnings": warnings,
        "trials": details,
        **session.meta,
    }


def _reset_peak_memory(device: str) -> None:
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
