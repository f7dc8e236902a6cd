"""On a real NVIDIA GPU: does the board behave as tokenwatt's sampler assumes? (~1 minute)

1. The counter's updates, found by 1 ms polling for `--seconds`: the period (median) and its
   jitter, and whether the instant-power field's timestamp dates the counter's change (the
   sampler trusts it): where the timestamp falls relative to the polls that saw the change.
2. The instant field's averaging window as the sampler estimates it (needs ripple: a matmul load
   runs on the board if torch sees CUDA, `--no-load` to measure idle).
3. A `tokenwatt.Monitor` on this board: the cost of an empty window, the time to its energy, and
   the sampler thread's CPU share, with the real NVML library (ctypes: it releases the GIL).
Without a GPU it runs against whatever `TOKENWATT_NVML_MODULE` names (e.g. tokenwatt.sim.nvml),
which checks the script, not a board.

    python benchmarks/gpu_sensor_check.py [--gpu 0] [--seconds 20] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)


def poll_changes(meter, seconds: float) -> list[dict]:
    """Every counter change seen by 1 ms polls, with the poll interval and the field's stamp."""
    last, prev_t, out = meter._counter_mj(), time.perf_counter(), []
    end = prev_t + seconds
    while prev_t < end:
        time.sleep(0.001)
        t0 = time.perf_counter()
        raw = meter._counter_mj()
        t1 = time.perf_counter()
        if raw != last:
            stamp = meter.read_power_sample()
            out.append({"t_lo": prev_t, "t": t1, "stamp": stamp[0] if stamp else None})
            last = raw
        prev_t = t0
    return out


def load(stop: threading.Event, device: str) -> None:
    """Matmuls of varying size: power ripple for the instant-window estimate."""
    import torch

    a = torch.randn(4096, 4096, device=device)
    n = 0
    while not stop.is_set():
        (a @ a).sum().item()  # a kernel, then a pause of 0-4 ms: power ripples
        time.sleep(0.001 * (n % 5))
        n += 1


def main() -> None:
    import tokenwatt
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.placement import cuda_boards, cuda_index_of, measured_boards

    ap = argparse.ArgumentParser()
    ap.add_argument("--gpu", default="0", help="the NVML board (index, UUID or PCI bus id)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    rec = Record()
    (board,) = measured_boards([args.gpu])
    meter = NvmlMeter(board)
    changes = poll_changes(meter, args.seconds / 2)
    gaps = [b["t"] - a["t"] for a, b in zip(changes, changes[1:])]
    narrow = [c for c in changes if c["t"] - c["t_lo"] < 0.003 and c["stamp"] is not None]
    offsets = [c["stamp"] - 0.5 * (c["t_lo"] + c["t"]) for c in narrow]
    inside = [c["t_lo"] - 0.001 <= c["stamp"] <= c["t"] + 0.001 for c in narrow]

    stop = threading.Event()
    worker = None
    if not args.no_load:
        try:
            import torch

            index = cuda_index_of(board, cuda_boards()) if torch.cuda.is_available() else None
            if index is not None:  # the load runs on the board measured, matched by UUID
                worker = threading.Thread(target=load, args=(stop, f"cuda:{index}"),
                                          daemon=True)  # fmt: skip
                worker.start()
        except ImportError:
            pass
    mon = tokenwatt.Monitor(meters=[meter])
    pair = []
    for _ in range(500):
        a = time.perf_counter()
        mon.begin_window("w")
        mon.end_window("w")
        pair.append(time.perf_counter() - a)
    waits = []
    for _ in range(20):
        mon.begin_window("e")
        time.sleep(0.05)
        m = mon.end_window("e")
        a = time.perf_counter()
        _ = m.joules
        waits.append(time.perf_counter() - a)
    import psutil

    def cpu_s() -> float:
        tid = mon.sampler.driver.native_id
        th = next((t for t in psutil.Process().threads() if t.id == tid), None)
        return th.user_time + th.system_time if th else float("nan")  # 10 ms ticks: run long

    cpu0, t0 = cpu_s(), time.perf_counter()
    time.sleep(args.seconds / 2)
    share = 100 * (cpu_s() - cpu0) / (time.perf_counter() - t0)
    stop.set()
    mon.close(wait=True)
    lane = mon.sampler.lanes[0]
    report = {
        "device_name": meter.device_name,
        "update_period_s_median": statistics.median(gaps) if gaps else None,
        "update_period_jitter_s_max": max(abs(g - statistics.median(gaps)) for g in gaps)
        if gaps
        else None,  # fmt: skip
        "changes_seen": len(changes),
        "stamp_minus_poll_midpoint_s_median": statistics.median(offsets) if offsets else None,
        "stamp_inside_polls_share": sum(inside) / len(inside) if inside else None,
        "sampler_trusts_stamp": lane.trust_stamp,
        "updates_seen_vs_made": [lane.seen_total, lane.updates_total],
        "instant_window": meter.describe().get("instant_window_source"),
        "empty_window_median_us": 1e6 * statistics.median(pair),
        "time_to_energy_median_ms": 1e3 * statistics.median(waits),
        "sampler_cpu_share_pct": share,
    }
    text = json.dumps(report, indent=2, default=str)
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_sensor_check.json").write_text(text + "\n")
    rec.write(out, "gpu_sensor_check", ["gpu_sensor_check.json"])


if __name__ == "__main__":
    main()
