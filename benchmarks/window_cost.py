"""What a measurement window costs the measured code, and what the sampler costs a core.

On the simulated NVML board in process, in real time, through the code a real GPU runs
(`tokenwatt.Monitor` over `NvmlMeter`). The simulated NVML calls are pure Python, which hold the
GIL and cost more than real NVML's ctypes calls: the figures are pessimistic for CPU and GIL.
- empty window, reused Monitor: begin_window + end_window back to back, no device to
  synchronise (the call returns before any energy is computed);
- time to energy: from end_window to the first `joules` returning (waits for the counter update
  that closes the end's period: up to one update period, 100 ms);
- `tokenwatt.measure()`: one `with` block, each opening its own Monitor (meters' facts cached);
  and the first open in a process (measures the board's update period once);
- the sampler thread's CPU time per second of wall time at the default interval (20 ms), with
  the main thread idle, and while it holds the GIL with a pure-Python loop.
Goals (printed, not asserted): empty window median <= 1 ms; sampler <= 1% of a core.

    python benchmarks/window_cost.py [--windows 2000] [--cpu-s 10] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)
from overhead import thread_cpu_s  # measured the same way in both benchmarks


def quantiles_us(xs: list[float]) -> str:
    q = statistics.quantiles(xs, n=100)
    return (f"median {1e6 * statistics.median(xs):.1f} us, p90 {1e6 * q[89]:.1f} us, "
            f"p99 {1e6 * q[98]:.1f} us")  # fmt: skip


def hold_the_gil(seconds: float) -> None:
    end, x = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        x += 1


def sampler_share(mon, seconds: float, busy: bool) -> tuple[float, float]:
    """(% of one core, NVML calls per second) of the monitor's sampler over `seconds`."""
    from tokenwatt.sim import nvml as sim

    tid = mon.sampler.driver.native_id
    cpu0, calls0, t0 = thread_cpu_s(tid), sum(sim.STATE.calls.values()), time.perf_counter()
    if busy:
        hold_the_gil(seconds)
    else:
        time.sleep(seconds)
    wall = time.perf_counter() - t0
    cpu = thread_cpu_s(tid) - cpu0
    return 100 * cpu / wall, (sum(sim.STATE.calls.values()) - calls0) / wall


def main() -> None:
    import tokenwatt
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.sim import nvml as sim

    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=2000)
    ap.add_argument("--energies", type=int, default=30)
    ap.add_argument("--measures", type=int, default=50)
    ap.add_argument("--cpu-s", type=float, default=10.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rec = Record()
    sim.configure(1, 300.0, period_jitter_s=0.003)

    t = time.perf_counter()
    meter = NvmlMeter(0, nvml=sim)
    first_open = time.perf_counter() - t
    t = time.perf_counter()
    NvmlMeter(0, nvml=sim).close()
    again_open = time.perf_counter() - t

    mon = tokenwatt.Monitor(meters=[meter])
    begin, end, pair = [], [], []
    for _ in range(args.windows):
        a = time.perf_counter()
        mon.begin_window("w")
        b = time.perf_counter()
        mon.end_window("w")
        c = time.perf_counter()
        begin.append(b - a)
        end.append(c - b)
        pair.append(c - a)

    to_energy = []
    for _ in range(args.energies):
        mon.begin_window("e")
        time.sleep(0.05)
        m = mon.end_window("e")
        a = time.perf_counter()
        _ = m.joules
        to_energy.append(time.perf_counter() - a)
        time.sleep(0.013)

    idle_share, idle_calls = sampler_share(mon, args.cpu_s, busy=False)
    busy_share, busy_calls = sampler_share(mon, args.cpu_s, busy=True)
    mon.close(wait=True)

    blocks = []
    import os

    os.environ["TOKENWATT_NVML_MODULE"] = "tokenwatt.sim.nvml"
    for _ in range(args.measures):
        a = time.perf_counter()
        with tokenwatt.measure(gpus=["0"]) as m:
            pass
        blocks.append(time.perf_counter() - a)
        _ = m.joules

    lines = [
        "window cost on the simulated NVML board (in process, real time):",
        f"  empty window, reused Monitor, begin+end: {quantiles_us(pair)}",
        f"    begin_window {1e6 * statistics.median(begin):.1f} us, end_window "
        f"{1e6 * statistics.median(end):.1f} us (medians, {args.windows} windows)",
        f"  time to energy after end_window: median {1e3 * statistics.median(to_energy):.1f} ms, "
        f"max {1e3 * max(to_energy):.1f} ms (waits for the update closing the end's period)",
        f"  tokenwatt.measure() block, a Monitor each: median "
        f"{1e3 * statistics.median(blocks):.2f} ms ({args.measures} blocks)",
        f"  meter open: first in the process {1e3 * first_open:.0f} ms (measures the update "
        f"period), again {1e3 * again_open:.2f} ms",
        f"  sampler thread at the default 20 ms interval: {idle_share:.2f}% of a core idle "
        f"({idle_calls:.0f} NVML calls/s), {busy_share:.2f}% while Python holds the GIL "
        f"({busy_calls:.0f} calls/s)",
        f"goal: empty window median <= 1 ms: "
        f"{'met' if statistics.median(pair) <= 1e-3 else 'MISSED'}",
        f"goal: sampler <= 1% of a core: {'met' if max(idle_share, busy_share) <= 1 else 'MISSED'}",
    ]
    print("\n".join(lines))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "window_cost.txt").write_text(
        "$ python benchmarks/window_cost.py "
        + " ".join(sys.argv[1:])
        + "\n"
        + "\n".join(lines)
        + "\n"
    )
    rec.write(out, "window_cost", ["window_cost.txt"])


if __name__ == "__main__":
    main()
