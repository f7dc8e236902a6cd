"""Which rows of results an analysis (compare, report, plan) can use, and one line saying why
none can.

A usable trial row is an ok row of a complete run: one whose summary rows are in its folder's
summary.csv. A CSV file given by name is taken as it is. A folder whose rows all failed or never
finished is readable input that records a failure: NoUsableRow (exit 1), not a UserError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenwatt._util.reasons import by_reason, plural
from tokenwatt.errors import NoUsableRow
from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV


def complete_runs(path: str | Path) -> set[str] | None:
    """Run ids of a folder's complete runs (an empty set without summary.csv); None for a CSV
    file given by name or an old summary without run ids: every ok row of it counts."""
    from tokenwatt.results.load import load_summary

    p = Path(path)
    if p.suffix == ".csv":
        return None
    if not (p / SUMMARY_CSV).is_file():
        return set()
    summary = load_summary(p)  # a damaged summary.csv: one line, exit 2
    return set(summary["run_id"].dropna().astype(str)) if "run_id" in summary else None


def usable_trials(trials: Any, paths: Sequence[str | Path]) -> Any:
    """`ok_trials` of the rows of complete runs, each folder judged by its own summary.csv."""
    import pandas as pd

    from tokenwatt.analysis.compare import ok_trials

    keep = pd.Series(False, index=trials.index)
    for p in paths:
        here = trials["results_dir"] == _results_dir(p)
        runs = complete_runs(p)
        if runs is not None and "run_id" in trials:
            here &= trials["run_id"].astype(str).isin(runs)
        keep |= here
    return ok_trials(trials[keep])


def usable_summaries(paths: Sequence[str | Path]) -> Any:
    """The summary rows of the complete runs in `paths` (a CSV file: its rows, as given), or
    None when there are none. A path that is neither a results folder nor a file: UserError."""
    from tokenwatt.results.load import load_results, load_summary

    given = [p for p in paths if Path(p).suffix == ".csv" or (Path(p) / SUMMARY_CSV).is_file()]
    for p in paths:
        if p not in given:
            load_results(p)  # no results.csv either: not a results folder (exit 2)
    if not given:
        return None
    df = load_summary(*given)
    if "status" in df:  # a results.csv given by name: its ok rows
        df = df[df["status"].fillna("ok") == "ok"]
    return df if len(df) else None


# (status, the column with its reason, the fix); the first status present gives the fix.
NOT_USABLE = (
    ("failed", "error", "rerun the sweep with --retry-failed"),
    ("degraded", "status_reason", "check the meter or engine the reasons name, then measure again"),
    ("ok", "", "rerun the sweep (it resumes unfinished cases) or the run"),
)


def no_usable_row(command: str, paths: Sequence[str | Path]) -> NoUsableRow:
    """One line: what the input holds instead (failed and degraded rows by reason, ok rows of
    unfinished runs) and what to do."""
    import pandas as pd

    rows = _trial_rows(paths)
    status = rows["status"].fillna("ok") if "status" in rows else pd.Series("ok", rows.index)
    found = [_count(rows[status == state], state, column)
             for state, column, _ in NOT_USABLE if (status == state).any()]  # fmt: skip
    folders = [p for p in paths if Path(p).suffix != ".csv"]
    if folders and not any(complete_runs(p) for p in folders):
        found.append("no complete run")
    fix = next((fix for state, _, fix in NOT_USABLE if (status == state).any()),
               "run or sweep into it first")  # fmt: skip
    return NoUsableRow(f"{command}: no usable row in {_where(paths)}: "
                       f"{', '.join(found) or 'no row'}; {fix}")  # fmt: skip


def _count(rows: Any, state: str, column: str) -> str:
    """`4 failed rows (4 x UserError: ...)`; ok rows: how many unfinished runs they are of."""
    if state == "ok":
        runs = rows["run_id"].nunique() if "run_id" in rows else 1
        return f"{plural(len(rows), 'ok row')} of {plural(runs, 'unfinished run')}"
    reasons = rows[column] if column in rows else [None] * len(rows)
    return f"{plural(len(rows), state + ' row')} ({by_reason(reasons, shown=2)})"


def _trial_rows(paths: Sequence[str | Path]) -> Any:
    import pandas as pd

    from tokenwatt.results.load import load_results

    files = [p for p in paths if Path(p).suffix == ".csv" or (Path(p) / RESULTS_CSV).is_file()]
    return load_results(*files) if files else pd.DataFrame()


def _results_dir(path: str | Path) -> str:
    """The `results_dir` that load_results writes on a path's rows."""
    p = Path(path)
    return str(p.parent if p.suffix == ".csv" else p)


def _where(paths: Sequence[str | Path]) -> str:
    names = [str(p) for p in paths]
    return names[0] if len(names) == 1 else f"{names[0]} and {plural(len(names) - 1, 'other')}"
