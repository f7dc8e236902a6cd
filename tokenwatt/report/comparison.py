"""A comparison table as people read it: formatted cells, Markdown, CSV; loaded from folders."""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenwatt.analysis.compare import (
    CASE_KEYS,
    FIDELITY,
    LABELS,
    PAIRED,
    RUNS,
    TRIALS,
    compare,
)
from tokenwatt.report.format import fmt, ratio_with_ci


def compare_folders(
    paths: Sequence[str], key: str, value: str, metric: str | None = None,
    allow_mixed_impl: bool = False,
) -> Any:  # fmt: skip
    from tokenwatt.report.usable import no_usable_row, usable_trials
    from tokenwatt.results.load import load_results

    trials = usable_trials(load_results(*paths), paths)
    if trials.empty:  # every row failed or unfinished: exit 1, not a bad-input 2
        raise no_usable_row("compare", paths)
    metric = metric or default_metric(trials)
    return compare(trials, key, value, metric, allow_mixed_impl=allow_mixed_impl)


def default_metric(trials: Any) -> str:
    """Decode J/token, unless a served engine's rows (no decode phase of their own) are here:
    then the whole window's J/token, which every engine's rows carry."""
    served = "engine" in trials and (trials["engine"] == "openai").any()
    return "total_j_per_token" if served else "decode_j_per_token"


def display_rows(table: Any) -> tuple[list[str], list[list[str]]]:
    """Headers and formatted cells: the keys that vary, then the figures."""
    if table.empty:
        return [], []
    metric = table.attrs["metric"]
    keys = shown_keys(table)
    unit = "J" if "_j_" in metric or metric.endswith("_j") else ""
    headers = keys + [metric_label(table), "baseline", "ratio [95% CI]", "runs x trials"]
    has_speed = "tokens_per_s_ratio" in table
    has_fid = any(f in table and table[f].notna().any() for f in FIDELITY)
    headers += ["tokens/s ratio [95% CI]"] if has_speed else []
    headers += ["top-1 agreement vs reference", "KL vs reference (nats)"] if has_fid else []
    rows = []
    for _, r in table.iterrows():
        n = _interval_n(r)
        cells = [str(r[k]) for k in keys]
        cells += [
            f"{fmt(r[metric])} {unit}".strip(),
            f"{fmt(r[f'baseline_{metric}'])} {unit}".strip(),
            ratio_with_ci(r["ratio"], r["ratio_ci95_low"], r["ratio_ci95_high"], n)
            + (TRIAL_MARK if r.get("ci_basis") == TRIALS else ""),
            _runs_cell(r),
        ]
        if has_speed:
            speed = [r[f"tokens_per_s_{k}"] for k in ("ratio", "ci95_low", "ci95_high")]
            cells.append(ratio_with_ci(*speed, n))
        if has_fid:
            cells += [fmt(r.get("top1_agreement")), fmt(r.get("kl_divergence"))]
        rows.append(cells)
    return headers, rows


def shown_keys(table: Any) -> list[str]:
    """The case keys a table shows: the baseline's key and those that vary."""
    key = table.attrs["key"]
    return [k for k in CASE_KEYS if k in table and (k == key or table[k].nunique() > 1)]


def tsv_columns(table: Any) -> list[str]:
    """The table's columns for machines: each figure and interval bound its own column."""
    metric = table.attrs["metric"]
    figures = [metric, f"baseline_{metric}", "ratio", "ratio_ci95_low", "ratio_ci95_high",
               "ci_basis", "n_runs", "n_trials", "baseline_n_runs", "baseline_n_trials",
               "mixed_impl", "experts_impl", "baseline_experts_impl", "tokens_per_s_ratio",
               "tokens_per_s_ci95_low", "tokens_per_s_ci95_high", "top1_agreement",
               "kl_divergence", "measured", "contended"]  # fmt: skip
    return shown_keys(table) + [c for c in figures if c in table]


def tsv_text(table: Any) -> str:
    """Tab-separated, a header then a row per case, numbers at full precision."""
    return table[tsv_columns(table)].to_csv(sep="\t", index=False)


