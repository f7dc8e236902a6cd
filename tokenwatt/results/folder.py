"""A results folder: can it be written, what does it hold, which cases are done or failed."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError
from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV
from tokenwatt.results.store import read_rows

SWEEP_JSON = "sweep.json"
SWEEP_YAML = "sweep.yaml"


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


def case_states(out: Path) -> dict[str, str]:
    """case id -> "complete" or "failed", read from the folder's CSVs."""
    states: dict[str, str] = {}
    for row in read_rows(out / RESULTS_CSV)[0]:
        if row.get("status") == "failed" and row.get("case_id"):
            states[row["case_id"]] = "failed"
    for row in read_rows(out / SUMMARY_CSV)[0]:
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
    import json

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
    import csv
    import json
    from pathlib import Path

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
