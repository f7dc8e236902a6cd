"""GPU validation protocol: what tokenwatt believes about NVIDIA's power sensor, checked on a board.

Everything tokenwatt assumes about NVML (the energy counter integrates all the time; the instant
field averages the last 25 ms of each 100 ms update) comes from papers (Yang, Adamek, Armour,
SC'24) and is encoded in its simulator. One run of this script (at most about 8 minutes on an
H100/H200) measures it, through tokenwatt's production code (NvmlMeter, Sampler, the attribution,
PhaseRecorder, measure_idle_power, run_config), and writes under --out:

  sensor.csv        1. per board: counter update period, the instant field's update period and
                       averaging window, and the counter's own "window" (a counter that integrates
                       all the time has one period long)
  window_sweep.csv  1. the raw points of that measurement: a load step placed d ms before an update
  parttime.csv      2. the part-time test: a square wave (busy 1/4 of each update period) swept in
                       phase against the counter's updates; the spread of counter energy across
                       phases says whether the counter is continuous
  steady.csv        3. idle power, steady load (counter vs integrated instant power), power limit
  zeus.csv          4. Zeus (if importable) measuring the same windows side by side
  decode.csv        5. decode runs (Llama-3.2-1B preset; bf16 fp16 int8-weight fp8 int4-weight
                       nvfp4-emulated; batch 1 and 32) with J/token, tokens/s and the floor ratio
  gpu_check.json    all of it, and a "boards" map usable as TOKENWATT_SENSOR_FILE (the attribution
                       then uses each board's measured averaging window)

How to read it: docs/gpu-check.md.

    python benchmarks/gpu_check.py --out results/h200/gpu-check        # on the GPU box
    python benchmarks/gpu_check.py --simulate --out /tmp/gpu-check      # here: simulated NVML

--simulate runs the same protocol against tokenwatt's simulated NVML (tokenwatt.sim, installed as
`pynvml`, so Zeus reads the same simulated boards); the load is a power profile the simulated
board follows, the model runs on the CPU, every energy row says `simulated-...`, and each window
also has its exact simulated energy (truth_j), so the script checks itself. Its numbers are the
simulator's parameters, not a GPU's: never publish them as measurements.
Imports are lazy so the script can be carried to a bare GPU box with tokenwatt alone.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PRECISIONS = ("bf16", "fp16", "int8-weight", "fp8", "int4-weight", "nvfp4-emulated")
WINDOW_OFFSETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.45, 0.6, 0.8, 0.95)  # x period
PHASES = 8
SIM_IDLE_W, SIM_BUSY_W = 90.0, 620.0


# ------------------------------------------------------------------------------ loads


def sleep_until(t: float) -> None:
    """Sleep, then spin the last millisecond: a load edge lands within ~0.1 ms of plan."""
    while True:
        left = t - time.perf_counter()
        if left <= 0:
            return
        time.sleep(left - 0.001 if left > 0.002 else 0)


class GpuLoad:
    """Real load: back-to-back bf16 matmuls on one CUDA device during each interval."""

    def __init__(self, device: str) -> None:
        import torch

        self.torch, self.device = torch, torch.device(device)
        self.a = torch.randn(4096, 4096, dtype=torch.bfloat16, device=self.device)
        self.b, self.c = self.a.clone(), self.a.clone()
        self._spin(time.perf_counter() + 0.5)  # warm up clocks and the kernel cache

    def _spin(self, end: float) -> float:
        """Busy until `end` (one ~0.2 ms kernel at a time, synchronised: no queue left)."""
        while time.perf_counter() < end:
            self.torch.mm(self.a, self.b, out=self.c)
            self.torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def run(self, intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
        done = []
        for a, b in intervals:
            sleep_until(a)
            start = time.perf_counter()
            done.append((start, self._spin(b)))
        return done

    def truth(self, t0: float, t1: float) -> float | None:
        return None  # a real board's energy is what is being measured


class SimLoad:
    """Simulated load: the simulated board's power profile follows the same intervals."""

    def __init__(self, gpu: Any, sim: Any) -> None:
        self.gpu, self.sim, self.busy = gpu, sim, []

    def _rebuild(self) -> None:
        from tokenwatt.sim.profiles import PiecewiseProfile

        times, watts = [0.0], [SIM_IDLE_W]
        for a, b in self.busy:
            times += [a, b]
            watts += [SIM_BUSY_W, SIM_IDLE_W]
        self.gpu.profile = PiecewiseProfile(times, watts, name="gpu-check")

    def run(self, intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
        origin = self.sim.STATE.origin
        now = time.perf_counter()
        for a, b in intervals:  # only future edges: the energy already counted never changes
            self.busy.append((max(a, now) - origin, b - origin))
        self._rebuild()
        sleep_until(max(b for _, b in intervals))
        return [(max(a, now), b) for a, b in intervals]

    def truth(self, t0: float, t1: float) -> float:
        origin = self.sim.STATE.origin
        return self.gpu.profile.energy(t0 - origin, t1 - origin)


# ------------------------------------------------------------------------------ context


@dataclass
class Board:
    meter: Any
    load: Any
    key: str = ""
    period: float = 0.1
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    args: Any
    boards: list[Board]
    zeus: Any = None
    zeus_note: str = ""
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def add(self, section: str, row: dict[str, Any]) -> None:
        self.rows.setdefault(section, []).append(row)


def open_boards(args: Any) -> list[Board]:
    from tokenwatt.energy.meters.select import open_nvml
    from tokenwatt.placement import measured_boards

    gpus = args.gpus.split(",") if args.gpus else None
    if gpus is None:
        from tokenwatt.placement.nvml_ids import import_pynvml, nvml_init

        nv = import_pynvml()
        nvml_init(nv)
        gpus = [str(i) for i in range(nv.nvmlDeviceGetCount())]
        nv.nvmlShutdown()
    meters = open_nvml(measured_boards(gpus))  # NVML's numbering, as placement names them
    boards = []
    for m in meters:
        load = sim_load(m) if args.simulate else GpuLoad(cuda_device_of(m))
        boards.append(Board(m, load, m.channels[0].key, m.update_period_s() or 0.1))
    return boards


def sim_load(meter: Any) -> SimLoad:
    import tokenwatt.sim.nvml as sim

    return SimLoad(sim.STATE.gpus[meter.index], sim)


def cuda_device_of(meter: Any) -> str:
    """The torch device of an NVML board, by placement's one CUDA<->NVML matcher."""
    import torch  # noqa: F401 - cuda_boards asks torch once it is imported

    from tokenwatt.placement import cuda_boards, cuda_index_of

    index = cuda_index_of(meter.uuid, cuda_boards())
    if index is None:
        raise SystemExit(f"NVML board {meter.uuid} is not visible to CUDA; check "
                         "CUDA_VISIBLE_DEVICES")  # fmt: skip
    return f"cuda:{index}"


def updates(sampler: Any, board: Board) -> Any:
    from tokenwatt.energy.attribution import Updates

    return Updates.from_samples(sampler.samples(board.meter), board.key, board.period)


def last_tick(sampler: Any, board: Board) -> float:
    """When the board's counter last updated, as the running sampler dated it."""
    sampler.wait_ticks_after(time.perf_counter() - board.period, count=1)
    return float(updates(sampler, board).t[-1])


# ------------------------------------------------------------------------------ 1. sensor timing


def section_sensor(check: Check) -> None:
    for board in check.boards:
        m = board.meter
        periods = [p for p in [m.update_period_s()] + [m.measure_update_period(changes=8)
                                                        for _ in range(3)] if p]  # fmt: skip
        board.period = statistics.median(periods)
        instant_period = _instant_cadence(m)
        points = _window_sweep(check, board)
        w_inst = fit_window([(p["d_s"], p["frac_instant"]) for p in points], board.period)
        w_cnt = fit_window([(p["d_s"], p["frac_counter"]) for p in points], board.period)
        board.summary = {
            "board": board.key, "device_name": m.device_name, "uuid": m.uuid,
            "source": m.channels[0].source,
            "update_period_s": board.period,
            "update_period_s_all": ";".join(f"{p:.5f}" for p in periods),
            "instant_update_period_s": instant_period,
            "instant_window_s": w_inst,
            "instant_window_share": w_inst / board.period if w_inst else None,
            "counter_window_s": w_cnt,
            "counter_integrates_whole_period": None if w_cnt is None
            else bool(w_cnt >= 0.8 * board.period),
            "window_points": len(points),
            "meter_instant_window_s": m.instant_window_s(),
        }  # fmt: skip
        check.add("sensor", board.summary)


def _instant_cadence(meter: Any, seconds: float = 1.0) -> float | None:
    """Median gap between successive timestamps of the instant field."""
    stamps, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end:
        s = meter.read_power_sample()
        if s is not None and (not stamps or s[0] != stamps[-1]):
            stamps.append(s[0])
        time.sleep(0.002)
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return statistics.median(gaps) if gaps else None


def _window_sweep(check: Check, board: Board) -> list[dict[str, Any]]:
    """A load step starting d before an update, for d across the period: the instant value
    published at that update rises with d until d reaches its averaging window; the counter's
    energy of that period rises over the whole period if the counter integrates all the time."""
    from tokenwatt.energy.sampler import Sampler

    p = board.period
    sampler = Sampler([board.meter], interval_s=0.005).start()
    planned = []
    try:
        for rep in range(check.args.window_repeats):
            for frac in WINDOW_OFFSETS:
                time.sleep(4 * p)  # back to idle power
                tick = last_tick(sampler, board) + 2 * p
                d = frac * p
                planned.append((d, board.load.run([(tick - d, tick + 1.5 * p)])[0], rep))
        time.sleep(2 * p)
        sampler.wait_ticks_after(time.perf_counter(), count=1)
    finally:
        sampler.stop()
    return _window_points(check, board, updates(sampler, board), planned)


def _window_points(check: Check, board: Board, u: Any, planned: list) -> list[dict[str, Any]]:
    import numpy as np

    idle = _idle_instant(u, [iv for _, iv, _ in planned], board.period)
    out = []
    for d_planned, (start, end), rep in planned:
        k = int(np.searchsorted(u.t, start, side="right"))
        if k < 1 or k + 1 >= len(u.t) or u.t[k + 1] > end:
            continue
        period_k, period_b = u.t[k] - u.t[k - 1], u.t[k + 1] - u.t[k]
        e_k, e_busy = u.e[k] - u.e[k - 1], u.e[k + 1] - u.e[k]
        p_k, p_busy = float(u.p[k]), float(u.p[k + 1])
        d = float(u.t[k] - start)
        row = {
            "board": board.key, "repeat": rep, "d_planned_s": d_planned, "d_s": d,
            "instant_w": p_k, "idle_instant_w": idle, "busy_instant_w": p_busy,
            "frac_instant": _frac(p_k, idle, p_busy),
            "period_j": e_k, "busy_period_j": e_busy,
            "frac_counter": _frac(e_k / period_k, idle, e_busy / period_b),
        }  # fmt: skip
        truth = board.load.truth(float(u.t[k - 1]), float(u.t[k]))
        if truth is not None:
            row["truth_period_j"] = truth
        out.append(row)
        check.add("window_sweep", row)
    return out


def _idle_instant(u: Any, busy: list[tuple[float, float]], period: float) -> float:
    """Median instant value at updates whose whole preceding period had no load."""
    vals = [float(u.p[k]) for k in range(1, len(u.t))
            if not math.isnan(u.p[k]) and all(b < u.t[k - 1] - period or a > u.t[k]
                                              for a, b in busy)]  # fmt: skip
    return statistics.median(vals) if vals else float("nan")


def _frac(x: float, lo: float, hi: float) -> float:
    return (x - lo) / (hi - lo) if hi - lo > 1e-9 else float("nan")


def fit_window(points: list[tuple[float, float]], period: float) -> float | None:
    """The averaging window W that best explains frac(d) = min(d / W, 1), least squares."""
    pts = [(d, f) for d, f in points if math.isfinite(f) and 0 < d <= period]
    if len(pts) < 4:
        return None
    grid = [period * i / 400 for i in range(4, 401)]
    return min(grid, key=lambda w: sum((f - min(d / w, 1.0)) ** 2 for d, f in pts))


# ------------------------------------------------------------------------------ 2. part-time test


def section_parttime(check: Check) -> None:
    from tokenwatt.energy.recorder import PhaseRecorder
    from tokenwatt.energy.sampler import Sampler

    for board in check.boards:
        p, n = board.period, check.args.parttime_periods
        for i in range(PHASES):
            phase = i * p / PHASES
            sampler = Sampler([board.meter], interval_s=0.005).start()
            try:
                time.sleep(3 * p)
                t0 = last_tick(sampler, board) + 2 * p
                # One period of wave before and after the measured n: whatever the phase, the
                # counted periods hold the wave's steady state (no burst cut at an edge).
                bursts = [(t0 + k * p + phase, t0 + k * p + phase + p / 4)
                          for k in range(-1, n + 1)]  # fmt: skip
                rec = PhaseRecorder([board.meter], sampler=sampler, align=False)
                sleep_until(t0 - p - 0.005)
                zeus_begin(check, board, f"parttime-{board.key}-{i}")
                rec.mark("window")
                w0 = time.perf_counter()
                board.load.run(bursts)
                sleep_until(t0 + (n + 1) * p + 0.005)
                rec.mark("end")
                w1 = time.perf_counter()
                zeus_j = zeus_end(check, board, f"parttime-{board.key}-{i}")
                tokenwatt_j = rec.phases()["window"].total_j
            finally:
                sampler.stop()
            row = _parttime_row(board, updates(sampler, board), t0, n, phase, i)
            row.update(window_s=w1 - w0, tokenwatt_window_j=tokenwatt_j)
            truth = board.load.truth(w0, w1)
            add_zeus_row(check, board, f"parttime phase {i}", w1 - w0, tokenwatt_j, zeus_j, truth)
            if truth is not None:
                row["truth_window_j"] = truth
            check.add("parttime", row)
        board.summary.update(_parttime_verdict(check.rows.get("parttime", []), board))


def _parttime_row(board: Board, u: Any, t0: float, n: int, phase: float, i: int) -> dict:
    import numpy as np

    k0 = int(np.argmin(np.abs(u.t - t0)))
    k1 = int(np.argmin(np.abs(u.t - (t0 + n * board.period))))
    span = float(u.t[k1] - u.t[k0])
    counter_j = float(u.e[k1] - u.e[k0])
    instant_j = float(sum(u.p[k] * (u.t[k] - u.t[k - 1]) for k in range(k0 + 1, k1 + 1)))
    per_period = board.period / span if span > 0 else float("nan")  # a missed update: no bias
    return {
        "board": board.key, "phase_index": i, "phase_s": phase, "busy_s": board.period / 4,
        "updates_seen": k1 - k0, "span_s": span, "counter_j_per_period": counter_j * per_period,
        "instant_j_per_period": instant_j * per_period,
        "tick_alignment_error_s": float(u.t[k0] - t0),
    }  # fmt: skip


def _parttime_verdict(rows: list[dict[str, Any]], board: Board) -> dict[str, Any]:
    mine = [r for r in rows if r["board"] == board.key]
    c = [r["counter_j_per_period"] for r in mine]
    s = [r["instant_j_per_period"] for r in mine]
    spread = lambda xs: 100 * (max(xs) - min(xs)) / statistics.mean(xs) if xs else None  # noqa: E731
    cs, ss = spread(c), spread(s)
    if cs is None or ss is None:
        verdict = "not measured"
    elif cs < 5 and cs < ss / 4:
        verdict = "continuous: counter energy does not depend on where the load falls"
    elif cs >= ss / 2:
        verdict = "part-time: the counter misses load as the instant field does"
    else:
        verdict = "inconclusive: rerun with --parttime-periods larger"
    return {"parttime_counter_spread_pct": cs, "parttime_instant_spread_pct": ss,
            "parttime_verdict": verdict}  # fmt: skip


# ------------------------------------------------------------------------------ 3. steady load


def section_steady(check: Check) -> None:
    from tokenwatt.energy.recorder import PhaseRecorder, measure_idle_power

    a = check.args
    for board in check.boards:
        m = board.meter
        before = m.edge_state()
        t_idle0 = time.perf_counter()
        idle = measure_idle_power([m], a.idle_seconds).get(board.key)
        idle_truth = board.load.truth(t_idle0, time.perf_counter())
        rec = PhaseRecorder([m])
        zeus_begin(check, board, f"steady-{board.key}")
        rec.mark("steady")
        w0 = time.perf_counter()
        board.load.run([(w0, w0 + a.steady_seconds)])
        rec.mark("end")
        w1 = time.perf_counter()
        zeus_j = zeus_end(check, board, f"steady-{board.key}")
        q, steady = rec.quality(), rec.phases()["steady"]
        truth = board.load.truth(w0, w1)
        add_zeus_row(check, board, "steady load", w1 - w0, steady.total_j, zeus_j, truth)
        after = m.edge_state()
        row = {
            "board": board.key, "idle_power_w": idle, "steady_s": steady.seconds,
            "steady_counter_w": steady.total_j / steady.seconds,
            "counter_vs_trace_gap_pct": q.get("counter_vs_trace_gap_pct"),
            "quality_flags": q.get("flags"), "power_limit_w": m.power_limit_w,
            "temperature_c_before": before.get("temperature_c"),
            "temperature_c_after": after.get("temperature_c"),
            "sm_clock_mhz_after": after.get("sm_clock_mhz"),
            "other_processes": ";".join(map(str, m.other_pids())),
        }  # fmt: skip
        if truth is not None:
            row.update(
                truth_steady_w=truth / (w1 - w0),
                truth_idle_w=idle_truth / a.idle_seconds if idle_truth else None,
            )
        check.add("steady", row)


# ------------------------------------------------------------------------------ 4. Zeus


def open_zeus(check: Check) -> None:
    try:
        from zeus.monitor import ZeusMonitor
    except ImportError as e:
        check.zeus_note = (
            f"not run: zeus is not importable ({e}); pip install zeus==0.16.0 "
            "(on a bare GPU box: carry its wheel) to measure the same windows"
        )
        return
    try:
        indices = [b.meter.index for b in check.boards]
        check.zeus = ZeusMonitor(gpu_indices=indices, approx_instant_energy=False)
        check.zeus_note = f"zeus {__import__('zeus').__version__}, ZeusMonitor on NVML {indices}"
    except Exception as e:  # Zeus refusing this machine is a finding, not a crash
        check.zeus_note = f"not run: ZeusMonitor failed: {type(e).__name__}: {e}"


def zeus_begin(check: Check, board: Board, name: str) -> None:
    if check.zeus is not None:
        check.zeus.begin_window(name, sync_execution=not check.args.simulate)


def zeus_end(check: Check, board: Board, name: str) -> float | None:
    if check.zeus is None:
        return None
    m = check.zeus.end_window(name, sync_execution=not check.args.simulate)
    return float(m.gpu_energy.get(board.meter.index, math.nan))


def add_zeus_row(check: Check, board: Board, window: str, seconds: float, tokenwatt_j: float,
                 zeus_j: float | None, truth_j: float | None) -> None:  # fmt: skip
    row: dict[str, Any] = {"board": board.key, "window": window, "seconds": seconds,
                           "tokenwatt_j": tokenwatt_j, "zeus_j": zeus_j}  # fmt: skip
    if zeus_j is not None and tokenwatt_j:
        row["zeus_vs_tokenwatt_pct"] = 100 * (zeus_j - tokenwatt_j) / tokenwatt_j
    if truth_j is not None:
        row["truth_j"] = truth_j
        row["tokenwatt_error_pct"] = 100 * (tokenwatt_j - truth_j) / truth_j
        if zeus_j is not None:
            row["zeus_error_pct"] = 100 * (zeus_j - truth_j) / truth_j
    check.add("zeus", row)


# ------------------------------------------------------------------------------ 5. decode runs


def section_decode(check: Check) -> None:
    from tokenwatt.config import validate
    from tokenwatt.runner.run import run_config

    a, board = check.args, check.boards[0]
    out = Path(a.runs_out)
    for precision in a.precisions.split(","):
        for batch in (int(b) for b in a.batches.split(",")):
            cfg = validate({
                "name": f"gpu-check-{precision}-b{batch}", "model": a.model,
                "precision": precision, "device": a.device, "fidelity": {"enabled": False},
                "workload": {"batch_size": batch, "prompt_tokens": a.prompt_tokens,
                             "new_tokens": a.new_tokens},
                "measure": {"meter": "nvml", "gpus": [board.meter.uuid], "repeats": a.trials,
                            "min_seconds": a.min_seconds, "idle_seconds": a.run_idle_seconds},
                "out": str(out),
            })  # fmt: skip
            check.add("decode", _decode_row(run_config, cfg, precision, batch))


def _decode_row(run_config: Any, cfg: Any, precision: str, batch: int) -> dict[str, Any]:
    row: dict[str, Any] = {"precision": precision, "batch_size": batch}
    try:
        s = run_config(cfg).summary
    except Exception as e:  # an unsupported precision is a row saying why, not a crash
        return row | {"status": "failed", "error": f"{type(e).__name__}: {e}"[:300]}
    keys = (
        "decode_j_per_token_mean",
        "decode_j_per_token_ci95_low",
        "decode_j_per_token_ci95_high",
        "decode_tokens_per_s_mean",
        "avg_power_w_mean",
        "idle_power_w",
        "floor_hardware",
        "floor_j_per_token",
        "floor_ratio",
        "floor_j_per_token_native_format",
        "precision_backend",
        "weight_bits",
        "activation_bits",
        "energy_source",
        "measured",
        "contended",
        "n_trials",
        "flags",
    )
    return row | {"status": "ok"} | {k: s.get(k) for k in keys}  # fmt: skip


# ------------------------------------------------------------------------------ output


SECTIONS = {"sensor": "sensor.csv", "window_sweep": "window_sweep.csv", "parttime": "parttime.csv",
            "steady": "steady.csv", "zeus": "zeus.csv", "decode": "decode.csv"}  # fmt: skip


def write_outputs(check: Check, out: Path, started: float) -> None:
    if not check.rows.get("zeus"):
        check.add("zeus", {"status": check.zeus_note})
    for section, name in SECTIONS.items():
        rows = check.rows.get(section) or [{"status": "not run"}]
        keys = list(dict.fromkeys(k for r in rows for k in r))
        with (out / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)
        print(f"wrote {out / name} ({len(rows)} rows)")
    source = "simulated NVML (tokenwatt.sim)" if check.args.simulate else "benchmarks/gpu_check.py"
    boards = {b.meter.uuid: {"instant_window_s": b.summary.get("instant_window_s"),
                             "update_period_s": b.summary.get("update_period_s"),
                             "device_name": b.meter.device_name,
                             "source": f"measured by {source}, {time.strftime('%Y-%m-%d')}"}
              for b in check.boards}  # fmt: skip
    doc = {"simulated": bool(check.args.simulate), "args": vars(check.args),
           "seconds": time.perf_counter() - started, "zeus": check.zeus_note,
           "meters": [b.meter.describe() for b in check.boards], "boards": boards,
           "sections": check.rows}  # fmt: skip
    (out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str))
    print(f"wrote {out / 'gpu_check.json'}")


