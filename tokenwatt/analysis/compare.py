"""Compare cases against a baseline: energy ratio with a 95% CI, speed ratio, fidelity.

A case is the set of trials sharing CASE_KEYS (engine, window, model, precision, compile,
device, batch size, prompt and new tokens, energy scope), from every complete run of it in one
folder or many.
`compare(trials, "precision", "bf16")` pairs each case with the case that has precision=bf16
and the same value of every other key.

The unit of replication is a fresh process (a run), not a trial inside one: trials of one
process share its warm-up, its memory layout and the machine's state at the time, so they
understate the spread a rerun shows. Each case is therefore reduced to one mean per run, and:
- both sides with the same number (>= 2) of runs: the runs are paired in start order (a sweep
  with `rounds:` runs every case once per round, interleaved, so pair k is round k) and the
  interval is the t interval of the mean log ratio (`ci_basis` = "paired runs");
- both sides with >= 2 runs, different numbers: Welch on the run means ("runs");
- otherwise the interval falls back to the trials of the single run(s) and says so
  ("trials of one run": within-process variation only, narrower than a rerun would show).
Every row says how many runs and trials it stands on (n_runs, n_trials, baseline_*).

MoE models: a case whose experts ran through a different implementation from its baseline's
(`experts_impl`) is not compared unless allow_mixed_impl: the ratio would mix the number format
with the implementation. Such rows are listed in attrs["refused"].
"""

from __future__ import annotations

import math
from typing import Any

from tokenwatt.analysis.stats import (
    POSITIVE_METRICS,
    clean,
    describe,
    paired_ratio_ci,
    ratio_ci,
)
from tokenwatt.errors import UserError

__all__ = ["compare", "case_stats", "ok_trials", "ratio_ci", "paired_ratio_ci", "run_means"]

CASE_KEYS = (
    "engine",
    "window",
    "model",
    "precision",
    "compile",
    "device_name",
    "batch_size",
    "prompt_tokens",
    "new_tokens",
    "energy_scope",
)
# Rows from before a key existed take its value then (one engine, the whole run).
KEY_DEFAULTS = {"engine": "transformers", "window": "whole-run"}
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
# With a whole-window metric (total_*), speed is the whole window's too: tokens over prefill +
# decode time in process, tokens over the window for a served engine (derived in ok_trials).
WINDOW_SPEED = "window_tokens_per_s"
IMPL = "experts_impl"
LABELS = {
    "decode_j_per_token": "decode J/token",
    "total_j_per_token": "total J/generated token",
    "prefill_j_per_token": "prefill J/prompt token",
    "dynamic_decode_j_per_token": "dynamic decode J/token",
    "j_per_request": "J/request",
}
PAIRED, RUNS, TRIALS = "paired runs", "runs", "trials of one run"


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
    for k, default in KEY_DEFAULTS.items():  # rows written before the key existed
        if k in df:
            df[k] = df[k].where(df[k].notna() & (df[k] != ""), default)
    for k in CASE_KEYS:
        if k in df:
            df[k] = df[k].map(key_str)
    num = lambda c: pd.to_numeric(df[c], errors="coerce") if c in df else math.nan  # noqa: E731
    df["j_per_request"] = num("total_j") / (num("batch_size") * num("repetitions"))
    if "requests" in df:  # a served trial's requests; its steady state holds only parts of some
        whole = df["window"] == "whole-run" if "window" in df else True
        served = (num("total_j") / num("requests")).where(whole)
        df["j_per_request"] = df["j_per_request"].where(num("requests").isna(), served)
    df["prefill_j_per_gen_token"] = num("prefill_j") / num("tokens_generated")
    df["decode_j_per_gen_token"] = num("decode_j") / num("tokens_generated")
    in_process = num("tokens_generated") / (num("prefill_s") + num("decode_s"))
    served = num("decode_tokens_per_s") if "window_s" in df else math.nan
    df[WINDOW_SPEED] = in_process.where(in_process.notna(), served) \
        if hasattr(in_process, "where") else served  # fmt: skip
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


def run_means(group: Any, metric: str) -> list[float]:
    """One value per run (the mean of its trials), in run start order (run ids sort by time)."""
    if "run_id" not in group:
        return clean(group[metric])
    out = []
    for _, g in sorted(group.groupby("run_id", sort=False), key=lambda kv: str(kv[0])):
        vals = clean(g[metric])
        if vals:
            out.append(sum(vals) / len(vals))
    return out


def n_runs(group: Any) -> int:
    return int(group["run_id"].nunique()) if "run_id" in group else 1


def _is_true(series: Any) -> Any:
    return series.astype(str).str.lower().isin(("true", "1", "1.0"))


