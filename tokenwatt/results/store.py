"""The result files: tidy trial rows, summary rows and run metadata, written safely.

OUT/results.csv  one row per measured trial
OUT/summary.csv  one row per run of a config (mean, std, CV, 95% CI of the main figures)
OUT/run.json     {"runs": [...]}: resolved config, environment, per-trial detail and traces

Appends never truncate: rows are appended under a file lock and fsynced, so a crash loses at
most the row in flight and two processes writing one folder do not interleave. A row whose
keys are not in the existing header widens the header by an atomic rewrite (temp + rename).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
RUN_JSON = "run.json"
LOCK_FILE = ".tokenwatt.lock"
# Every CSV row carries schema_version. Bump it when a column changes meaning or unit, so
# load_results refuses to mix folders whose same-named columns mean different things.
SCHEMA_VERSION = 1

# The columns every trial row carries first, in this order; others follow as they appear.
TRIAL_COLUMNS = [
    "run_id", "case_id", "timestamp_utc", "name", "model", "precision", "precision_backend",
    "compile", "device", "device_name", "batch_size", "prompt_tokens", "new_tokens", "trial",
    "status", "tokens_generated", "decode_tokens", "repetitions", "prefill_s", "decode_s",
    "prefill_j", "decode_j", "total_j", "prefill_j_per_token", "prefill_j_per_request",
    "decode_j_per_token", "total_j_per_token", "decode_tokens_per_s", "avg_power_w",
    "idle_power_w", "dynamic_decode_j_per_token", "energy_source", "energy_scope", "measured",
]  # fmt: skip

SUMMARY_METRICS = [
    "prefill_j_per_token", "prefill_j_per_request", "decode_j_per_token", "total_j_per_token",
    "dynamic_decode_j_per_token", "decode_tokens_per_s", "avg_power_w",
]  # fmt: skip


def check_out_dir(out: str | Path) -> Path:
    """Check that OUT is (or can be created as) a writable folder, writing nothing."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise UserError(f"out: {str(p)!r} is a file; give a directory for the results")
    parent = p
    while not parent.exists():  # the nearest existing folder decides whether mkdir can work
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"out: {str(parent)!r} is a file, so {str(p)!r} cannot be created; "
                        "choose another folder")  # fmt: skip
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(
            f"out: {str(parent)!r} is not writable; choose another folder or fix permissions"
        )
    return p


def prepare_out_dir(out: str | Path) -> Path:
    """Create OUT if needed; a clear error if it is a file or not writable."""
    p = check_out_dir(out)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"out: cannot create {str(p)!r} ({e.strerror}); choose another folder"
        ) from None
    if not os.access(p, os.W_OK):
        raise UserError(
            f"out: {str(p)!r} is not writable; choose another folder or fix permissions"
        )
    return p


@contextmanager
def locked(out: Path):
    """An inter-process lock on a results folder."""
    from filelock import FileLock

    with FileLock(str(out / LOCK_FILE), timeout=600):
        yield


def append_rows(path: Path, rows: Iterable[dict[str, Any]], first: list[str] | None = None) -> None:
    """Append rows to a CSV (caller holds the folder lock); widen the header when needed."""
    rows = [{"schema_version": SCHEMA_VERSION, **r} for r in rows]
    if not rows:
        return
    _drop_torn_tail(path)
    header = _read_header(path)
    keys = _ordered_keys(rows, header or (first or []))
    if header and keys != header:
        _rewrite_with_header(path, keys)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys, extrasaction="raise")
    if not header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in keys})
    if not header:  # a new file appears whole (temp + rename), never empty or headless
        write_atomic(path, buf.getvalue())
        return
    # One write(2) on an O_APPEND descriptor: a kill lands before or after it, never inside.
    data = buf.getvalue().encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line without its newline (a power cut mid-write): that row never finished."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)
        f.flush()
        os.fsync(f.fileno())


def update_json(path: Path, key: str, item: dict[str, Any]) -> None:
    """Append `item` to the list `key` of a JSON file, atomically (caller holds the lock)."""
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            # Never destroy what is there: keep the damaged file aside and start a new one.
            path.rename(path.with_suffix(".json.corrupt"))
    data.setdefault(key, []).append(item)
    write_atomic(path, json.dumps(clean_json(data), indent=1, default=_json_default))


def write_atomic(path: Path, text: str) -> None:
    """Write a file through a temp file + fsync + rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes 0600; keep the file's mode, or the usual 0644 for a new one
        os.fchmod(fd, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_results(*paths: str | Path, summary: bool = False) -> Any:
    """A pandas DataFrame of the trial rows (or summary rows) of one or many result folders."""
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
        df = pd.read_csv(csv_path)
        df["results_dir"] = str(csv_path.parent)
        frames.append(df)
    if not frames:
        raise UserError("results: give at least one results folder")
    _check_schema(frames)
    return pd.concat(frames, ignore_index=True, sort=False)


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


def read_rows(path: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The rows and header of a CSV; two empty lists when the file is not there."""
    if not path.is_file():
        return [], []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader), list(reader.fieldnames or [])


def _read_header(path: Path) -> list[str]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f), [])


def _ordered_keys(rows: list[dict[str, Any]], start: list[str]) -> list[str]:
    keys = list(start)
    seen = set(keys)
    for r in rows:
        for k in r:
            if k not in seen:
                keys.append(k)
                seen.add(k)
    return keys


def _rewrite_with_header(path: Path, keys: list[str]) -> None:
    old, _ = read_rows(path)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    for r in old:
        w.writerow({k: r.get(k, "") for k in keys})
    write_atomic(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return ""
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return v


def clean_json(o: Any) -> Any:
    """NaN and infinity become null: JSON has no such numbers and pandas reads null as NaN."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): clean_json(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [clean_json(v) for v in o]
    return o


def _json_default(o: Any) -> Any:
    if hasattr(o, "item"):
        return o.item()
    return str(o)