def _interval_n(r: Any) -> Any:
    """What the interval rests on, on the side with fewer: runs, or the trials of one run."""
    over_runs = r.get("ci_basis") in (PAIRED, RUNS)
    keys = ("n_runs", "baseline_n_runs") if over_runs else ("n_trials", "baseline_n_trials")
    ns = [r.get(k) for k in keys if r.get(k) == r.get(k) and r.get(k) is not None]
    return min(ns) if ns else None


TRIAL_MARK = " *"  # the interval rests on the trials of one run (see basis_note)


def _runs_cell(r: Any) -> str:
    """How many runs and trials the case and its baseline stand on: "3x5 / 3x5"."""
    if "n_runs" not in r:
        return ""
    cell = f"{r['n_runs']}x{r['n_trials']} / {r['baseline_n_runs']}x{r['baseline_n_trials']}"
    if r.get("mixed_impl"):
        cell += f" (experts: {r.get('experts_impl')} vs {r.get('baseline_experts_impl')})"
    return cell


def basis_note(table: Any) -> str:
    """What the intervals stand on, and what was left out."""
    parts = ["runs x trials: case / baseline; the unit of replication is a run (a fresh process)."]
    if "ci_basis" in table and (table["ci_basis"] == TRIALS).any():
        parts.append(f"{TRIAL_MARK.strip()} interval from the trials of a single run: it shows "
                     "within-process variation only; rerun the sweep with `rounds:` >= 2 for an "
                     "interval over runs.")  # fmt: skip
    if "ci_basis" in table and (table["ci_basis"] == PAIRED).any():
        parts.append("With the same number of runs on both sides the runs are paired in start "
                     "order (rounds of an interleaved sweep) and the ratio is their geometric "
                     "mean.")  # fmt: skip
    if table.attrs.get("allow_mixed_impl") and "mixed_impl" in table and table["mixed_impl"].any():
        parts.append(
            "Some rows compare MoE experts run by different implementations "
            "(--allow-mixed-impl): those ratios mix the number format with the code."
        )
    refused = table.attrs.get("refused") or []
    if refused:
        parts.append("Not compared (different experts_impl; --allow-mixed-impl compares them): "
                     + "; ".join(refused) + ".")  # fmt: skip
    if table.attrs.get("contended"):
        parts.append(
            "CONTENDED: other processes loaded the machine during some of these "
            "trials; the figures are not publishable as they are."
        )
    return " ".join(parts)


def metric_label(table: Any) -> str:
    metric = table.attrs["metric"]
    label = LABELS.get(metric, metric)
    return label if table.attrs.get("measured") else f"{label} (estimate)"


MD_SPECIAL = "\\`[]|"  # code spans, links and table cells; emphasis (* _) is only cosmetic


def md_escape(text: Any) -> str:
    """A name or path as literal Markdown text: the HTML tags, links and table pipes of a
    model path or sweep name show as typed, and a viewer that renders inline HTML runs none
    of it."""
    s = html.escape(" ".join(str(text).splitlines()), quote=False)
    return "".join("\\" + c if c in MD_SPECIAL else c for c in s)


def markdown_table(headers: list[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table, every cell escaped (it may hold a user's names)."""
    lines = [
        "| " + " | ".join(md_escape(h) for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
    ]
    lines += ["| " + " | ".join(md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def comparison_markdown(table: Any) -> str:
    headers, rows = display_rows(table)
    if not rows:
        return "_No case has a baseline to compare with._\n"
    note = (
        f"Ratio of mean {table.attrs['metric']} to the baseline {table.attrs['baseline']} "
        "within the same other keys; 95% CI on the log ratio (paired runs: t interval of the "
        "mean log ratio; otherwise the delta method with Welch df). " + basis_note(table)
    )
    if not table.attrs.get("measured"):
        note += " Energy figures are estimates, not measurements."
    return f"{markdown_table(headers, rows)}\n\n{note}\n"


def write_markdown(table: Any, path: Path) -> None:
    from tokenwatt.results.store import write_atomic

    write_atomic(path, comparison_markdown(table))


def write_csv(table: Any, path: Path) -> None:
    from tokenwatt.results.store import write_atomic

    write_atomic(path, table.to_csv(index=False))
