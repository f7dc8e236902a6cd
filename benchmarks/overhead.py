"""Sampler overhead: decode tokens/s with the background sampler on versus off.

Paired in one process, alternating on/off many times (the order flips every pair), tiny-llama
through tokenwatt.models.decode.generate on the CPU. The sampler reads the simulated NVML board in
process, whose pure-Python calls hold the GIL longer than real NVML's ctypes calls (which
release it), so this is a pessimistic case for the GIL. It also reports the sampler thread's
own CPU time per second of sampling, a figure that depends little on neighbours' load, and how
many counter updates the sampler missed while the decode ran (the GIL-starvation check).

    python benchmarks/overhead.py [--pairs 30] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.energy.sampler import Sampler
    from tokenwatt.models.decode import generate
    from tokenwatt.models.load import load_model
    from tokenwatt.sim import nvml as sim

    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--interval-ms", type=float, default=20.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rec = Record()
    torch.manual_seed(0)
    model = load_model("preset:tiny-llama", "cpu", torch.float32).model.eval()
    ids = torch.randint(0, model.config.vocab_size, (1, 16))
    sim.configure(1, 300.0)
    meter = NvmlMeter(0, nvml=sim)
    generate(model, ids, args.new_tokens)  # warm-up

    sampler_cpu = {"cpu_s": 0.0, "wall_s": 0.0, "polls": 0, "missed": 0}

    def tokens_per_s(sampling: bool) -> float:
        s = Sampler([meter], args.interval_ms / 1000).start() if sampling else None
        calls0 = sum(sim.STATE.calls.values())
        t0 = time.perf_counter()
        gen = generate(model, ids, args.new_tokens)
        dt = time.perf_counter() - t0
        if s is not None:
            sampler_cpu["cpu_s"] += thread_cpu_s(s.driver.native_id)
            sampler_cpu["wall_s"] += dt
            sampler_cpu["polls"] += sum(sim.STATE.calls.values()) - calls0
            s.stop()
            lane = s.lanes[0]
            sampler_cpu["missed"] += lane.updates_total - lane.seen_total
        return gen.decode_tokens / dt

    rows = []
    for i in range(args.pairs):
        order = (False, True) if i % 2 == 0 else (True, False)
        got = {on: tokens_per_s(on) for on in order}
        rows.append({"pair": i, "off_tok_s": got[False], "on_tok_s": got[True],
                     "slowdown_pct": 100 * (1 - got[True] / got[False])})  # fmt: skip
    slow = [r["slowdown_pct"] for r in rows]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "overhead.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    off = statistics.median(r["off_tok_s"] for r in rows)
    on = statistics.median(r["on_tok_s"] for r in rows)
    q = statistics.quantiles(slow, n=4)
    share = 100 * sampler_cpu["cpu_s"] / sampler_cpu["wall_s"]
    rate = sampler_cpu["polls"] / sampler_cpu["wall_s"]
    lines = [
        f"pairs={len(rows)} new_tokens={args.new_tokens} interval={args.interval_ms} ms",
        f"median tokens/s off {off:.1f}, on {on:.1f}",
        f"median slowdown {statistics.median(slow):+.2f}% (IQR {q[0]:+.2f}% .. {q[2]:+.2f}%)",
        f"sampler thread CPU: {share:.2f}% of one core while sampling; {rate:.0f} NVML calls/s",
        f"counter updates missed by the sampler during the decodes: {sampler_cpu['missed']}",
    ]
    print("\n".join(lines))
    (out / "overhead.txt").write_text("\n".join(lines) + "\n")
    rec.write(out, "overhead", ["overhead.csv", "overhead.txt"])


def thread_cpu_s(native_id: int | None) -> float:
    """CPU seconds of one thread of this process: Linux's schedstat (nanoseconds; psutil's
    per-thread times count 10 ms clock ticks, too coarse for a thread that runs 0.1% of the
    time), else psutil."""
    try:
        with open(f"/proc/self/task/{native_id}/schedstat") as f:
            return int(f.read().split()[0]) / 1e9
    except (OSError, ValueError, IndexError):
        pass
    import psutil

    for t in psutil.Process().threads():
        if t.id == native_id:
            return t.user_time + t.system_time
    return float("nan")


if __name__ == "__main__":
    main()
