"""One config end to end: load, apply precision, measure idle, warm up, run trials, record.

Each finished trial is on disk before the next one starts, so an interruption loses at
most the trial in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt._util.ids import new_run_id
from tokenwatt.config import RunConfig, case_id
from tokenwatt.errors import CaseOutOfMemory, MeterError, RunStopped
from tokenwatt.placement import Placement, resolve_placement
from tokenwatt.results.columns import (
    RESULTS_CSV,
    RUN_JSON,
    SUMMARY_CSV,
    TRIAL_COLUMNS,
)
from tokenwatt.results.folder import check_out_dir, prepare_out_dir
from tokenwatt.results.store import append_rows, locked, transaction, update_json
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
from tokenwatt.runner.serving import append_requests
from tokenwatt.runner.session import Session, prepare_session
from tokenwatt.runner.summary import run_record, summarise_windows, summary_header
from tokenwatt.runner.trials import pause_between_trials, reset_peak_memory, run_trial

OnTrial = Callable[[int, int], None]  # (trials done, trials total)
# (event, text): each phase as it starts (PHASES, in that order, those the config has), and
# "warning" for a note said before any work (e.g. a run that will be very slow).
OnPhase = Callable[[str, str], None]
PHASES = ("meters", "load", "precision", "fidelity", "warmup", "idle", "trials")


@dataclass
class RunOutcome:
    run_id: str
    out: Path
    trials: list[dict[str, Any]]
    summary: dict[str, Any]
    warnings: list[str]
    windows: list[dict[str, Any]] = field(default_factory=list)  # every window's summary


def run_config(
    cfg: RunConfig, on_trial: OnTrial | None = None, on_phase: OnPhase | None = None
) -> RunOutcome:
    """Measure one config and append its rows to cfg.out.

    Every check that can reject the inputs runs before anything heavy and before OUT is
    created, so a bad input costs a fraction of a second and leaves the results folder
    untouched: the out folder, the region, the placement (device and boards, resolved once),
    the engine's own needs (a package, a precision), the meters (opened now); then the
    model, its prompts. precision "auto" is resolved here, so rows and run.json record the
    precision that ran.
    """
    from tokenwatt.energy.meters.select import open_meters
    from tokenwatt.engines import engine_class

    check_out_dir(cfg.out)
    if cfg.carbon.region:
        from tokenwatt.analysis.carbon import resolve_region

        resolve_region(cfg.carbon.region)
    engine = engine_class(cfg.engine)
    placement = resolve_placement(cfg, in_process=engine.in_process)
    device = placement.device
    if engine.sets_precision:
        cfg = _resolve_precision(cfg, device)
    engine.check(cfg, device)  # a package, a precision, a trace: before anything is opened
    phase = on_phase or _no_phase
    phase("meters", f"opening meters ({cfg.measure.meter})")
    meters = open_meters(cfg.measure.meter, placement.measured, device=device,
                         cpu_tdp_w=cfg.measure.cpu_tdp_w, measure=cfg.measure)  # fmt: skip
    try:
        reason = engine.slow_reason(cfg, device)
        if reason:
            phase("warning", reason)
        return _measure_guarded(cfg, placement, meters, on_trial, phase)
    finally:
        for m in meters:
            m.close()


def _measure_guarded(cfg: RunConfig, placement: Placement, meters: list[Any],
                     on_trial: OnTrial | None, phase: OnPhase) -> RunOutcome:  # fmt: skip
    """Prepare and measure; a meter fault outside a trial and an out-of-memory stop the run
    as one line (finished trials are kept)."""
    try:
        return _prepare_and_measure(cfg, placement, meters, on_trial, phase)
    except MeterError as e:  # outside a trial (idle baseline): nothing to mark degraded
        raise RunStopped(f"meter failed: {one_line(e)}; check the meter or use --meter "
                         "estimate; finished trials are kept") from None  # fmt: skip
    except Exception as e:
        if not is_oom(e):
            raise
        error = one_line(e)
    release_memory(placement.device)  # outside the except: the frames holding the model are gone
    raise CaseOutOfMemory(oom_message(cfg, placement.device, error, cfg.out))


def _no_phase(event: str, text: str) -> None:
    pass


def _resolve_precision(cfg: RunConfig, device: str) -> RunConfig:
    from tokenwatt.registry.precisions import resolve

    precision = resolve(cfg.precision, device)
    return cfg if precision == cfg.precision else cfg.model_copy(update={"precision": precision})


def _prepare_and_measure(cfg: RunConfig, placement: Placement, meters: list[Any],
                         on_trial: OnTrial | None, phase: OnPhase) -> RunOutcome:  # fmt: skip
    import shutil
    import tempfile

    logs = Path(tempfile.mkdtemp(prefix="tokenwatt-engine-"))  # OUT is made only after prepare
    try:
        session = prepare_session(cfg, placement, meters, phase, log_dir=logs)
        out = None
        try:
            out = prepare_out_dir(cfg.out)
            return measure_session(session, out, on_trial, phase)
        finally:
            session.engine.close()  # first: a launched server's log is whole once it stopped
            if out is not None:
                _keep_logs(logs, out)
    finally:
        shutil.rmtree(logs, ignore_errors=True)


def _keep_logs(logs: Path, out: Path) -> None:
    """An engine's own log (a launched server's) lands in OUT, one file per run."""
    import shutil

    for f in sorted(logs.glob("*.log")):
        n = 1 + len(list(out.glob(f"{f.stem}-*.log")))
        shutil.copyfile(f, out / f"{f.stem}-{n}.log")


def measure_session(
    session: Session, out: Path, on_trial: OnTrial | None, on_phase: OnPhase | None = None
) -> RunOutcome:
    cfg = session.cfg
    phase = on_phase or _no_phase
    run_id = new_run_id()
    session.constants["run_id"] = run_id
    session.constants["case_id"] = case_id(cfg)
    if cfg.measure.warmup:
        phase("warmup", f"warm-up: {cfg.measure.warmup} unmeasured generation(s)")
    for _ in range(cfg.measure.warmup):
        session.engine.generate()
    if cfg.measure.idle_seconds > 0:
        phase("idle", f"idle baseline: {cfg.measure.idle_seconds:g} s with nothing running")
    session.idle_by_channel = measure_idle_by_channel(session.meters, cfg.measure.idle_seconds)
    session.idle_power_w = sum(session.idle_by_channel.values()) or float("nan")
    if session.model is not None:
        reset_peak_memory(session.device)
    phase("trials", f"trials (each at least {cfg.measure.min_seconds:g} s)")
    trials: list[dict[str, Any]] = []
    details: list[dict[str, Any]] = []
    from tokenwatt.models.moe import track_routing

    streak, fault = 0, None
    routed = track_routing(session.model, cfg.workload.batch_size) if session.model is not None \
        else nullcontext({})  # fmt: skip
    with routed as routing:
        for i in range(cfg.measure.repeats):
            pause_between_trials(cfg, i, session.device)
            rows, detail, fault = guarded_trial(run_trial, session, i)
            with locked(out):
                append_rows(out / RESULTS_CSV, rows, TRIAL_COLUMNS)
                append_requests(out, rows[0], detail)  # a served trial's; others have none
            trials.extend(rows)
            details.append(detail)
            if on_trial:
                on_trial(i + 1, cfg.measure.repeats)
            streak = streak + 1 if fault else 0
            if streak >= MAX_CONSECUTIVE_DEGRADED:
                break
    ok = [t for t in trials if t["status"] == "ok"]
    if not ok:
        raise RunStopped(stopped_message(fault, streak, 0, out, cfg, session.engine))
    summaries, warnings = summarise_windows(session, ok, routing)
    summary = summaries[0]
    note_degraded(summary, warnings, trials, stopped=streak >= MAX_CONSECUTIVE_DEGRADED)
    for other in summaries[1:]:
        other["n_degraded"], other["summary_flags"] = summary["n_degraded"], \
            summary["summary_flags"]  # fmt: skip
    from tokenwatt.analysis.quality import publishable

    for row in summaries:
        row.update(publishable(row))
    # The summary rows mark the run complete: they and the run.json record land together or not.
    with transaction(out, RUN_JSON, SUMMARY_CSV):
        update_json(out / RUN_JSON, "runs",
                    run_record(session, summary, details, warnings, summaries))  # fmt: skip
        append_rows(out / SUMMARY_CSV, summaries, list(summary_header(summary)))
    if streak >= MAX_CONSECUTIVE_DEGRADED:
        finished = len({t["trial"] for t in ok})  # a served trial has a row per window
        raise RunStopped(stopped_message(fault, streak, finished, out, cfg, session.engine))
    return RunOutcome(run_id, out, trials, summary, warnings, summaries)


def measure_idle_w(meters: list[Any], seconds: float) -> float:
    """Idle power over `seconds` with nothing running, measured on the same meters."""
    per_channel = measure_idle_by_channel(meters, seconds)
    return sum(per_channel.values()) if per_channel else float("nan")


def measure_idle_by_channel(meters: list[Any], seconds: float) -> dict[str, float]:
    """Idle W per meter channel (each board its own); {} when no idle baseline is taken."""
    from tokenwatt.energy.recorder import measure_idle_power

    return dict(measure_idle_power(meters, seconds)) if seconds > 0 else {}
