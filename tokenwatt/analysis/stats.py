"""Summary statistics of trials: mean, std, CV and a Student-t 95% confidence interval."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Two-sided 95% Student-t quantiles for df = 1..30. Hand-written so the summary does not pull
# in scipy for one number; beyond 30 the normal 1.96 is within 2%.
_T95 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]  # fmt: skip

CV_WARN = 0.05  # METHOD.md: flag a coefficient of variation above 5%


def t95(df: int) -> float:
    if df < 1:
        return math.nan
    return _T95[df - 1] if df <= len(_T95) else 1.96


def describe(values: Sequence[float]) -> dict[str, float]:
    """mean, std (sample), cv, ci95_low, ci95_high, n. NaN-free inputs only."""
    xs = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(xs)
    if n == 0:
        return {k: math.nan for k in ("mean", "std", "cv", "ci95_low", "ci95_high")} | {"n": 0}
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    cv = std / abs(mean) if n > 1 and mean else math.nan
    half = t95(n - 1) * std / math.sqrt(n) if n > 1 else math.nan
    return {
        "mean": mean,
        "std": std,
        "cv": cv,
        "ci95_low": mean - half,
        "ci95_high": mean + half,
        "n": n,
    }
