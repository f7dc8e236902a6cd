"""A run's summary row, its warnings, and its run.json record."""

from __future__ import annotations

from typing import Any

from tokenwatt.analysis.stats import CV_WARN, POSITIVE_METRICS, describe
from tokenwatt.config import config_to_dict
from tokenwatt.results.columns import SERVING_METRICS, SUMMARY_METRICS, TRIAL_COLUMNS
from tokenwatt.runner.boards import board_summary
from tokenwatt.runner.rows import enrich
from tokenwatt.runner.session import Session


def summarise_windows(
    session: Session, trials: list[dict[str, Any]], routing: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    """One summary row per window the trials measured (one for a phased engine; whole-run and
    steady-state for a served one), first window first; the warnings of all, once each."""
    windows = list(dict.fromkeys(str(t.get("window") or "whole-run") for t in trials))
    summaries, warnings = [], []
    for window in windows:
        rows = [t for t in trials if str(t.get("window") or "whole-run") == window]
        summary, said = summarise(session, rows, routing)
        summary["window"] = window
        if window != windows[0]:
            said = [
                f"{window}: {w}"
                for w in said
                if w not in warnings
                and w.split(":")[0] not in ("simulated", "estimate", "server-not-covered")
            ]
        summaries.append(summary)
        warnings += [w for w in said if w not in warnings]
    return summaries, warnings


def summarise(
    session: Session, trials: list[dict[str, Any]], routing: dict[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    # One summary row per run: its statistics are over this run's trials, which show the
    # variation inside one process only (n_runs = 1; compare and report pool runs).
    summary: dict[str, Any] = {**session.constants, "n_trials": len(trials), "n_runs": 1,
                               "ci_basis": "trials of one run"}  # fmt: skip
    for col in ("prefill_s", "decode_s", "window_s", "tokens_generated", "decode_tokens",
                "repetitions", "requests", "requests_failed"):  # fmt: skip
        if col in trials[0]:
            summary[col] = sum(t[col] for t in trials)
    means: dict[str, Any] = dict(trials[-1])
    served = [m for m in SERVING_METRICS if m in trials[0]]
    for metric in SUMMARY_METRICS + served:
        values = [t.get(metric, float("nan")) for t in trials]
        d = describe(values, positive=metric in POSITIVE_METRICS)
        for k in ("mean", "std", "cv", "ci95_low", "ci95_high"):
            summary[f"{metric}_{k}"] = d[k]
        means[metric] = d["mean"]
    summary["idle_power_w"] = session.idle_power_w
    summary.update(board_summary(trials))  # each board's J/token means and idle power
    summary["peak_memory_mb"] = max((t["peak_memory_mb"] for t in trials), default=None)
    summary.update({k: v for k, v in routing.items()})
    from tokenwatt.analysis.carbon import CARBON_COLUMNS
    from tokenwatt.analysis.energy_model import PLAUSIBILITY_COLUMNS
    from tokenwatt.analysis.floor import FLOOR_COLUMNS
    from tokenwatt.runner.contention import summarise_contention

    contention, contention_warnings = summarise_contention(trials)
    from tokenwatt.engines.load_shape import cap_warnings
    from tokenwatt.engines.server_metrics import check_warnings

    # the server's word, where it was read; an open loop its cap held back
    contention_warnings += check_warnings(trials) + cap_warnings(trials)
    summary.update(contention)
    # The summary's floor uses the measured decode routing (MoE) where there is one.
    touched = routing.get("routing_decode_experts_touched_mean")
    if touched:
        session.model_info["experts_touched_per_layer"] = touched
    # The last trial's carbon and floor columns are recomputed from the means, so keep those.
    base = set(means) - set(CARBON_COLUMNS) - set(FLOOR_COLUMNS) - set(PLAUSIBILITY_COLUMNS)
    summary.update({k: v for k, v in enrich(means, session).items() if k not in base})
    warnings = (session.warnings + contention_warnings + _warnings(summary)
                + _quality_warnings(trials))  # fmt: skip
    summary["summary_flags"] = ";".join(w.split(":")[0] for w in warnings)
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
    source = str(summary.get("energy_source") or "")
    if "simulated" in source:
        out.append(f"simulated: energy comes from simulated hardware ({source}), not a "
                   "measurement")  # fmt: skip
    elif not summary.get("measured"):
        out.append(f"estimate: energy is an estimate ({source}), not a measurement")
    if summary.get("below_floor"):
        out.append(
            "below-floor: measured decode J/token is below the physical floor "
            f"({summary.get('floor_hardware')}); check that the hardware profile matches the "
            "board (variant, memory, power limit), that the meter covers the whole window, and "
            "that the working set does not fit in cache (see docs/carbon-and-floor.md)"
        )
    if summary.get("implausible"):
        out.append(
            f"implausible: measured decode J/token is {summary.get('plausibility'):.3g}x the "
            "energy model's prediction for the board measured, far outside its interval; check "
            "for a throttled board, a wrong power limit, a meter on another board than the "
            "model's, or a workload unlike the model's calibration (docs/energy-model.md)"
        )
    return out


def summary_header(summary: dict[str, Any]) -> list[str]:
    head = [c for c in TRIAL_COLUMNS if c in summary and c != "trial"]
    return head + ["n_trials"]


def run_record(
    session: Session, summary: dict[str, Any], details: list[dict[str, Any]],
    warnings: list[str], summaries: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:  # fmt: skip
    windows = {"window_summaries": summaries} if summaries and len(summaries) > 1 else {}
    return {
        "run_id": session.constants["run_id"],
        "case_id": session.constants["case_id"],
        "config": config_to_dict(session.cfg),
        "idle_power_w": session.idle_power_w,
        "summary": summary,
        "warnings": warnings,
        "trials": details,
        **windows,
        **session.meta,
    }
