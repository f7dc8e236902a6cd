"""Figures of a results folder (matplotlib, Agg backend), each saved as PNG and SVG.

Inputs are the per-case table of `tokenwatt.analysis.compare.case_stats` and the run records of
run.json. Every energy axis says its unit and, when any figure is not measured, "estimate".

The power trace reads run.json trials[i]["trace"] (rows of t_s, channel, joules, power_w, as
`PhaseRecorder.trace()` gives them) and trials[i]["marks"] ([{"phase", "t_s"}], the phase
marks on the same clock). Without a trace it draws the phase-average power that the phase
joules and seconds imply, and says so in the title.
"""

from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHASE_COLOURS = {"prefill": "#f2a65a", "decode": "#6a9fd4"}
KEY_SHORT = {"batch_size": "b", "prompt_tokens": "p", "new_tokens": "n"}


@dataclass
class Figure:
    stem: str
    title: str
    png: Path
    svg: Path


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    matplotlib.rcParams["svg.fonttype"] = "none"  # SVG text stays text: searchable, editable
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, folder: Path, stem: str, title: str) -> Figure:
    folder.mkdir(parents=True, exist_ok=True)
    png, svg = folder / f"{stem}.png", folder / f"{stem}.svg"
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    fig.savefig(svg)
    _plt().close(fig)
    return Figure(stem, title, png, svg)


def energy_unit(measured: bool, unit: str = "J") -> str:
    return unit if measured else f"{unit}, estimate"


def _all_measured(stats: Any) -> bool:
    return bool("measured" in stats and stats["measured"].astype(bool).all())


def _num(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _short(key: str, value: Any) -> str:
    if key == "model":
        return str(value).removeprefix("preset:").rstrip("/").split("/")[-1]
    return f"{KEY_SHORT[key]}{value}" if key in KEY_SHORT else str(value)


def varying(stats: Any, exclude: tuple[str, ...] = ()) -> list[str]:
    from tokenwatt.analysis.compare import CASE_KEYS

    return [k for k in CASE_KEYS if k in stats and k not in exclude and stats[k].nunique() > 1]


def case_label(row: Any, keys: list[str]) -> str:
    return " ".join(_short(k, row[k]) for k in keys) or str(row.get("precision", "case"))


# --- power trace -------------------------------------------------------------------------------


def plot_power_trace(run: dict[str, Any], folder: Path, stem: str = "power_trace") -> Figure | None:
    """Power over one trial (the last: warm), phases shaded, idle power marked."""
    trials = run.get("trials") or []
    if not trials:
        return None
    trial = trials[-1]
    measured = bool(run.get("summary", {}).get("measured"))
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    if trial.get("trace"):
        peak = _draw_trace(ax, trial)
        kind = "power trace"
    else:
        peak = _draw_phase_average(ax, trial)
        kind = "phase-average power (no power trace recorded)"
    idle = _num(run.get("idle_power_w"))
    if math.isfinite(idle):
        ax.axhline(idle, color="grey", ls="--", lw=1, label=f"idle {idle:.3g} W")
    cfg = run.get("config", {})
    w = cfg.get("workload", {})
    ax.set_title(
        f"{kind}, trial {trial.get('trial', len(trials) - 1)}: {cfg.get('precision')} "
        f"b{w.get('batch_size')} p{w.get('prompt_tokens')} n{w.get('new_tokens')}",
        fontsize=10,
    )
    ax.set_xlabel("time since the trial started (s)")
    ax.set_ylabel(f"power ({energy_unit(measured, 'W')})")
    top = max(peak, idle if math.isfinite(idle) else 0.0)
    ax.set_ylim(0, 1.15 * top if top > 0 else 1)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, folder, stem, f"Power during one trial ({kind})")


def _draw_phase_average(ax: Any, trial: dict[str, Any]) -> float:
    """One repetition's prefill then decode, each at its average power."""
    reps = max(1, int(trial.get("repetitions") or 1))
    t, peak = 0.0, 0.0
    for phase in ("prefill", "decode"):
        p = (trial.get("phases") or {}).get(phase)
        if not p or not p.get("seconds"):
            continue
        seconds = p["seconds"] / reps
        watts = sum(v for v in p["joules"].values() if v is not None) / p["seconds"]
        ax.axvspan(t, t + seconds, color=PHASE_COLOURS[phase], alpha=0.3, label=phase)
        ax.hlines(
            watts,
            t,
            t + seconds,
            color="black",
            lw=2,
            label="phase-average power" if phase == "decode" else None,
        )
        t, peak = t + seconds, max(peak, watts)
    ax.set_xlim(0, t or 1)
    return peak


