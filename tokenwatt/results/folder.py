"""A results folder: can it be written, what does it hold, which cases are done or failed."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from tokenwatt.errors import ResultsFolderError, UserError
from tokenwatt.results.columns import RESULTS_CSV, RUN_JSON, SCHEMA_VERSION, SUMMARY_CSV
from tokenwatt.results.store import (
    JOURNAL,
    LOCK_FILE,
    MARK_COLUMN,
    foreign_message,
    last_record_start,
    read_rows,
)

SWEEP_JSON = "sweep.json"
SWEEP_YAML = "sweep.yaml"
SWEEP_LOCK = ".sweep.lock"  # held by the one sweep running in the folder
STAGING = ".staging"  # case processes measure here before merging
CASES = ".cases"  # CASE.json files and the per-case claims
LOGS = ".logs"
JSON_LISTS = {RUN_JSON: ("runs", "failures"), SWEEP_JSON: ("sweeps",)}
OUT_FIX = "move it away or give another --out"

STOPPED = "stopped"  # summary flag of a run that stopped after degraded trials in a row


def check_out_dir(out: str | Path) -> Path:
    """Check that OUT is (or can be created as) a writable folder whose files tokenwatt can
    append to, writing nothing."""
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
    if p.is_dir():
        check_files(p, "out", OUT_FIX, writable=True)
    return p


def check_files(folder: Path, field: str, fix: str, writable: bool = False) -> None:
    """The folder's existing result files are tokenwatt's and whole, or one ResultsFolderError
    naming the file and what is wrong. Reads only; a torn last row is fine (appends cut it)."""
    for name in (RESULTS_CSV, SUMMARY_CSV):
        check_csv(folder / name, field, fix, writable)
    for name, keys in JSON_LISTS.items():
        _check_json(folder / name, keys, field, fix)
    for name, is_dir in ((LOCK_FILE, False), (SWEEP_LOCK, False), (JOURNAL, True),
                         (STAGING, True), (CASES, True), (LOGS, True)):  # fmt: skip
        p = folder / name
        if p.exists() and p.is_dir() != is_dir:
            kind = "a directory" if p.is_dir() else "not a directory"
            raise ResultsFolderError(f"{field}: {str(p)!r} is {kind}; {fix}")


def check_csv(path: Path, field: str, fix: str, writable: bool = False) -> None:
    """One results.csv or summary.csv: a tokenwatt header, whole rows, this schema_version."""
    if not path.exists():
        return
    bad = lambda what: ResultsFolderError(f"{field}: {str(path)!r} {what}; {fix}")  # noqa: E731
    if not path.is_file():
        raise bad("is not a regular file")
    mode = os.R_OK | (os.W_OK if writable else 0)
    if not os.access(path, mode):
        raise bad("cannot be " + ("read and written" if writable else "read"))
    try:
        data = path.read_bytes()
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror})") from None
    if not data:
        return
    whole = data if data.endswith(b"\n") else data[: last_record_start(data)]
    try:
        rows = list(csv.reader(io.StringIO(whole.decode("utf-8"), newline=""), strict=True))
        header = rows[0] if rows else next(csv.reader(io.StringIO(data.decode("utf-8"))), [])
    except UnicodeDecodeError:
        raise bad("is not UTF-8 text (damaged or not a CSV)") from None
    except csv.Error as e:
        raise bad(f"is not a readable CSV ({e})") from None
    if MARK_COLUMN not in header:
        raise ResultsFolderError(foreign_message(path, field, fix))
    mark = header.index(MARK_COLUMN)
    for i, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise bad(f"has {len(row)} fields in record {i} but {len(header)} in its header "
                      "(damaged)")  # fmt: skip
        if row[mark] != str(SCHEMA_VERSION):
            raise bad(f"holds rows of {MARK_COLUMN} {row[mark][:20]!r}; this tokenwatt writes "
                      f"{SCHEMA_VERSION} and folders of two versions do not mix")  # fmt: skip


def _check_json(path: Path, keys: tuple[str, ...], field: str, fix: str) -> None:
    if not path.exists():
        return
    bad = lambda what: ResultsFolderError(f"{field}: {str(path)!r} {what}; {fix}")  # noqa: E731
    if not path.is_file():
        raise bad("is not a regular file")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise bad("is not valid JSON (damaged)") from None
    except OSError as e:
        raise bad(f"cannot be read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise bad(f"is not a JSON object with {' and '.join(keys)} lists")
    for key in keys:
        if not isinstance(data.get(key, []), list):
            raise bad(f"has {key!r} that is not a list (damaged)")


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


def was_stopped(summary_row: dict[str, Any]) -> bool:
    """A summary of a run that stopped on degraded trials: its rows are kept, but its case is
    not complete (a sweep records it failed, and --retry-failed measures it again)."""
    return STOPPED in str(summary_row.get("summary_flags") or "").split(";")


def complete_summaries(out: Path) -> list[dict[str, Any]]:
    """summary.csv's rows of runs that completed (a stopped run's are not)."""
    return [r for r in read_rows(out / SUMMARY_CSV)[0] if not was_stopped(r)]


def case_states(out: Path) -> dict[str, str]:
    """case id -> "complete" or "failed", read from the folder's CSVs."""
    states: dict[str, str] = {}
    for row in read_rows(out / RESULTS_CSV)[0]:
        if row.get("status") == "failed" and row.get("case_id"):
            states[row["case_id"]] = "failed"
    for row in complete_summaries(out):
        if row.get("case_id"):
            states[row["case_id"]] = "complete"
    return states


def failures(out: Path) -> dict[str, str]:
    """case id -> its latest one-line error, for cases failed and not complete."""
    states = case_states(out)
    errors: dict[str, str] = {}
    for row in read_rows(out / RESULTS_CSV)[0]:
        cid = row.get("case_id", "")
        if row.get("status") == "failed" and states.get(cid) == "failed":
            errors[cid] = row.get("error", "") or "unknown error"
    return errors


def case_tags(out: Path) -> dict[str, dict[str, Any]]:
    """case id -> tags (agent turns), from every plan recorded in sweep.json."""
    p = out / SWEEP_JSON
    if not p.is_file():
        return {}
    tags: dict[str, dict[str, Any]] = {}
    for s in json.loads(p.read_text(encoding="utf-8")).get("sweeps", []):
        for c in s.get("cases", []):
            if c.get("tags"):
                tags[c["case_id"]] = c["tags"]
    return tags


def not_run(folder: Path) -> list[dict[str, Any]]:
    """Cases of the latest sweep plan that are neither complete nor failed."""
    p = folder / SWEEP_JSON
    if not p.is_file():
        return []
    sweeps = json.loads(p.read_text(encoding="utf-8")).get("sweeps") or [{}]
    states = case_states(folder)
    return [c for c in sweeps[-1].get("cases", []) if c["case_id"] not in states]


def unparseable_files(out: Any) -> list[str]:
    """Result files in `out` that do not parse strictly: a CSV row whose field count differs
    from its header (a torn write), or JSON that does not load. Empty means all is well."""
    bad = []
    for p in sorted(Path(out).glob("*.csv")):
        try:
            with open(p, newline="", encoding="utf-8") as f:
                rows = list(csv.reader(f, strict=True))
            if not rows or any(len(r) != len(rows[0]) for r in rows[1:]):
                bad.append(p.name)
        except (csv.Error, UnicodeDecodeError):
            bad.append(p.name)
    for p in sorted(Path(out).glob("*.json")):
        try:
            json.loads(p.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            bad.append(p.name)
    return bad