def print_summary(check: Check) -> None:
    for b in check.boards:
        s = b.summary
        print(f"{b.key} {s.get('device_name')}: update period {_ms(s.get('update_period_s'))}, "
              f"instant window {_ms(s.get('instant_window_s'))} "
              f"({_pct(s.get('instant_window_share'))} of each period), counter window "
              f"{_ms(s.get('counter_window_s'))}; part-time test: {s.get('parttime_verdict')} "
              f"(counter spread {_pct1(s.get('parttime_counter_spread_pct'))}, instant "
              f"{_pct1(s.get('parttime_instant_spread_pct'))})")  # fmt: skip
    for r in check.rows.get("steady", []):
        print(f"{r['board']}: idle {r['idle_power_w']:.1f} W, steady {r['steady_counter_w']:.1f} W,"
              f" counter vs trace {r['counter_vs_trace_gap_pct']:+.1f}%, limit "
              f"{r['power_limit_w']} W")  # fmt: skip
    print(f"zeus: {check.zeus_note}")
    for r in check.rows.get("decode", []):
        if r["status"] == "ok":
            print(f"decode {r['precision']:>15} b{r['batch_size']:<3} "
                  f"{r['decode_j_per_token_mean']:.4g} J/token, "
                  f"{r['decode_tokens_per_s_mean']:.4g} tokens/s, floor ratio "
                  f"{_num(r['floor_ratio'])}")  # fmt: skip
        else:
            print(f"decode {r['precision']:>15} b{r['batch_size']:<3} {r['error']}")


