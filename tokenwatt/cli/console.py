"""Terminal output: a progress bar over trials and a short summary table (rich)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table

from tokenwatt.config import RunConfig
from tokenwatt.report.format import fmt, pct

err_console = Console(stderr=True)
console = Console()


@contextlib.contextmanager
def trial_progress(cfg: RunConfig, disabled: bool = False) -> Iterator[Any]:
    """Yields an on_trial(done, total) callback that drives a progress bar."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if disabled:
        yield None
        return
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]  # fmt: skip
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task(f"{cfg.name}: loading {cfg.model}", total=cfg.measure.repeats)

        def on_trial(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total,
                            description=f"{cfg.name}: trials")  # fmt: skip

        yield on_trial


def print_outcome(outcome: Any) -> None:
    s = outcome.summary
    label = "measured" if s.get("measured") else "ESTIMATE"
    t = Table(title=f"{s['name']}: {s['model']} {s['precision']} on {s['device_name']}")
    t.add_column("figure")
    t.add_column("mean", justify="right")
    t.add_column("95% CI", justify="right")
    t.add_column("CV", justify="right")
    for metric, title in [
        ("decode_j_per_token", "decode J/token"),
        ("prefill_j_per_token", "prefill J/prompt token"),
        ("total_j_per_token", "total J/generated token"),
        ("decode_tokens_per_s", "decode tokens/s"),
        ("avg_power_w", "average power W"),
    ]:
        lo, hi = s.get(f"{metric}_ci95_low"), s.get(f"{metric}_ci95_high")
        t.add_row(title, fmt(s.get(f"{metric}_mean")), f"{fmt(lo)} – {fmt(hi)}",
                  pct(s.get(f"{metric}_cv")))  # fmt: skip
    console.print(t)
    contended = " · [bold red]CONTENDED[/bold red]" if s.get("contended") else ""
    console.print(
        f"energy: {label} · scope {s['energy_scope']} · source {s['energy_source']} · "
        f"idle {fmt(s.get('idle_power_w'))} W · {s['n_trials']} trials{contended}"
    )
    for w in outcome.warnings:
        err_console.print(f"[yellow]warning[/yellow] {w}")
    console.print(f"results: {outcome.out}/results.csv, summary.csv, run.json")
