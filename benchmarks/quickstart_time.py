"""Wall time of `tokenwatt run` (the embedded quickstart) from process start to summary.

Goal: under 60 s on the 2-core development machine. Runs the real console script in a
subprocess, writes benchmarks/results/quickstart_time.csv.

    python benchmarks/quickstart_time.py [--runs 1]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)

OUT = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    rec = Record()
    rows = []
    for i in range(args.runs):
        out = Path(tempfile.mkdtemp())
        t = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "tokenwatt.cli", "run", "--out", str(out)],
            capture_output=True, text=True,
        )  # fmt: skip
        wall = time.perf_counter() - t
        shutil.rmtree(out, ignore_errors=True)
        if p.returncode != 0:
            sys.exit(f"tokenwatt run failed:\n{p.stderr}")
        rows.append({"run": i, "wall_s": round(wall, 2), "goal_s": 60, "met": wall < 60})
        print(f"run {i}: {wall:.1f} s (goal < 60 s)")
    OUT.mkdir(exist_ok=True)
    with open(OUT / "quickstart_time.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    rec.write(OUT, "quickstart_time", ["quickstart_time.csv"])


if __name__ == "__main__":
    main()
