"""Reading results folders into pandas: `tokenwatt.load_results`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.results.columns import RESULTS_CSV, SCHEMA_VERSION, SUMMARY_CSV


def load_results(*paths: str | Path, summary: bool = False) -> Any:
    """A pandas DataFrame of the trial rows (or summary rows) of one or many result folders.

    Ready for a notebook as it is (see `tidy`): `measured`, `emulated`, ... are nullable
    booleans, so `df[df.measured]` works with failed rows; `timestamp_utc` is a UTC datetime;
    the summary's flags are `summary_flags` in old and new files alike.
    """
    import pandas as pd

    name = SUMMARY_CSV if summary else RESULTS_CSV
    frames = []
    for p in paths:
        p = Path(p)
        csv_path = p if p.suffix == ".csv" else p / name
        if not csv_path.is_file():
            raise UserError(
                f"results: {str(csv_path)!r} not found; give a tokenwatt results folder"
            )
        df = tidy(_read_csv(csv_path, trials=not summary)).copy()  # defragmented: one insert
        df["results_dir"] = str(csv_path.parent)
        frames.append(df)
    if not frames:
        raise UserError("results: give at least one results folder")
    _check_schema(frames)
    return pd.concat(frames, ignore_index=True, sort=False)


def _read_csv(path: Path, trials: bool) -> Any:
    """A results CSV, or one line saying why it is not one (empty, garbage, someone else's:
    trial rows without schema_version and run_id; summaries are judged by their readers)."""
    import pandas as pd

    try:
        df = pd.read_csv(path)
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


# Column names of older files -> today's. `flags` shadowed pandas' DataFrame.flags.
RENAMED = {"flags": "summary_flags"}
# True/False columns; empty on a failed row, so they load as pandas' nullable boolean.
BOOLEAN_COLUMNS = ("measured", "emulated", "compile", "floor_fits_in_cache", "below_floor")


def tidy(df: Any) -> Any:
    """Old column names renamed, booleans as nullable booleans, timestamp_utc as datetime."""
    import pandas as pd

    for old, new in RENAMED.items():
        if old in df:  # both, in a folder appended to across versions: the old fills the gaps
            df[new] = df[new].combine_first(df[old]) if new in df else df[old]
            df = df.drop(columns=old)
    for col in BOOLEAN_COLUMNS:
        if col in df:
            df[col] = df[col].map(_boolean).astype("boolean")
    if "timestamp_utc" in df:
        df["timestamp_utc"] = pd.to_datetime(df["timestamp_utc"], utc=True, errors="coerce",
                                             format="ISO8601")  # fmt: skip
    return df


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


def _check_schema(frames: list[Any]) -> None:
    """One schema_version across all folders (a file without the column counts as current)."""
    seen: dict[int, str] = {}
    for df in frames:
        col = df["schema_version"] if "schema_version" in df else [SCHEMA_VERSION]
        for v in {int(x) for x in col if x == x}:
            seen.setdefault(v, df["results_dir"].iloc[0] if len(df) else "?")
    if len(seen) > 1:
        (a, da), (b, db) = sorted(seen.items())[:2]
        raise UserError(
            f"results: {da!r} has schema_version {a} but {db!r} has {b}; their columns do not "
            "mean the same, so load them separately or re-measure one with this tokenwatt"
        )
    newer = [v for v in seen if v > SCHEMA_VERSION]
    if newer:
        raise UserError(
            f"results: {seen[newer[0]]!r} has schema_version {newer[0]}, newer than this "
            f"tokenwatt reads ({SCHEMA_VERSION}); upgrade tokenwatt"
        )


def load_summary(*paths: str | Path) -> Any:
    return load_results(*paths, summary=True)
