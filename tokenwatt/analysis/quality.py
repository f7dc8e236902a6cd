"""Whether a run's figures can be published: one rule, used where the summary row is written and
where a folder is validated before it is shared."""

from __future__ import annotations

from typing import Any

from tokenwatt.analysis.stats import CV_WARN

MIN_TRIALS = 3  # fewer cannot show a run's spread (the CI of two trials is not informative)


def publishable(summary: dict[str, Any]) -> dict[str, Any]:
    """`publishable` and `publishable_reason` of a summary row (the role ML.ENERGY's is_stable
    plays, stricter): measured, not contended, CV within its bound, enough trials, not below
    the physical floor, no degraded trial. Judged once the degraded trials are counted."""
    cv = summary.get("decode_j_per_token_cv")
    if cv is None or cv != cv:  # a served window has no decode split: its whole-window CV
        cv = summary.get("total_j_per_token_cv")
    checks = (
        (not summary.get("measured"), "not measured (an estimate or simulated hardware)"),
        (bool(summary.get("contended")), "contended"),
        (cv is None or cv != cv, "no CV (fewer than 2 trials with a figure)"),
        (cv is not None and cv > CV_WARN, f"CV above {CV_WARN:.0%}"),
        ((summary.get("n_trials") or 0) < MIN_TRIALS, f"fewer than {MIN_TRIALS} trials"),
        (bool(summary.get("below_floor")), "below the physical floor"),
        ((summary.get("n_degraded") or 0) > 0, "degraded trials"),
    )
    reasons = [why for failed, why in checks if failed]
    return {"publishable": not reasons, "publishable_reason": "; ".join(reasons)}
