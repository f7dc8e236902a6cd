"""Compare cases against a baseline: energy ratio with a 95% CI, speed ratio, fidelity.

A case is the set of trials sharing CASE_KEYS (model, precision, compile, device, batch size,
prompt and new tokens, energy scope); trials of every complete run of the same case are
pooled, from one folder or many. `compare(trials, "precision", "bf16")` pairs each case with
the case that has precision=bf16 and the same value of every other key.

The ratio's confidence interval is a delta-method interval on the log of the ratio of means:
    log R = log(mean_a) - log(mean_b),  se^2 = s_a^2/(n_a mean_a^2) + s_b^2/(n_b mean_b^2),
with Student-t quantiles on Welch-Satterthwaite degrees of freedom (rounded down), and the
interval R * exp(+-t se). It is never negative and never unbounded, unlike Fieller's interval
at small n; for the CVs of a sound measurement (a few %) the two agree closely. It needs at
least two trials on each side and positive means; otherwise it is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokenwatt.analysis.stats import describe, t95
from tokenwatt.errors import UserError

CASE_KEYS = (
    "model",
    "precision",
    "compile",
    "device_name",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "energy_scope",
)
FIDELITY = ("top1_agreement", "kl_divergence")
STAT_METRICS = (
    "decode_j_per_token",
    "prefill_j_per_token",
    "total_j_per_token",
    "dynamic_decode_j_per_token",
    "decode_tokens_per_s",
    "avg_power_w",
    "idle_power_w",
    "prefill_j_per_gen_token",
    "decode_j_per_gen_token",
    "j_per_request",
    "peak_memory_mb",
)
SPEED = "decode_tokens_per_s"
LABELS = {
    "decode_j_per_token": "decode J/token",
    "total_j_per_token": "total J/token",
    "prefill_j_per_token": "prefill J/prompt token",
    "dynamic_decode_j_per_token": "dynamic decode J/token",
    "j_per_request": "J/request",
}


# --- the numbers ----------------------------------------------------------------------------


def ratio_ci(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """mean(a)/mean(b) and its 95% CI (delta method on the log ratio, Welch df)."""
    xa, xb = _clean(a), _clean(b)
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
    half = t95(max(1, math.floor(df))) * math.sqrt(va + vb)
    return r, r * math.exp(-half), r * math.exp(half)


def _clean(xs: Sequence[float]) -> list[float]:
    out = []
    for x in xs:
        try:
            f = float(x)
        except (TypeError, ValueError):
            continue
        if math.isfinite(f):
            out.append(f)
    return out


# --- trial tables -----------------------------------------------------------------------------


def ok_trials(trials: Any, summary: Any = None) -> Any:
    """Trial rows of complete runs (status ok, run in summary.csv), keys as strings, with
    derived columns: energy per request and the prefill/decode split per generated token."""
    import pandas as pd

    df = trials.copy()
    if "status" in df:
        df = df[df["status"].fillna("ok") == "ok"]
    if summary is not None and "run_id" in summary and len(summary):
        df = df[df["run_id"].isin(set(summary["run_id"]))]
    df = df.copy()
    for k in CASE_KEYS:
        if k in df:
            df[k] = df[k].map(key_str)
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else math.nan  # noqa: E731
    df["j_per_request"] = num("total_j") / (num("batch_size") * num("repetitions"))
    df["prefill_j_per_gen_token"] = num("prefill_j") / num("tokens_generated")
    df["decode_j_per_gen_token"] = num("decode_j") / num("tokens_generated")
    return df


def key_str(v: Any) -> str:
    """A key value as text: 1.0 -> "1", NaN -> "", so keys from different files match."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def present_keys(df: Any) -> list[str]:
    return [k for k in CASE_KEYS if k in df]


