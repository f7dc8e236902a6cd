"""Writing result files safely: CSV appends, atomic JSON, the folder lock.

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

from tokenwatt.results.columns import SCHEMA_VERSION

LOCK_FILE = ".tokenwatt.lock"

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
