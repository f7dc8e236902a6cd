"""Other processes' runnable threads beside a served model's spinning threads: the direct count
(`RunnableElsewhere`, what contention records) against the subtraction it replaced (the
machine's running count minus this tree's and the server's threads in state R).

The truth is known: two busy processes outside the measuring tree, each always runnable, beside
a server whose 8 threads spin on this machine's cores (as a vLLM CPU worker's do; the server is
excluded by pid). Each trial takes SAMPLES readings of both, 0.1 s apart, the same instants; the
script also times one direct count. Writes benchmarks/results/runnable_count.csv.

    python benchmarks/runnable_count.py [--trials 3] [--samples 40]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import time
from pathlib import Path

from _record import ROOT, Record

sys.path.insert(0, str(ROOT))
from tests.loads import orphan_busy, spinning_server  # noqa: E402
from tokenwatt._util.proctree import (  # noqa: E402
    ProcessForest,
    ProcessTree,
    RunnableElsewhere,
    runnable_threads_of,
)

OUT = Path(__file__).parent / "results"
TRUTH = 2


def _running(pids: set[int]) -> int:
    """Threads in state R of `pids` (the old reading of this tree's and the server's)."""
    return sum(runnable_threads_of(pid) for pid in pids)


def _subtracted(tree: ProcessTree, server: ProcessForest) -> float:
    before = _running(tree.pids())
    total = int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    after = _running(tree.pids())
    return total - (before + after) / 2 - _running(server.pids())


def trial(samples: int) -> dict[str, float]:
    server = spinning_server()
    hogs = [orphan_busy() for _ in range(TRUTH)]
    tree, forest, direct = ProcessTree(), ProcessForest({server.pid}), RunnableElsewhere()
    old, new, cost = [], [], []
    try:
        time.sleep(0.5)
        for _ in range(samples):
            old.append(_subtracted(tree, forest))
            t = time.perf_counter()
            new.append(direct(tree.pids() | forest.pids()))
            cost.append(time.perf_counter() - t)
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait()
        for pid in hogs:
            os.kill(pid, signal.SIGKILL)
    return {"truth": TRUTH, "direct_mean": statistics.mean(new), "direct_min": min(new),
            "direct_max": max(new), "subtracted_mean": statistics.mean(old),
            "subtracted_min": min(old), "subtracted_max": max(old),
            "direct_call_ms_median": 1e3 * statistics.median(cost),
            "processes": sum(n.isdigit() for n in os.listdir("/proc"))}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    rec = Record()
    rows = []
    for i in range(args.trials):
        row = {"trial": i, **{k: round(v, 3) for k, v in trial(args.samples).items()}}
        rows.append(row)
        print(f"trial {i}: direct {row['direct_mean']:.2f} (min {row['direct_min']:.0f}, max "
              f"{row['direct_max']:.0f}), subtracted {row['subtracted_mean']:.2f} (min "
              f"{row['subtracted_min']:.1f}, max {row['subtracted_max']:.1f}); truth {TRUTH}; "
              f"a direct count {row['direct_call_ms_median']:.2f} ms over {row['processes']} "
              "processes")  # fmt: skip
    rec.write_csv(OUT, "runnable_count", rows)


if __name__ == "__main__":
    main()