def _draw_trace(ax: Any, trial: dict[str, Any]) -> float:
    rows = trial["trace"]
    marks = trial.get("marks") or []
    t0 = marks[0]["t_s"] if marks else min(r["t_s"] for r in rows)
    peak = 0.0
    for channel in sorted({r["channel"] for r in rows}):
        ts, ws = _channel_power([r for r in rows if r["channel"] == channel])
        ax.step([t - t0 for t in ts], ws, where="post", lw=1, label=channel)
        peak = max([peak, *ws])
    for a, b in zip(marks, marks[1:]):
        if a["phase"] in PHASE_COLOURS:
            ax.axvspan(
                a["t_s"] - t0,
                b["t_s"] - t0,
                color=PHASE_COLOURS[a["phase"]],
                alpha=0.25,
                label=a["phase"] if a is _first_of(marks, a["phase"]) else None,
            )
    return peak


def _first_of(marks: list[dict[str, Any]], phase: str) -> dict[str, Any] | None:
    return next((m for m in marks if m["phase"] == phase), None)


def _channel_power(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Instant power where the meter gives it, else the counter's slope between samples."""
    if all(r.get("power_w") is not None for r in rows):
        return [r.get("power_t_s") or r["t_s"] for r in rows], [r["power_w"] for r in rows]
    ts, ws = [], []
    for a, b in zip(rows, rows[1:]):
        if b["t_s"] > a["t_s"]:
            ts.append(a["t_s"])
            ws.append((b["joules"] - a["joules"]) / (b["t_s"] - a["t_s"]))
    return ts, ws


# --- energy per token per case ------------------------------------------------------------------


def plot_j_per_token_cases(stats: Any, folder: Path, stem: str = "j_per_token") -> Figure | None:
    """Prefill and decode energy per generated token, stacked, with the total's 95% CI."""
    need = ("prefill_j_per_gen_token_mean", "decode_j_per_gen_token_mean")
    if stats.empty or not all(c in stats for c in need):
        return None
    plt = _plt()
    keys = varying(stats)
    labels = [case_label(r, keys) for _, r in stats.iterrows()]
    pre, dec = stats[need[0]].to_numpy(), stats[need[1]].to_numpy()
    ticks, rotation, per_case = _case_ticks(labels)
    # Vertical labels take height, not width: the plot keeps its 3 inches above them.
    below = TICK_CHAR_IN * max(map(len, ticks)) if rotation else 0.0
    fig, ax = plt.subplots(figsize=(max(5.0, per_case * len(stats) + 3), 4 + below))
    x = list(range(len(stats)))
    ax.bar(x, pre, color=PHASE_COLOURS["prefill"], label="prefill")
    ax.bar(x, dec, bottom=pre, color=PHASE_COLOURS["decode"], label="decode")
    if "total_j_per_token_mean" in stats:
        mean = stats["total_j_per_token_mean"].to_numpy()
        down, up = _yerr(mean, stats["total_j_per_token_ci95_low"],
                         stats["total_j_per_token_ci95_high"], stats.get("ci_n"))  # fmt: skip
        has = [i for i in x if down[i] or up[i]]  # no bar where no interval (n < 3)
        ax.errorbar([x[i] for i in has], [mean[i] for i in has], fmt="none", ecolor="black",
                    yerr=[[down[i] for i in has], [up[i] for i in has]], capsize=4,
                    label="95% CI (none below 3 trials)")  # fmt: skip
    ax.set_xticks(x, ticks, rotation=rotation, fontsize=8)
    ax.set_xlabel("case (" + ", ".join(keys) + ")" if keys else "case")
    ax.set_ylabel(f"energy per generated token ({energy_unit(_all_measured(stats))})")
    ax.set_title("Energy per generated token: prefill + decode", fontsize=10)
    # Beside the axes, where it never hides a bar.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    return _save(fig, folder, stem, "Energy per generated token per case, prefill and decode")


TICK_CHAR_IN = 0.075  # width of one character of 8-point tick text, in inches
WRAP = 14


def _case_ticks(labels: list[str]) -> tuple[list[str], int, float]:
    """Case labels that never overlap: (tick texts, rotation, inches per case). Up to 8 cases,
    horizontal and wrapped at spaces, each case as wide as its longest line; more, vertical
    on one line each (a text line's height is well under the 0.45 inch a case gets)."""
    if len(labels) > 8:
        return labels, 90, 0.45
    wrapped = [textwrap.fill(t, WRAP, break_long_words=False) for t in labels]
    longest = max((len(line) for t in wrapped for line in t.splitlines()), default=1)
    return wrapped, 0, max(0.7, TICK_CHAR_IN * longest + 0.25)


def _yerr(mean: Any, lo: Any, hi: Any, n: Any = None) -> list[list[float]]:
    """Error bar lengths; an undefined CI, or one from fewer than 3 trials (not informative),
    draws none; a bar never goes below 0."""
    from tokenwatt.report.format import informative

    down, up = [], []
    ns = list(n) if n is not None else [None] * len(list(mean))
    for m, a, b, k in zip(mean, lo, hi, ns):
        ok = all(math.isfinite(_num(v)) for v in (m, a, b)) and informative(k)
        down.append(min(m, m - a) if ok else 0.0)
        up.append(b - m if ok else 0.0)
    return [down, up]


# --- against batch size / context length --------------------------------------------------------


def plot_vs(stats: Any, x: str, folder: Path, metric: str = "decode_j_per_token") -> Figure | None:
    """The metric against batch size or prompt length, one line per precision (and per other
    key that varies)."""
    col = f"{metric}_mean"
    if stats.empty or x not in stats or col not in stats:
        return None
    others = varying(stats, exclude=(x,))
    groups = list(stats.groupby(others, sort=False)) if others else [((), stats)]
    lines = [(k, g) for k, g in groups if g[x].nunique() > 1]
    if not lines:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for _key, g in lines:
        g = g.assign(_x=g[x].map(_num)).sort_values("_x")
        row = g.iloc[0]
        err = _yerr(g[col], g[f"{metric}_ci95_low"], g[f"{metric}_ci95_high"], g.get("ci_n"))
        ax.errorbar(g["_x"], g[col], yerr=err, marker="o", capsize=3, label=case_label(row, others))
    xs = sorted({_num(v) for v in stats[x]})
    if xs[0] > 0 and xs[-1] / xs[0] >= 4:
        ax.set_xscale("log", base=2)
    ax.set_xticks(xs, [f"{v:g}" for v in xs])
    ax.minorticks_off()
    what = {
        "batch_size": "batch size (sequences)",
        "prompt_tokens": "context length at decode start (prompt tokens)",
    }.get(x, x)
    ax.set_xlabel(what)
    ax.set_ylabel(f"decode energy per token ({energy_unit(_all_measured(stats))})")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Decode energy per token vs {what.split(' (')[0]}", fontsize=10)
    ax.legend(fontsize=8, title=", ".join(others) or None, title_fontsize=8)
    return _save(fig, folder, f"j_per_token_vs_{x}", f"Decode J/token against {what}")


# --- energy against fidelity ---------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indexes of the points no other point beats on both energy (lower) and fidelity."""
    front = []
    for i, (e, f) in enumerate(points):
        beaten = any(
            (e2 <= e and (f2 >= f if higher_is_better else f2 <= f)) and (e2, f2) != (e, f)
            for j, (e2, f2) in enumerate(points)
            if j != i
        )
        if not beaten:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def plot_pareto(stats: Any, folder: Path, metric: str = "decode_j_per_token") -> Figure | None:
    """Energy against output fidelity, one point per case, the Pareto front drawn."""
    col = f"{metric}_mean"
    fid, higher, label = _fidelity_axis(stats)
    if fid is None or col not in stats:
        return None
    data = stats[stats[fid].map(_num).notna() & stats[col].map(_num).notna()]
    if len(data) < 2:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    others = varying(data, exclude=("precision",))
    groups = list(data.groupby(others, sort=False)) if others else [((), data)]
    for i, (_, g) in enumerate(groups):
        pts = list(zip(g[col].map(_num), g[fid].map(_num)))
        sc = ax.scatter(*zip(*pts), label=case_label(g.iloc[0], others) if others else None)
        for (e, f), p in zip(pts, g["precision"]):
            ax.annotate(str(p), (e, f), textcoords="offset points", xytext=(4, 4), fontsize=8)
        front = [pts[i] for i in pareto_front(pts, higher)]
        colour = sc.get_facecolor()[0]
        ax.step(*zip(*front), where="post" if higher else "pre", color=colour, alpha=0.6, lw=1)
        ax.scatter(
            *zip(*front),
            s=160,
            facecolors="none",
            edgecolors=colour,
            lw=1.2,
            label="Pareto front" if i == 0 else None,
        )
    ax.set_xlabel(f"decode energy per token ({energy_unit(_all_measured(data))})")
    ax.set_ylabel(label)
    ax.set_title("Energy against fidelity: Pareto front of precisions", fontsize=10)
    ax.legend(fontsize=8, title=", ".join(others) or None, title_fontsize=8)
    return _save(fig, folder, "energy_vs_fidelity", "Energy against output fidelity (Pareto)")


def _fidelity_axis(stats: Any) -> tuple[str | None, bool, str]:
    for col, higher, label in (
        ("top1_agreement", True, "top-1 agreement with the reference (fraction)"),
        ("kl_divergence", False, "KL divergence from the reference (nats)"),
    ):
        if col in stats and stats[col].map(_num).notna().sum() >= 2:
            return col, higher, label
    return None, True, ""


def all_plots(stats: Any, runs: list[dict[str, Any]], folder: Path) -> list[Figure]:
    """Every figure that the data supports."""
    figs = [
        plot_power_trace(runs[-1], folder) if runs else None,
        plot_j_per_token_cases(stats, folder),
        plot_vs(stats, "batch_size", folder),
        plot_vs(stats, "prompt_tokens", folder),
        plot_pareto(stats, folder),
    ]
    return [f for f in figs if f is not None]