def case_stats(df: Any) -> Any:
    """One row per case: keys, n_trials, <metric>_mean/_ci95_low/_ci95_high, labels."""
    import pandas as pd

    keys = present_keys(df)
    rows = []
    for values, g in df.groupby(keys, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(keys, values if isinstance(values, tuple) else [values]))
        row["n_trials"] = len(g)
        row["case_id"] = ";".join(sorted(set(g["case_id"].astype(str)))) if "case_id" in g else ""
        row["name"] = str(g["name"].iloc[0]) if "name" in g else ""
        row["measured"] = (
            bool(g["measured"].astype(str).eq("True").all()) if "measured" in g else False
        )
        for col in ("energy_source", "precision_backend"):
            if col in g:
                row[col] = "+".join(sorted(set(g[col].dropna().astype(str))))
        for m in STAT_METRICS:
            if m in g:
                d = describe(_clean(g[m]))
                for k in ("mean", "std", "cv", "ci95_low", "ci95_high"):
                    row[f"{m}_{k}"] = d[k]
        for f in FIDELITY:
            if f in g:
                row[f] = _first(g[f])
        rows.append(row)
    return pd.DataFrame(rows)


def _first(series: Any) -> float:
    vals = _clean(series)
    return vals[0] if vals else math.nan


# --- comparison -------------------------------------------------------------------------------


def compare(trials: Any, key: str, value: str, metric: str = "decode_j_per_token") -> Any:
    """One row per (case, its baseline): the metric, its ratio and CI, speed ratio, fidelity."""
    import pandas as pd

    keys = present_keys(trials)
    _check(trials, keys, key, value, metric)
    others = [k for k in keys if k != key]
    rows, missing = [], []
    for _, group in trials.groupby(others, dropna=False, sort=False):
        base = group[group[key] == value]
        for val, case in group.groupby(key, sort=False):
            if val == value:
                continue
            if base.empty:
                missing.append(_describe_case(case.iloc[0], keys))
                continue
            rows.append(_row(case, base, keys, key, value, metric))
    table = pd.DataFrame(rows)
    table.attrs.update(
        metric=metric,
        baseline=f"{key}={value}",
        key=key,
        missing=missing,
        measured=bool(trials["measured"].astype(str).eq("True").all())
        if "measured" in trials
        else False,
    )
    return table


def _row(case: Any, base: Any, keys: list[str], key: str, value: str, metric: str) -> dict:
    first = case.iloc[0]
    row: dict[str, Any] = {k: first[k] for k in keys}
    row["baseline"] = f"{key}={value}"
    row["n"], row["baseline_n"] = len(case), len(base)
    row[metric] = describe(_clean(case[metric]))["mean"]
    row[f"baseline_{metric}"] = describe(_clean(base[metric]))["mean"]
    row["ratio"], row["ratio_ci95_low"], row["ratio_ci95_high"] = ratio_ci(
        case[metric], base[metric]
    )
    if SPEED in case:
        r = ratio_ci(case[SPEED], base[SPEED])
        row["tokens_per_s_ratio"], row["tokens_per_s_ci95_low"], row["tokens_per_s_ci95_high"] = r
    for f in FIDELITY:
        if f in case:
            row[f], row[f"baseline_{f}"] = _first(case[f]), _first(base[f])
    row["measured"] = (
        bool(case["measured"].astype(str).eq("True").all()) if "measured" in case else False
    )
    return row


def _check(trials: Any, keys: list[str], key: str, value: str, metric: str) -> None:
    if trials.empty:
        raise UserError("compare: no complete trial rows in these results; run a sweep first")
    if key not in keys:
        raise UserError(f"--baseline: unknown key {key!r}; use one of {', '.join(keys)}")
    values = sorted(set(trials[key]))
    if value not in values:
        raise UserError(f"--baseline: no case has {key}={value}; values: {', '.join(values)}")
    if metric not in trials:
        raise UserError(f"--metric: no column {metric!r} in these results")


def _describe_case(row: Any, keys: list[str]) -> str:
    return ", ".join(f"{k}={row[k]}" for k in keys)