def _ms(v: Any) -> str:
    return f"{1000 * v:.1f} ms" if isinstance(v, float) else "-"


def _pct(v: Any) -> str:
    return f"{100 * v:.0f}%" if isinstance(v, float) else "-"


def _pct1(v: Any) -> str:
    return f"{v:.1f}%" if isinstance(v, float) else "-"


def _num(v: Any) -> str:
    return f"{v:.3g}" if isinstance(v, (int, float)) and v == v else "-"


# ------------------------------------------------------------------------------ main


def parse(argv: list[str] | None = None) -> Any:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the CSVs and gpu_check.json")
    ap.add_argument("--simulate", action="store_true", help="run against the simulated NVML")
    ap.add_argument("--gpus", help="NVML boards to check (default: all)")
    ap.add_argument("--model", help="decode model (default: preset:llama-3.2-1b; sim: tiny)")
    ap.add_argument("--device", help="where the decode runs (default: cuda; sim: cpu)")
    ap.add_argument("--precisions", default=",".join(PRECISIONS))
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--run-idle-seconds", type=float, default=2.0)
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--steady-seconds", type=float, default=10.0)
    ap.add_argument("--window-repeats", type=int, default=2)
    ap.add_argument("--parttime-periods", type=int, default=20)
    ap.add_argument("--runs-out", help="results folder of the decode runs (default: OUT/decode)")
    ap.add_argument("--skip", default="", help="sections to skip, e.g. decode")
    args = ap.parse_args(argv)
    if args.simulate:  # small and quick, on the CPU, against the simulated boards
        args.model = args.model or "preset:tiny-llama"
        args.device = args.device or "cpu"
        for name, quick in (("prompt_tokens", 16), ("new_tokens", 4), ("trials", 2),
                            ("min_seconds", 0.0), ("run_idle_seconds", 0.5),
                            ("idle_seconds", 1.0), ("steady_seconds", 2.0),
                            ("window_repeats", 1), ("parttime_periods", 10)):  # fmt: skip
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, quick)
    args.model = args.model or "preset:llama-3.2-1b"
    args.device = args.device or "cuda"
    args.runs_out = args.runs_out or str(Path(args.out) / "decode")
    return args