def case_stats(df: Any) -> Any:
    """One row per case: keys, n_runs, n_trials, <metric>_mean/_std/_cv/_ci95_*, ci_basis,
    labels. With >= 2 runs the statistics are over run means; else over the run's trials."""
    import pandas as pd

    keys = present_keys(df)
    rows = []
    for values, g in df.groupby(keys, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(keys, values if isinstance(values, tuple) else [values]))
        runs = n_runs(g)
        row["n_runs"], row["n_trials"] = runs, len(g)
        row["ci_basis"] = RUNS if runs >= 2 else TRIALS
        row["ci_n"] = runs if runs >= 2 else len(g)  # what the interval rests on
        row["case_id"] = ";".join(sorted(set(g["case_id"].astype(str)))) if "case_id" in g else ""
        row["name"] = str(g["name"].iloc[0]) if "name" in g else ""
        row["measured"] = bool(_is_true(g["measured"]).all()) if "measured" in g else False
        if "contended" in g:
            row["n_contended_trials"] = int(_is_true(g["contended"]).sum())
            row["contended"] = row["n_contended_trials"] > 0
        for col in ("energy_source", "precision_backend", IMPL):
            if col in g:
                row[col] = "+".join(sorted(set(g[col].dropna().astype(str)) - {""}))
        for m in STAT_METRICS:
            if m in g:
                vals = run_means(g, m) if runs >= 2 else clean(g[m])
                d = describe(vals, positive=m in POSITIVE_METRICS)
                for k in ("mean", "std", "cv", "ci95_low", "ci95_high"):
                    row[f"{m}_{k}"] = d[k]
        for f in FIDELITY:
            if f in g:
                row[f] = _first(g[f])
        rows.append(row)
    return pd.DataFrame(rows)


def _first(series: Any) -> float:
    vals = clean(series)
    return vals[0] if vals else math.nan


# --- comparison -------------------------------------------------------------------------------


def ratio_by_runs(case: Any, base: Any, metric: str) -> tuple[float, float, float, str]:
    """(ratio, low, high, basis) of mean metric, case over baseline, by run (see module doc)."""
    ra, rb = run_means(case, metric), run_means(base, metric)
    if len(ra) >= 2 and len(rb) >= 2:
        if len(ra) == len(rb):
            return (*paired_ratio_ci(ra, rb), PAIRED)
        return (*ratio_ci(ra, rb), RUNS)
    return (*ratio_ci(case[metric], base[metric]), TRIALS)


def compare(
    trials: Any,
    key: str,
    value: str,
    metric: str = "decode_j_per_token",
    allow_mixed_impl: bool = False,
) -> Any:
    """One row per (case, its baseline): the metric, its ratio and CI, speed ratio, fidelity."""
    import pandas as pd

    keys = present_keys(trials)
    _check(trials, keys, key, value, metric)
    others = [k for k in keys if k != key]
    rows, missing, refused = [], [], []
    for _, group in trials.groupby(others, dropna=False, sort=False):
        base = group[group[key] == value]
        for val, case in group.groupby(key, sort=False):
            if val == value:
                continue
            if base.empty:
                missing.append(_describe_case(case.iloc[0], keys))
                continue
            impl, base_impl = _impl(case), _impl(base)
            if impl != base_impl and not allow_mixed_impl:
                refused.append(f"{_describe_case(case.iloc[0], keys)} (experts_impl {impl!r} "
                               f"vs baseline {base_impl!r})")  # fmt: skip
                continue
            rows.append(_row(case, base, keys, key, value, metric))
    table = pd.DataFrame(rows)
    table.attrs.update(
        metric=metric,
        baseline=f"{key}={value}",
        key=key,
        missing=missing,
        refused=refused,
        allow_mixed_impl=allow_mixed_impl,
        measured=bool(_is_true(trials["measured"]).all()) if "measured" in trials else False,
        contended=bool(_is_true(trials["contended"]).any()) if "contended" in trials else False,
    )
    if table.empty and refused:
        raise UserError(
            f"compare: every case ran its MoE experts through another implementation than its "
            f"baseline ({refused[0]}); rerun with the same experts implementation, or pass "
            "--allow-mixed-impl to compare anyway (the table then says so)"
        )
    return table


def _impl(df: Any) -> str:
    if IMPL not in df:
        return ""
    return "+".join(sorted(set(df[IMPL].dropna().astype(str)) - {""}))


def _row(case: Any, base: Any, keys: list[str], key: str, value: str, metric: str) -> dict:
    first = case.iloc[0]
    row: dict[str, Any] = {k: first[k] for k in keys}
    row["baseline"] = f"{key}={value}"
    row["n_runs"], row["n_trials"] = n_runs(case), len(case)
    row["baseline_n_runs"], row["baseline_n_trials"] = n_runs(base), len(base)
    row[metric] = _mean_of(run_means(case, metric))
    row[f"baseline_{metric}"] = _mean_of(run_means(base, metric))
    r, lo, hi, basis = ratio_by_runs(case, base, metric)
    row["ratio"], row["ratio_ci95_low"], row["ratio_ci95_high"] = r, lo, hi
    row["ci_basis"] = basis
    speed = WINDOW_SPEED if metric.startswith("total_") else SPEED
    if speed in case:
        r, lo, hi, _ = ratio_by_runs(case, base, speed)
        row["tokens_per_s_ratio"], row["tokens_per_s_ci95_low"], row["tokens_per_s_ci95_high"] = (
            r, lo, hi)  # fmt: skip
    for f in FIDELITY:
        if f in case:
            row[f], row[f"baseline_{f}"] = _first(case[f]), _first(base[f])
    impl, base_impl = _impl(case), _impl(base)
    if impl or base_impl:
        row[IMPL], row[f"baseline_{IMPL}"] = impl, base_impl
        row["mixed_impl"] = impl != base_impl
    row["measured"] = bool(_is_true(case["measured"]).all()) if "measured" in case else False
    if "contended" in case:
        row["contended"] = bool(_is_true(case["contended"]).any() or
                                _is_true(base["contended"]).any())  # fmt: skip
    return row


def _mean_of(xs: list[float]) -> float:
    return describe(xs)["mean"]


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
