"""Wall time of `tokenwatt plan --model ...` (the energy model's ESTIMATE, issue 27's done-when
command) from process start to the printed table.

Goal: under 5 s. Runs the real console script in a subprocess, writes
benchmarks/results/plan_estimate_time.csv.

    python benchmarks/plan_estimate_time.py [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _record import Record

OUT = Path(__file__).parent / "results"
COMMAND = ["plan", "--model", "preset:llama-3.1-70b", "--hardware", "h100-sxm", "--gpus", "4",
           "--precision", "fp8", "--batch-size", "64", "--tokens-per-s", "1e6",
           "--region", "frankfurt"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rec = Record()
    exe = shutil.which("tokenwatt") or str(Path(sys.executable).with_name("tokenwatt"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    rows = []
    for i in range(args.runs):
        t = time.perf_counter()
        r = subprocess.run([exe, *COMMAND], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t
        ok = r.returncode == 0 and "ESTIMATE" in r.stdout
        rows.append({"run": i, "wall_s": round(wall, 3), "ok": ok, "goal_s": 5.0})
        print(f"run {i}: {wall:.2f} s, {'ok' if ok else 'FAILED: ' + r.stderr.strip()}")
    rec.write_csv(OUT, "plan_estimate_time", rows)
    print(f"worst {max(r['wall_s'] for r in rows):.2f} s (goal: under 5 s)")


if __name__ == "__main__":
    main()