def setup_simulation() -> None:
    """The simulated NVML as `pynvml` for every importer (tokenwatt and Zeus alike): one
    100 ms / 25 ms H100 board following the load schedule, on the real clock."""
    from tokenwatt.sim import shim_dir

    sys.path.insert(0, shim_dir())
    os.environ.pop("TOKENWATT_NVML_MODULE", None)
    import pynvml  # noqa: F401 - the shim: it configures itself from TOKENWATT_SIM_* on import

    import tokenwatt.sim.nvml as sim

    sim.configure(1, SIM_IDLE_W, period_s=0.1, instant_window_s=0.025, power_limit_w=700.0)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    started = time.perf_counter()
    if args.simulate:
        setup_simulation()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from tokenwatt.runner.quiet import quiet_libraries

    quiet_libraries(whole_process=True)
    check = Check(args, open_boards(args))
    open_zeus(check)
    skip = set(filter(None, args.skip.split(",")))
    try:
        for name, section in (("sensor", section_sensor), ("parttime", section_parttime),
                              ("steady", section_steady), ("decode", section_decode)):  # fmt: skip
            if name not in skip:
                t = time.perf_counter()
                section(check)
                print(f"section {name}: {time.perf_counter() - t:.1f} s", flush=True)
    finally:
        write_outputs(check, out, started)
        for b in check.boards:
            b.meter.close()
    print_summary(check)
    print(
        f"gpu_check: {time.perf_counter() - started:.0f} s"
        + (" (SIMULATED NVML: not a GPU measurement)" if args.simulate else "")
    )


if __name__ == "__main__":
    main()
