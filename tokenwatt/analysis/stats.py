"""Summary statistics: mean, std, CV and a 95% confidence interval of the mean.

- Quantiles are the exact Student-t quantile at every degree of freedom (scipy), fractional
  Welch-Satterthwaite dfs included.
- A positive quantity (J/token, tokens/s, watts) gets its interval on the log scale,
  mean x exp(+-t x CV / sqrt(n)) (the delta method on log(mean)): never a negative lower bound,
  and asymmetric as the spread of a ratio-scale quantity is. Quantities that may be negative
  (dynamic energy above idle can be) keep the linear interval mean +- t x s / sqrt(n).
- `ratio_ci` and `paired_ratio_ci` are the same construction for the ratio of two means.

What the n counts is up to the caller: the unit of replication is a fresh process (a run), so
comparisons across cases pass one value per run when there are several runs (see compare.py),
and say when an interval rests on the trials of a single process.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from functools import lru_cache

CV_WARN = 0.05  # tokenwatt's flag: trial-to-trial spread above the power sensor's own +-5%
LEVEL = 0.95

# Metrics that are positive by nature: their intervals are computed on the log scale.
POSITIVE_METRICS = frozenset({
    "prefill_j_per_token", "prefill_j_per_request", "decode_j_per_token", "total_j_per_token",
    "decode_tokens_per_s", "avg_power_w", "idle_power_w", "j_per_request",
    "prefill_j_per_gen_token", "decode_j_per_gen_token", "peak_memory_mb",
})  # fmt: skip


@lru_cache(maxsize=512)
def t_quantile(df: float, level: float = LEVEL) -> float:
    """Two-sided Student-t quantile (t_{1 - (1 - level)/2, df}); NaN for df <= 0."""
    if not df or df <= 0 or math.isnan(df):
        return math.nan
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def t95(df: float) -> float:
    return t_quantile(df, LEVEL)


def clean(values: Iterable[object]) -> list[float]:
    """Finite floats only (CSV cells arrive as strings, blanks and NaN)."""
    out = []
    for v in values:
        try:
            f = float(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


def describe(values: Sequence[float], positive: bool = False) -> dict[str, float]:
    """mean, std (sample), cv, ci95_low, ci95_high, n.

    positive=True: the interval is on the log scale (and needs every value > 0; otherwise the
    linear interval is used, since a non-positive value shows the quantity is not positive).
    """
    xs = clean(values)
    n = len(xs)
    if n == 0:
        return {k: math.nan for k in ("mean", "std", "cv", "ci95_low", "ci95_high")} | {"n": 0}
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    cv = std / abs(mean) if n > 1 and mean else math.nan
    low = high = math.nan
    if n > 1:
        t = t95(n - 1)
        if positive and min(xs) > 0:
            half = t * cv / math.sqrt(n)
            low, high = mean * math.exp(-half), mean * math.exp(half)
        else:
            half = t * std / math.sqrt(n)
            low, high = mean - half, mean + half
    return {"mean": mean, "std": std, "cv": cv, "ci95_low": low, "ci95_high": high, "n": n}


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a)/mean(b) and its 95% CI: delta method on the log ratio, Welch df.

        log R = log(mean_a) - log(mean_b),  se^2 = s_a^2/(n_a mean_a^2) + s_b^2/(n_b mean_b^2)

    with the exact t quantile at the (fractional) Welch-Satterthwaite df; R x exp(+-t se).
    Never negative nor unbounded (unlike Fieller's interval at small n). Needs two values on
    each side and positive means; otherwise the interval is NaN.
    """
    xa, xb = clean(a), clean(b)
    if not xa or not xb:
        return math.nan, math.nan, math.nan
    da, db = describe(xa), describe(xb)
    ma, mb = da["mean"], db["mean"]
    r = ma / mb if mb else math.nan
    if len(xa) < 2 or len(xb) < 2 or ma <= 0 or mb <= 0:
        return r, math.nan, math.nan
    va = da["std"] ** 2 / (len(xa) * ma**2)
    vb = db["std"] ** 2 / (len(xb) * mb**2)
    if va + vb == 0:
        return r, r, r
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1))
    half = t95(df) * math.sqrt(va + vb)
    return r, r * math.exp(-half), r * math.exp(half)


def paired_ratio_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Ratio of paired positive values (a[i] with b[i], e.g. the same round of a sweep).

    The geometric mean of a[i]/b[i] and the t interval of the mean log ratio (n - 1 df): drift
    shared by a pair cancels. Needs two pairs, all positive; otherwise the interval is NaN.
    """
    pairs = [(float(x), float(y)) for x, y in zip(a, b)]
    pairs = [(x, y) for x, y in pairs if math.isfinite(x) and math.isfinite(y)]
    if not pairs or any(x <= 0 or y <= 0 for x, y in pairs):
        return math.nan, math.nan, math.nan
    d = describe([math.log(x / y) for x, y in pairs])
    r = math.exp(d["mean"])
    if d["n"] < 2:
        return r, math.nan, math.nan
    half = t95(d["n"] - 1) * d["std"] / math.sqrt(d["n"])
    return r, r * math.exp(-half), r * math.exp(half)
