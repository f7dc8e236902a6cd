"""Reading results folders into pandas: `tokenwatt.load_results`.

Columns get the dtypes results/schema.py declares; files of an older `schema_version` are
migrated to today's names and meanings (MIGRATIONS), a newer one is refused in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.results.columns import RESULTS_CSV, SCHEMA_VERSION, SUMMARY_CSV
from tokenwatt.results.schema import RESULTS, SUMMARY, column, pandas_dtypes


def load_results(*paths: str | Path, summary: bool = False) -> Any:
    """A pandas DataFrame of the trial rows (or summary rows) of one or many result folders.

    Ready for a notebook as it is: every declared column has its schema dtype (`measured`,
    `emulated`, ... nullable booleans, so `df[df.measured]` works with failed rows;
    `timestamp_utc` a UTC datetime; counts Int64 where a cell may be empty), older files read
    under today's names (`flags` as `summary_flags`), and `results_dir` says where a row came
    from.
    """
    import pandas as pd

    kind, name = (SUMMARY, SUMMARY_CSV) if summary else (RESULTS, RESULTS_CSV)
    frames = []
    for p in paths:
        p = Path(p)
        table = p / (DATASET_RUNS if summary else DATASET_TRIALS)
        if p.is_dir() and (p / DATASET_TRIALS).is_file():  # an exported dataset
            frames.append(_read_parquet(table, p))
            continue
        csv_path = p if p.suffix == ".csv" else p / name
        if not csv_path.is_file():
            raise UserError(f"results: {str(csv_path)!r} not found; give a tokenwatt results "
                            "folder or an exported dataset")  # fmt: skip
        df = _read_csv(csv_path, kind, trials=not summary).copy()  # defragmented: one insert
        df["results_dir"] = str(csv_path.parent)
        frames.append(df)
    if not frames:
        raise UserError("results: give at least one results folder")
    versions = [_version(df) for df in frames]
    _check_versions(frames, versions)
    frames = [migrate(df, v) for df, v in zip(frames, versions, strict=True)]
    return typed(pd.concat(frames, ignore_index=True, sort=False), kind)


def load_summary(*paths: str | Path) -> Any:
    return load_results(*paths, summary=True)


# An exported dataset (tokenwatt export): its tables, written with the schema's dtypes, and
# its folder of power traces.
DATASET_TRIALS, DATASET_RUNS, DATASET_TIMELINES = "trials.parquet", "runs.parquet", "timelines"


def _read_parquet(path: Path, dataset: Path) -> Any:
    """One table of an exported dataset; a row's `results_dir` is the dataset."""
    import pandas as pd

    from tokenwatt._util.extras import require

    require("publish", f"reading the dataset {str(dataset)!r}")
    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError) as e:
        raise UserError(f"results: {str(path)!r} is not a parquet table tokenwatt can read "
                        f"({type(e).__name__}); export the dataset again") from None  # fmt: skip
    df["results_dir"] = str(dataset)
    return df


def _read_csv(path: Path, kind: str, trials: bool) -> Any:
    """A results CSV, its text columns read as text (a case_id such as `1234e5678901` stays
    an id, not a float), or one line saying why it is not one (empty, garbage, someone
    else's: trial rows without schema_version and run_id; summaries are judged by their
    readers)."""
    import pandas as pd

    try:
        header = list(pd.read_csv(path, nrows=0).columns)
        df = pd.read_csv(path, dtype=_text_columns(header, kind))
    except pd.errors.EmptyDataError:
        raise UserError(f"results: {str(path)!r} is empty; run or sweep into the folder first, "
                        "or give another results folder") from None  # fmt: skip
    except (ValueError, UnicodeDecodeError, OSError) as e:  # pandas' ParserError: a ValueError
        why = type(e).__name__
        raise UserError(f"results: {str(path)!r} is not a CSV tokenwatt can read ({why}); "
                        "give a tokenwatt results folder") from None  # fmt: skip
    if trials and not {"schema_version", "run_id"} & set(df.columns):
        raise UserError(f"results: {str(path)!r} is not a tokenwatt results file (no "
                        "schema_version or run_id column); give a tokenwatt results "
                        "folder")  # fmt: skip
    return df


def _text_columns(header: list[str], kind: str) -> dict[str, str]:
    """{name: "str"} for the columns declared as text, under today's name or an older one."""
    out = {}
    for name in header:
        c = column(RENAMED.get(name, name), kind)
        if c is not None and c.dtype in ("string", "json"):
            out[name] = "str"
    return out


# --- versions and migrations -----------------------------------------------------------------


