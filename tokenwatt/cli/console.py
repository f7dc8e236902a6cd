"""Terminal output: progress over every phase of a run, and a short summary table (rich)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from tokenwatt._util.reasons import by_reason, plural
from tokenwatt.cli.tables import print_table
from tokenwatt.config import RunConfig
from tokenwatt.report.format import fmt, interval, near_idle, pct

err_console = Console(stderr=True)
console = Console()


def warn(text: str) -> None:
    """One line whatever the terminal's width (a pipe or a CI log reads it whole)."""
    err_console.print(f"[yellow]warning[/yellow] {text}", highlight=False, soft_wrap=True)


def say(text: str, out: Console | None = None, path: bool = False) -> None:
    """Prose: wrapped between words on a terminal, one line in a pipe (nothing folded). A line
    naming a path (`path`) stays one line on a terminal too, so that a copied path is whole."""
    out = out or console
    out.print(text, highlight=False, soft_wrap=path or not out.is_terminal)


class RunProgress:
    """One line per phase with its elapsed time (frozen when the phase ends), a bar over the
    trials with an ETA from the trials done so far. Drives a rich Progress."""

    def __init__(self, progress: Any, name: str, repeats: int) -> None:
        self.progress, self.name, self.repeats = progress, name, repeats
        self.task: Any = None
        self.trials_started = 0.0

    def on_phase(self, event: str, text: str) -> None:
        if event == "warning":
            self.progress.console.print(f"[yellow]warning[/yellow] {text}", highlight=False)
            return
        self._finish()
        trials = event == "trials"
        self.task = self.progress.add_task(f"{self.name}: {text}", trials=trials,
                                           total=self.repeats if trials else None,
                                           trial_s=None, last=None)  # fmt: skip
        self.trials_started = time.monotonic()

    def on_trial(self, done: int, total: int) -> None:
        if self.task is None or not self.progress.tasks[self.task].fields.get("trials"):
            self.on_phase("trials", f"trials: {total}")
        now = time.monotonic()
        trial_s = (now - self.trials_started) / done if done else None
        self.progress.update(self.task, completed=done, total=total, trial_s=trial_s, last=now)

    def close(self) -> None:
        self._finish()

    def _finish(self) -> None:
        if self.task is not None:
            task = self.progress.tasks[self.task]
            if not task.fields.get("trials"):
                self.progress.update(self.task, total=1, completed=1)
            self.progress.stop_task(self.task)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}"


def _seconds(seconds: float | None) -> str:
    """`0.4 s`, `12 s`, then `0:03:25`: a short phase's time is worth its decimal."""
    if seconds is None:
        return ""
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 60 else _clock(seconds)


def _progress_columns() -> list[Any]:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        ProgressColumn,
        SpinnerColumn,
        TextColumn,
    )
    from rich.table import Column

    class Eta(ProgressColumn):
        """Trials left x the mean time of the trials done, counting down between trials."""

        def render(self, task: Any) -> Any:
            per, last = task.fields.get("trial_s"), task.fields.get("last")
            if not per or task.finished or task.total is None:
                return Text("")
            left = per * (task.total - task.completed) - (time.monotonic() - last)
            return Text(f"ETA {_clock(max(left, 0.0))}", style="progress.remaining")

    class Elapsed(ProgressColumn):
        def render(self, task: Any) -> Any:
            return Text(_seconds(task.finished_time if task.finished else task.elapsed),
                        style="progress.elapsed")  # fmt: skip

    class TrialsOnly(ProgressColumn):
        """A column shown on the trials line only (a phase has no bar or count)."""

        def __init__(self, column: Any) -> None:
            super().__init__()
            self.column = column

        def render(self, task: Any) -> Any:
            return self.column.render(task) if task.fields.get("trials") else Text("")

    # The description gives way (ellipsis) before the numbers do on a narrow terminal.
    text = Column(no_wrap=True, overflow="ellipsis", ratio=1)
    return [SpinnerColumn(finished_text="[green]✓[/green]"),
            TextColumn("{task.description}", table_column=text),
            TrialsOnly(BarColumn(bar_width=20)), TrialsOnly(MofNCompleteColumn()), Elapsed(),
            Eta()]  # fmt: skip


@contextlib.contextmanager
def run_progress(cfg: RunConfig, disabled: bool = False) -> Iterator[tuple[Any, Any]]:
    """Yields (on_trial, on_phase) for `run_config`. Disabled: warnings still print."""
    from rich.progress import Progress

    if disabled:
        yield None, lambda event, text: warn(text) if event == "warning" else None
        return
    with Progress(*_progress_columns(), console=err_console) as progress:
        tracker = RunProgress(progress, cfg.name, cfg.measure.repeats)
        try:
            yield tracker.on_trial, tracker.on_phase
        finally:
            tracker.close()


