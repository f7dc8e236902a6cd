"""`tokenwatt validate`: a results folder checked against itself before it is shared.

Every derived figure of a trial row is recomputed from its raw columns (J/token from joules
and tokens, rates from seconds, dynamic from gross and idle, each board's figures and their
sum, the carbon columns from energy, intensity and PUE); every summary row from its trials
(counts, means, spreads and 95% intervals by the same statistics); run.json against the CSVs;
no row twice. Each problem is one line naming the file, the row and the column. `publishable`
also fails on estimates, contended trials and runs the quality rule does not pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.results.columns import (
    RESULTS_CSV,
    RUN_JSON,
    SERVING_METRICS,
    SUMMARY_CSV,
    SUMMARY_METRICS,
)

REL_TOL = 1e-6  # CSV holds each float's repr: a recomputed figure agrees to rounding
STATS = ("mean", "std", "cv", "ci95_low", "ci95_high")


@dataclass(frozen=True)
class Problem:
    file: str  # results.csv, summary.csv, run.json
    row: int | None  # the CSV line (header = 1), None for a whole-file problem
    column: str
    message: str
    key: str = ""  # run and trial, so a reader finds the row by id too

    def line(self, folder: str) -> str:
        at = "" if self.row is None else (f" row {self.row}" if self.file.endswith(".parquet")
                                         else f" line {self.row}")  # fmt: skip
        key = f" ({self.key})" if self.key else ""
        col = f" {self.column}:" if self.column else ""
        return f"{folder}/{self.file}{at}{key}:{col} {self.message}"


def validate(folder: str | Path, publishable: bool = False) -> list[Problem]:
    """Every problem of one results folder or exported dataset (none: it is consistent)."""
    from tokenwatt.publish.export import RUNS, TRIALS, is_dataset
    from tokenwatt.results.load import load_results

    p = Path(folder)
    dataset = is_dataset(p)
    if not dataset and not (p / RESULTS_CSV).is_file():
        raise UserError(f"validate: {str(p)!r} has no {RESULTS_CSV} (nor {TRIALS}); give a "
                        "tokenwatt results folder or an exported dataset")  # fmt: skip
    files = (TRIALS, RUNS) if dataset else (RESULTS_CSV, SUMMARY_CSV)
    first = 0 if dataset else 2  # a parquet row's index; a CSV's line (its header is line 1)
    trials = _records(load_results(p), files[0], first)
    has_summary = dataset or (p / SUMMARY_CSV).is_file()
    summaries = _records(load_results(p, summary=True), files[1], first) if has_summary else []
    problems = [*_schema(p, files, dataset), *_duplicates(trials, summaries)]
    problems += _empty(trials) + _empty(summaries)
    for line, row in _ok(trials):
        problems += _trial(row, line)
    problems += _summaries(trials, summaries)
    if not dataset:  # a dataset keeps no run.json: its runs are its runs table
        problems += _run_json(p, trials, summaries)
    if publishable:
        problems += _not_publishable(trials, summaries)
    return problems


# --- the schema: every column declared, every cell of its type, none empty that may not be ----


def _schema(folder: Path, files: tuple[str, ...], dataset: bool) -> list[Problem]:
    """Columns the schema does not declare for their file, and cells not of their column's
    type (read as text, so a cell the loader would turn into a missing value is seen)."""
    import pandas as pd

    from tokenwatt.results.schema import column

    problems = []
    for file, kind in zip(files, ("results", "summary")):
        path = folder / file
        if not path.is_file():
            continue
        raw = (
            pd.read_parquet(path)
            if dataset
            else pd.read_csv(path, dtype=str, keep_default_na=False)
        )
        first = 0 if dataset else 2
        for name in raw.columns:
            c = column(name, kind)
            if c is None:
                problems.append(Problem(file, None, name, "not a column of the results schema "
                                        "(docs/results-schema.md)"))  # fmt: skip
            elif not dataset and c.dtype in PARSERS:
                problems += [
                    Problem(file, i + first, name, f"{v!r} is not {c.dtype}")
                    for i, v in enumerate(raw[name])
                    if v and not _parses(v, c.dtype)
                ]
    return problems


def _parses(text: str, dtype: str) -> bool:
    try:
        PARSERS[dtype](text)
    except (ValueError, OverflowError):
        return False
    return True


def _bool(text: str) -> bool:
    if text.strip().lower() not in ("true", "false", "1", "0", "1.0", "0.0"):
        raise ValueError(text)
    return True


def _int(text: str) -> int:
    value = float(text)  # pandas writes an int column with a missing cell as 3.0
    if not value.is_integer():
        raise ValueError(text)
    return int(value)


def _time(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00"))


PARSERS: dict[str, Callable[[str], Any]] = {"float": float, "int": _int, "bool": _bool,
                                             "datetime": _time}  # fmt: skip


def _empty(rows: list[dict[str, Any]]) -> list[Problem]:
    """Cells the schema says are always there (on a measured row: `unmeasured` columns) but
    are empty while other rows of the same run have them: a run written before a column
    existed (a merged dataset's older folder) lacks it on every row and is not a problem."""
    from collections import defaultdict

    from tokenwatt.results.schema import column

    written: dict[Any, set[str]] = defaultdict(set)
    for row in rows:
        written[row.get("run_id")] |= {k for k, v in row.items() if v is not None}
    problems = []
    for row in rows:
        kind = "results" if row["_file"] in (RESULTS_CSV, "trials.parquet") else "summary"
        measured = (row.get("status") or "ok") == "ok"
        for name in written[row.get("run_id")]:
            c = column(name, kind) if row.get(name) is None else None
            if c is not None and (c.empty == "never" or (c.empty == "unmeasured" and measured)):
                problems.append(Problem(row["_file"], row["_line"], name, "empty, but the "
                                        "schema says it is always there", _key(row)))  # fmt: skip
    return problems


def _records(df: Any, file: str, first: int) -> list[dict[str, Any]]:
    """Rows as plain Python values (pandas' NA as None), each with its file and line."""
    return [{k: (None if _missing(v) else v) for k, v in rec.items()}
            | {"_line": i + first, "_file": file}
            for i, rec in enumerate(df.to_dict("records"))]  # fmt: skip


def _missing(v: Any) -> bool:
    try:
        return v is None or bool(v != v)  # NaN and pandas' NA
    except TypeError:
        return True


def _ok(rows: list[dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    for row in rows:
        if (row.get("status") or "ok") == "ok":
            yield row["_line"], row


def _key(row: dict[str, Any]) -> str:
    parts = [f"run {row.get('run_id')}"]
    if row.get("trial") is not None:
        parts.append(f"trial {int(row['trial'])}")
    if row.get("window") not in (None, "whole-run"):
        parts.append(f"window {row['window']}")
    return ", ".join(parts)


# --- trial rows: every derived figure from its raw columns -----------------------------------


def _trial(row: dict[str, Any], line: int) -> list[Problem]:
    expected = dict(_served(row) if row.get("window_s") is not None else _phased(row))
    expected.update(_boards(row))
    expected.update(_carbon(row))
    return [
        p
        for col, want in expected.items()
        if (p := _compare(row["_file"], line, _key(row), col, row.get(col), want))
    ]


def _phased(r: dict[str, Any]) -> Iterator[tuple[str, float | None]]:
    """An in-process engine's trial: prefill and decode of repetitions x batch sequences."""
    reps, batch, tok, dec = (r.get(k) for k in ("repetitions", "batch_size", "tokens_generated",
                                                "decode_tokens"))  # fmt: skip
    yield "total_j", _add(r.get("prefill_j"), r.get("decode_j"))
    yield "prefill_j_per_token", _div(r.get("prefill_j"), _mul(reps, batch, r.get("prompt_tokens")))
    yield "prefill_j_per_request", _div(r.get("prefill_j"), _mul(reps, batch))
    yield "decode_j_per_token", _div(r.get("decode_j"), dec)
    yield "total_j_per_token", _div(r.get("total_j"), tok)
    yield "decode_tokens_per_s", _div(dec, r.get("decode_s"))
    yield "avg_power_w", _div(r.get("total_j"), _add(r.get("prefill_s"), r.get("decode_s")))
    yield (
        "dynamic_decode_j_per_token",
        _div(_dynamic(r.get("decode_j"), r.get("idle_power_w"), r.get("decode_s")), dec),
    )
    new = r.get("new_tokens")  # every sequence generates new_tokens: EOS is ignored
    yield "tokens_generated", _mul(reps, batch, new)
    yield "decode_tokens", _mul(reps, batch, None if new is None else new - 1)


def _served(r: dict[str, Any]) -> Iterator[tuple[str, float | None]]:
    """A served window: its joules over its seconds and the tokens streamed in it."""
    tok, j, s = r.get("tokens_generated"), r.get("total_j"), r.get("window_s")
    yield "total_j_per_token", _div(j, tok)
    yield "decode_tokens_per_s", _div(tok, s)
    yield "avg_power_w", _div(j, s)
    yield "dynamic_total_j_per_token", _div(_dynamic(j, r.get("idle_power_w"), s), tok)


def _boards(r: dict[str, Any]) -> dict[str, float | None]:
    """Each board's figures, and the row's joules as their sum."""
    n = int(r.get("boards") or 0)
    out: dict[str, float | None] = {}
    if not n:
        return out
    phased = r.get("window_s") is None
    for i in range(n):
        b = f"board{i}_"
        if phased:
            out[b + "total_j"] = _add(r.get(b + "prefill_j"), r.get(b + "decode_j"))
            out[b + "decode_j_per_token"] = _div(r.get(b + "decode_j"), r.get("decode_tokens"))
        out[b + "total_j_per_token"] = _div(r.get(b + "total_j"), r.get("tokens_generated"))
    out["total_j"] = _add(*(r.get(f"board{i}_total_j") for i in range(n)))
    return out


def _carbon(r: dict[str, Any]) -> dict[str, float | None]:
    """Leaderboard and carbon units from J/token, the row's grid intensity and PUE."""
    from tokenwatt.analysis.carbon import J_PER_KWH, g_co2_per_1k_tokens

    j = r.get("total_j_per_token") or r.get("total_j_per_token_mean")
    if not j or j <= 0:
        return {}
    out = {"tokens_per_kwh": J_PER_KWH / j}
    if r.get("new_tokens"):
        out["wh_per_1k_queries"] = j * r["new_tokens"] * 1000 / 3600
    if r.get("carbon_intensity_g_per_kwh") is not None and r.get("pue") is not None:
        out["g_co2_per_1k_tokens"] = g_co2_per_1k_tokens(j, r["carbon_intensity_g_per_kwh"],
                                                         r["pue"])  # fmt: skip
    return out


def _compare(file: str, line: int, key: str, column: str, got: Any,
             want: float | None) -> Problem | None:  # fmt: skip
    if want is None or (isinstance(want, float) and math.isnan(want)):
        return None  # the inputs are not there: nothing to recompute
    if got is None:
        return Problem(file, line, column, f"empty, but its inputs give {want:.6g}", key)
    try:
        value = float(got)
    except (TypeError, ValueError):
        return Problem(file, line, column, f"{got!r} is not a number", key)
    if math.isclose(value, want, rel_tol=REL_TOL, abs_tol=1e-12):
        return None
    return Problem(file, line, column, f"{value:.6g} but its inputs give {want:.6g}", key)


def _add(*xs: Any) -> float | None:
    return None if any(x is None for x in xs) else float(sum(xs))


def _mul(*xs: Any) -> float | None:
    return None if any(x is None for x in xs) else float(math.prod(xs))


def _div(a: Any, b: Any) -> float | None:
    return None if a is None or not b else float(a) / float(b)


def _dynamic(j: Any, idle: Any, s: Any) -> float | None:
    return None if None in (j, idle, s) else float(j) - float(idle) * float(s)


# --- summary rows: each from its run's trials ------------------------------------------------


def _summaries(trials: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[Problem]:
    from tokenwatt.analysis.stats import POSITIVE_METRICS, describe

    problems = []
    for s in summaries:
        line, key = s["_line"], _key(s)
        mine = [t for _, t in _ok(trials) if _same_run(t, s)]
        if not mine:
            problems.append(Problem(s["_file"], line, "run_id", "no ok trial row belongs to "
                                    "this summary", key))  # fmt: skip
            continue
        expect: dict[str, float | None] = {"n_trials": float(len(mine))}
        for metric in SUMMARY_METRICS + SERVING_METRICS:
            if f"{metric}_mean" in s:
                d = describe([t.get(metric) for t in mine], positive=metric in POSITIVE_METRICS)
                expect.update({f"{metric}_{k}": d[k] for k in STATS})
        expect.update(_carbon(s))
        problems += [
            p
            for col, want in expect.items()
            if (p := _compare(s["_file"], line, key, col, s.get(col), want))
        ]
        problems += _quality(s, line, key)
    return problems


def _same_run(t: dict[str, Any], s: dict[str, Any]) -> bool:
    """A trial row of the run (and window) a summary row sums up, on the same machine."""
    return (
        t.get("run_id") == s.get("run_id")
        and t.get("machine_id") == s.get("machine_id")
        and (t.get("window") or "whole-run") == (s.get("window") or "whole-run")
    )


def _quality(s: dict[str, Any], line: int, key: str) -> list[Problem]:
    """A summary's `publishable` is what the quality rule says of its own columns."""
    from tokenwatt.analysis.quality import publishable

    if s.get("publishable") is None:
        return []  # a folder from before the column existed
    want = publishable(s)["publishable"]
    if bool(s["publishable"]) == want:
        return []
    return [Problem(s["_file"], line, "publishable", f"{s['publishable']} but its own columns "
                    f"say {want}", key)]  # fmt: skip


# --- run.json and duplicates ----------------------------------------------------------------


def _run_json(folder: Path, trials: list[dict[str, Any]],
              summaries: list[dict[str, Any]]) -> list[Problem]:  # fmt: skip
    path = folder / RUN_JSON
    if not path.is_file():
        return [Problem(RUN_JSON, None, "", "missing: the runs' configs and per-trial detail "
                        "are not there")] if trials else []  # fmt: skip
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"validate: {str(path)!r} is not JSON tokenwatt wrote ({e})") from None
    runs = {str(r.get("run_id")): r for r in data.get("runs", [])}
    failures = {str(r.get("run_id")) for r in data.get("failures", [])}
    problems = []
    for s in summaries:
        if str(s.get("run_id")) not in runs:
            problems.append(Problem(SUMMARY_CSV, s["_line"], "run_id", "this run has no record "
                                    "in run.json", _key(s)))  # fmt: skip
    complete = {str(s.get("run_id")) for s in summaries}
    for run_id, run in runs.items():
        if run_id not in complete:
            problems.append(Problem(RUN_JSON, None, "runs", f"run {run_id} has no summary row"))
            continue
        trial_numbers = {t.get("trial") for t in trials if str(t.get("run_id")) == run_id}
        if len(run.get("trials", [])) != len(trial_numbers):
            problems.append(Problem(RUN_JSON, None, "trials", f"run {run_id} records "
                                    f"{len(run.get('trials', []))} trials but results.csv has "
                                    f"{len(trial_numbers)}"))  # fmt: skip
    for t in trials:
        if t.get("status") == "failed" and str(t.get("run_id")) not in failures:
            problems.append(Problem(RESULTS_CSV, t["_line"], "status", "a failed row with no "
                                    "record in run.json's failures", _key(t)))  # fmt: skip
    return problems


def _duplicates(trials: list[dict[str, Any]], summaries: list[dict[str, Any]]) -> list[Problem]:
    from tokenwatt.publish.export import RUN_KEY, TRIAL_KEY

    problems = []
    for rows, key in ((trials, TRIAL_KEY), (summaries, RUN_KEY)):
        seen: dict[tuple[Any, ...], int] = {}
        for row in rows:
            k = tuple(row.get(c) for c in key)
            if k in seen and row.get("status") != "failed":
                at = "row" if row["_file"].endswith(".parquet") else "line"
                problems.append(
                    Problem(
                        row["_file"],
                        row["_line"],
                        "run_id",
                        f"the same row as {at} {seen[k]} ({', '.join(key)})",
                        _key(row),
                    )
                )
            seen.setdefault(k, row["_line"])
    return problems


def _not_publishable(trials: list[dict[str, Any]],
                     summaries: list[dict[str, Any]]) -> list[Problem]:  # fmt: skip
    """What keeps the folder from being published: estimates, contention, unstable runs."""
    checks: list[tuple[str, Callable[[dict[str, Any]], str | None]]] = [
        ("measured", lambda r: None if r.get("measured") else
         f"an estimate, not a measurement ({r.get('energy_source')})"),
        ("contended", lambda r: f"contended ({r.get('contention_reason')})"
         if r.get("contended") else None),
    ]  # fmt: skip
    problems = [Problem(r["_file"], line, col, why, _key(r))
                for line, r in _ok(trials) for col, check in checks
                if (why := check(r))]  # fmt: skip
    for s in summaries:
        if s.get("publishable") is False or (s.get("publishable") is None and s.get("run_id")):
            why = s.get("publishable_reason") or "no publishable column (an older folder)"
            problems.append(Problem(s["_file"], s["_line"], "publishable", why, _key(s)))
    return problems