def _version(df: Any) -> int:
    """A file's schema_version (its oldest, should a file hold several); current without the
    column."""
    import pandas as pd

    if "schema_version" not in df:
        return SCHEMA_VERSION
    seen = pd.to_numeric(df["schema_version"], errors="coerce").dropna()
    return int(seen.min()) if len(seen) else SCHEMA_VERSION


def _check_versions(frames: list[Any], versions: list[int]) -> None:
    """Older versions are migrated; a newer one is refused, in one line."""
    seen: dict[int, str] = {}
    for df, v in zip(frames, versions, strict=True):
        seen.setdefault(v, df["results_dir"].iloc[0] if len(df) else "?")
    newer = [v for v in seen if v > SCHEMA_VERSION]
    if not newer:
        return
    if len(seen) > 1:
        (a, da), (b, db) = sorted(seen.items())[:2]
        raise UserError(
            f"results: {da!r} has schema_version {a} but {db!r} has {b}; their columns do not "
            "mean the same, so load them separately or re-measure one with this tokenwatt"
        )
    raise UserError(
        f"results: {seen[newer[0]]!r} has schema_version {newer[0]}, newer than this "
        f"tokenwatt reads ({SCHEMA_VERSION}); upgrade tokenwatt"
    )


# Column names that changed without a change of meaning, so without a bump: old -> today's.
# `flags` shadowed pandas' DataFrame.flags.
RENAMED = {"flags": "summary_flags"}


def _renamed(df: Any) -> Any:
    for old, new in RENAMED.items():
        if old in df:  # both, in a folder appended to across versions: the old fills the gaps
            df[new] = df[new].combine_first(df[old]) if new in df else df[old]
            df = df.drop(columns=old)
    return df


@dataclass(frozen=True)
class Migration:
    version: int  # reads a frame of this schema_version
    to: int  # and gives one of this: version + 1 for a bump, version for a rename in place
    why: str
    apply: Callable[[Any], Any]


# In order. A bump (a column changed meaning or unit) adds Migration(N, N + 1, ...) that turns
# version-N columns into version N + 1's: renamed, rescaled, recomputed.
MIGRATIONS = (
    Migration(1, 1, "`flags` renamed `summary_flags` (it shadowed DataFrame.flags)", _renamed),
)


def migrate(df: Any, version: int) -> Any:
    """A frame of `version` with today's columns and meanings (schema_version set to today's)."""
    v = version
    for m in sorted(MIGRATIONS, key=lambda m: (m.version, m.to)):
        if m.version == v:
            df, v = m.apply(df), m.to
    if v != SCHEMA_VERSION:
        where = df["results_dir"].iloc[0] if len(df) and "results_dir" in df else "?"
        raise UserError(f"results: {where!r} has schema_version {version}, which this "
                        "tokenwatt cannot read; load it with the tokenwatt that wrote "
                        "it")  # fmt: skip
    if "schema_version" in df and version != SCHEMA_VERSION:
        df["schema_version"] = SCHEMA_VERSION
    return df


# --- dtypes ----------------------------------------------------------------------------------


def typed(df: Any, kind: str) -> Any:
    """Every declared column of `df` in its schema dtype (undeclared ones as pandas read
    them): a cell that does not parse becomes missing (`tokenwatt validate` names it)."""
    converted = {name: _as(df[name], dtype) for name, dtype in pandas_dtypes(df.columns, kind)
                 .items()}  # fmt: skip
    for name, values in converted.items():
        df[name] = values
    return df.copy()  # defragmented


def _as(s: Any, dtype: str) -> Any:
    import pandas as pd

    if dtype == "boolean":
        return s.map(_boolean).astype("boolean")
    if dtype == "str":
        return s.astype("str")
    if dtype.startswith("datetime"):
        return pd.to_datetime(s, utc=True, errors="coerce", format="ISO8601").astype(dtype)
    n = pd.to_numeric(s, errors="coerce")
    if dtype == "float64":
        return n.astype("float64")
    if not ((n % 1 == 0) | n.isna()).all():
        return n.astype("float64")  # a fraction in an int column: kept, for validate to name
    # An int column a file leaves empty (an older folder without it) is nullable even where
    # the schema says never.
    return n.astype("Int64" if dtype == "Int64" or n.isna().any() else "int64")


def _boolean(v: Any) -> Any:
    """True/False from a bool, "True"/"False" (any case) or 1/0; pandas' NA otherwise."""
    import pandas as pd

    if isinstance(v, str):
        return {"true": True, "false": False, "1": True, "0": False}.get(v.strip().lower(), pd.NA)
    try:
        f = float(v)
    except (TypeError, ValueError):
        return pd.NA
    return pd.NA if f != f else bool(f)
