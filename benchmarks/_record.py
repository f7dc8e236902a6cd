"""What every stored benchmark result records beside it: the command line that made it and the
machine load it ran under (and the commit, the date, the machine's cores).

A script makes a `Record` when it starts and calls `write` once its files are on disk; the
record is `NAME.run.json` in the same folder and lists the files it covers, so
`tests/test_doc_figures.py` can hold every stored file to a record (or to the test's short list
of legacy results made before records existed).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _commit() -> str:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{'+dirty' if dirty else ''}" if head else "unknown"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Record:
    """Started when the benchmark starts: the load is read at both ends of the run."""

    def __init__(self) -> None:
        self.started = _now()
        self.load_start = list(os.getloadavg())
        self.commit = _commit()  # the code that runs, not what the tree holds when it ends

    def as_dict(self, files: Iterable[str]) -> dict[str, object]:
        script = Path(sys.argv[0])
        try:
            script = script.resolve().relative_to(ROOT)
        except ValueError:
            pass
        return {
            "command": shlex.join(["python", str(script), *sys.argv[1:]]),
            "argv": list(sys.argv),
            "load_avg_start": self.load_start,  # 1, 5 and 15 min, as os.getloadavg() gives them
            "load_avg_end": list(os.getloadavg()),
            "cpus": os.cpu_count(),
            "commit": self.commit,
            "started": self.started,
            "finished": _now(),
            "python": platform.python_version(),
            "machine": platform.platform(),
            "files": sorted(files),
        }

    def write_csv(self, out: Path, name: str, rows: list[dict[str, object]]) -> Path:
        """Write OUT/NAME.csv (one line per row, the first row's keys as header) and its
        record, OUT/NAME.run.json."""
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{name}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
            w.writeheader()
            w.writerows(rows)
        return self.write(out, name, [f"{name}.csv"])

    def write(self, out: Path | str, name: str, files: Iterable[str]) -> Path:
        """Write OUT/NAME.run.json covering FILES (names inside OUT)."""
        path = Path(out) / f"{name}.run.json"
        path.write_text(json.dumps(self.as_dict(files), indent=2) + "\n")
        return path