METRICS = [
    ("decode_j_per_token", "decode J/token"),
    ("prefill_j_per_token", "prefill J/prompt token"),
    ("total_j_per_token", "total J/generated token"),
    ("decode_tokens_per_s", "decode tokens/s"),
    ("avg_power_w", "average power W"),
]


# A served engine's windows (engine openai): no prefill/decode split, latencies instead.
SERVED_METRICS = [
    ("total_j_per_token", "J/generated token"),
    ("decode_tokens_per_s", "tokens/s"),
    ("avg_power_w", "average power W"),
    ("ttft_s_median", "time to first token s (median)"),
    ("itl_s_median", "inter-token latency s (median)"),
]


SUMMARY_DROPPABLE = ("CV", "95% CI")  # on a narrow terminal: the mean is the figure


def summary_table(s: dict[str, Any], windows: list[dict[str, Any]] | None = None) -> Table:
    title = f"{s['name']}: {s['model']} {s['precision']} on {s['device_name']}"
    engine = s.get("engine")
    t = Table(title=title + (f" · engine {engine}" if engine and engine != "transformers"
                             else ""))  # fmt: skip
    t.add_column("figure")
    t.add_column("mean", justify="right")
    t.add_column("95% CI", justify="right")
    t.add_column("CV", justify="right")
    served = [w for w in windows or [] if w.get("window") not in (None, "whole-run")]
    by_window = "ttft_s_median_mean" in s  # a served run: its figures are per window
    for summary in [s, *served]:
        n = summary.get("n_trials")
        metrics = SERVED_METRICS if by_window else METRICS
        for metric, name in metrics:  # every one is a positive quantity
            label = f"{name} ({summary['window']})" if by_window else name
            ci = interval(summary.get(f"{metric}_ci95_low"), summary.get(f"{metric}_ci95_high"),
                          n)  # fmt: skip
            t.add_row(label, fmt(summary.get(f"{metric}_mean")), ci,
                      pct(summary.get(f"{metric}_cv")))  # fmt: skip
    return t


def idle_note(s: dict[str, Any]) -> str | None:
    """A note when the load power cannot be told from idle power."""
    avg, idle = s.get("avg_power_w_mean"), s.get("idle_power_w")
    if not near_idle(avg, idle):
        return None
    return (f"average power {fmt(avg)} W is within {abs(avg / idle - 1):.1%} of idle "
            f"{fmt(idle)} W: this run is indistinguishable from idle, so the dynamic (above "
            "idle) figures are meaningless and the totals are mostly idle power")  # fmt: skip


def print_outcome(outcome: Any) -> None:
    s = outcome.summary
    label = ("SIMULATED" if "simulated" in str(s.get("energy_source")) else
             "measured" if s.get("measured") else "ESTIMATE")  # fmt: skip
    print_table(summary_table(s, getattr(outcome, "windows", None)), console,
                SUMMARY_DROPPABLE, f" or read {outcome.out}/summary.csv")  # fmt: skip
    contended = " · [bold red]CONTENDED[/bold red]" if s.get("contended") else ""
    say(f"energy: {label} · scope {s['energy_scope']} · source {s['energy_source']} · "
        f"idle {fmt(s.get('idle_power_w'))} W · {s['n_trials']} trials{contended}")  # fmt: skip
    note = idle_note(s)
    if note:
        say(f"[yellow]note[/yellow] {note}", err_console)
    for w in outcome.warnings:
        warn(w)
    say(f"results: {outcome.out}/results.csv, summary.csv, run.json", path=True)


def trial_failures(outcome: Any) -> str | None:
    """One line when some trials are not ok, grouped by reason; None when every one is.

    Trials, not rows, are counted: a served trial writes one row per window, and it is bad
    when any of them is (its first bad row gives the reason)."""
    rows_of: dict[Any, list[dict[str, Any]]] = {}
    for row in outcome.trials:
        rows_of.setdefault(row.get("trial"), []).append(row)
    bad = [next(r for r in rows if r.get("status") != "ok") for rows in rows_of.values()
           if any(r.get("status") != "ok" for r in rows)]  # fmt: skip
    if not bad:
        return None
    status = " or ".join(sorted({str(r.get("status")) for r in bad}))
    good = len(rows_of) - len(bad)
    return (f"{len(bad)} of {plural(len(rows_of), 'trial')} {status}: "
            f"{by_reason(r.get('status_reason') for r in bad)}; the summary uses the {good} "
            f"good one{'' if good == 1 else 's'}, every row is in {outcome.out}")  # fmt: skip
