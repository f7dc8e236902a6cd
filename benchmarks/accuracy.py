"""Accuracy of window energy and phase attribution on the simulated NVML sensor.

The sensor reproduces A100/H100 behaviour (counter every 100 ms, instant power = last 25 ms of
each period, nvmlDeviceGetPowerUsage = 1 s average). Simulated time runs on a virtual clock, so
the run is fast and exactly reproducible. Methods, for windows requested at random times:
- tokenwatt: PhaseRecorder as the runner uses it (start right after an update, end
  interpolated between the updates on either side, tick-locked sampler);
- tokenwatt-unaligned: the same without waiting for an update at the start;
- counter-delta: two reads of the energy counter at the window's edges (what peers do);
- naive-1s-average: nvmlDeviceGetPowerUsage polled every 100 ms and integrated.
Zeus and CodeCarbon are not installed here, so they are not run side by side.

    python benchmarks/accuracy.py [--windows 30] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import csv
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from simfix import advance, virtual_board, virtual_sampler  # noqa: E402

from tokenwatt.energy.recorder import PhaseRecorder  # noqa: E402
from tokenwatt.sim import nvml as sim  # noqa: E402
from tokenwatt.sim.profiles import bursts, spikes, steady, steps  # noqa: E402

LENGTHS = (0.5, 1.0, 2.0, 5.0, 10.0)


def window_errors(profile, n: int, seed: int) -> list[dict]:
    clock, (meter,) = virtual_board(profile)
    s = virtual_sampler([meter], clock)
    s.poll_all()
    rng, rows, origin = random.Random(seed), [], sim.STATE.origin
    h = meter.handle
    for length in LENGTHS:
        for _ in range(n):
            a0 = clock() + rng.uniform(0.05, 0.6)
            advance(s, clock, a0)
            e0 = meter.read_joules()["gpu0"]  # counter-delta: read at the requested start
            naive, last_p, last_t = 0.0, sim.nvmlDeviceGetPowerUsage(h) / 1000, clock()
            for align in (False, True):  # unaligned marks at a0; aligned then waits
                rec = PhaseRecorder([meter], sampler=s, align=align, clock=clock)
                rec.mark("w")
                if align:
                    start_aligned = rec.marks[0].t
                    rec_aligned = rec
                else:
                    rec_unaligned = rec
            b = start_aligned + length
            t = clock()
            while t + 0.1 < b:  # the naive poller, every 100 ms
                advance(s, clock, t + 0.1)
                t = clock()
                p = sim.nvmlDeviceGetPowerUsage(h) / 1000
                naive += 0.5 * (p + last_p) * (t - last_t)
                last_p, last_t = p, t
            advance(s, clock, b)
            p = sim.nvmlDeviceGetPowerUsage(h) / 1000
            naive += 0.5 * (p + last_p) * (b - last_t)
            e1 = meter.read_joules()["gpu0"]
            rec_aligned.mark("end")
            rec_unaligned.mark("end")
            truth_al = profile.energy(start_aligned - origin, b - origin)
            truth_req = profile.energy(a0 - origin, b - origin)
            t_un = rec_unaligned.marks[0].t
            truth_un = profile.energy(t_un - origin, b - origin)
            got = {
                "tokenwatt": (rec_aligned.phases()["w"].joules["gpu0"], truth_al),
                "tokenwatt-unaligned": (rec_unaligned.phases()["w"].joules["gpu0"], truth_un),
                "counter-delta": (e1 - e0, truth_req),
                "naive-1s-average": (naive, truth_req),
            }
            for method, (j, true) in got.items():
                rows.append({"profile": profile.name, "window_s": length, "method": method,
                             "error_pct": 100 * (j / true - 1)})  # fmt: skip
    return rows


def attribution_errors(n: int, seed: int) -> list[dict]:
    """Generation-like trials (~5 s of prefill bursts and decode) followed by marks."""
    prof = bursts(seconds=60 + 8 * n, seed=seed)
    clock, (meter,) = virtual_board(prof)
    s = virtual_sampler([meter], clock)
    s.poll_all()
    origin, rows, i = sim.STATE.origin, [], 1
    for _ in range(n):
        while prof.labels[i] != "prefill":
            i += 1
        recs = {
            "tokenwatt": PhaseRecorder([meter], sampler=s, align=False, clock=clock),
            "mark-reads": PhaseRecorder([meter], sampler=None, clock=clock),
        }
        start = prof.times[i]
        while True:
            advance(s, clock, origin + prof.times[i])
            phase = {"gap": "end"}.get(prof.labels[i], prof.labels[i])
            for r in recs.values():
                r.mark(phase)
            i += 1
            if prof.times[i - 1] - start > 5.0 and phase == "end":
                break
        marks = [(m.t - origin, m.phase) for m in recs["tokenwatt"].marks]
        truth: dict[str, float] = {}
        for (a, p), (b, _) in zip(marks, marks[1:]):
            truth[p] = truth.get(p, 0.0) + prof.energy(a, b)
        for method, r in recs.items():
            ph = r.phases()
            for p in ("prefill", "decode"):
                err = 100 * (ph[p].joules["gpu0"] / truth[p] - 1)
                rows.append({"profile": "bursts", "phase": p, "method": method, "error_pct": err})
        gap = recs["tokenwatt"].quality()["counter_vs_trace_gap_pct"]
        rows.append({"profile": "bursts", "phase": "gap", "method": "counter_vs_trace_gap_pct",
                     "error_pct": gap})  # fmt: skip
    return rows


def summarise(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    groups: dict[tuple, list[float]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r["error_pct"])
    out = []
    for key, errs in groups.items():
        a = [abs(e) for e in errs]
        stats = {"n": len(errs), "median_abs_err_pct": statistics.median(a),
                 "worst_abs_err_pct": max(a), "mean_err_pct": statistics.fmean(errs)}  # fmt: skip
        out.append({**dict(zip(keys, key)), **stats})
    return out


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", type=int, default=30, help="windows per length and profile")
    ap.add_argument("--trials", type=int, default=30, help="attribution trials")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    horizon = sum(LENGTHS) * args.windows + 120
    profiles = [steady(seconds=horizon, seed=1), steps(seconds=horizon, seed=2),
                spikes(seconds=horizon, seed=3), bursts(seconds=horizon, seed=4)]  # fmt: skip
    rows = [r for i, p in enumerate(profiles) for r in window_errors(p, args.windows, i)]
    windows = summarise(rows, ("profile", "window_s", "method"))
    attr = summarise(attribution_errors(args.trials, 7), ("profile", "phase", "method"))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write(out / "accuracy_windows.csv", windows)
    write(out / "accuracy_attribution.csv", attr)
    print("window energy, |error| % vs ground truth (median / worst):")
    for method in ("tokenwatt", "tokenwatt-unaligned", "counter-delta", "naive-1s-average"):
        print(f"  {method}")
        for length in LENGTHS:
            sel = [w for w in windows if w["method"] == method and w["window_s"] == length]
            cells = "  ".join(
                f"{w['profile']} {w['median_abs_err_pct']:.3f}/{w['worst_abs_err_pct']:.3f}"
                for w in sel
            )
            print(f"    {length:>4} s: {cells}")
    print("phase attribution on prefill bursts, |error| % (median / worst):")
    for a in attr:
        print(f"  {a['phase']:8s} {a['method']:26s} {a['median_abs_err_pct']:.3f} / "
              f"{a['worst_abs_err_pct']:.3f}  (mean {a['mean_err_pct']:+.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
