"""Real-GPU check of the measurement core (run on a lent GPU; see issue 3).

Measures, on NVML: the energy counter's real update period (several times), idle power, and
for decode runs of a preset at bf16 (batch 1 and 32): energy per phase with the counter, the
counter-vs-trace gap, average power, temperature and clocks at the edges; then the sampler's
overhead on decode tokens/s (paired on/off alternations). Writes CSVs to --out.

    python benchmarks/gpu_check.py --out results/h100            # on the GPU box
    PYTHONPATH=$(python -c 'import tokenwatt.sim as s; print(s.shim_dir())') \\
        python benchmarks/gpu_check.py --device cpu --model preset:tiny-llama --out /tmp/x
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def write(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {path}")


def trial(meter, model, ids, new_tokens, min_s, generate):
    from tokenwatt.energy.recorder import PhaseRecorder

    rec = PhaseRecorder([meter])
    edge0, reps, t0 = meter.edge_state(), 0, time.perf_counter()
    while time.perf_counter() - t0 < min_s or reps == 0:
        gen = generate(model, ids, new_tokens, rec.mark)
        reps += 1
    ph, q = rec.phases(), rec.quality()
    key = meter.channels[0].key
    pre, dec = ph["prefill"], ph["decode"]
    return {
        "repetitions": reps,
        "prefill_s": pre.seconds,
        "decode_s": dec.seconds,
        "prefill_j": pre.joules[key],
        "decode_j": dec.joules[key],
        "decode_j_per_token": dec.joules[key] / (reps * gen.decode_tokens),
        "decode_tokens_per_s": reps * gen.decode_tokens / dec.seconds,
        "avg_power_w": q["avg_power_w"],
        "counter_vs_trace_gap_pct": q["counter_vs_trace_gap_pct"],
        "flags": q["flags"],
        "temp_start_c": edge0.get("temperature_c"),
        "temp_end_c": meter.edge_state().get("temperature_c"),
        "sm_clock_end_mhz": meter.edge_state().get("sm_clock_mhz"),
    }


def main() -> None:
    import torch

    from tokenwatt.energy.meters.select import open_nvml
    from tokenwatt.energy.recorder import measure_idle_power
    from tokenwatt.energy.sampler import Sampler
    from tokenwatt.models.decode import generate, synchronize
    from tokenwatt.models.load import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="preset:llama-3.2-1b")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=5.0)
    ap.add_argument("--idle-seconds", type=float, default=5.0)
    ap.add_argument("--pairs", type=int, default=10)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    meter = open_nvml(args.device)
    periods = [meter.update_period_s()] + [meter.measure_update_period(changes=6) for _ in range(4)]
    idle = measure_idle_power([meter], args.idle_seconds)
    d = meter.describe()
    write(out / "gpu_meter.csv", [{
        "device_name": d["device_name"], "source": d["source"], "simulated": d["simulated"],
        "update_period_s_median": statistics.median(p for p in periods if p),
        "update_period_s_all": ";".join(f"{p:.4f}" for p in periods if p),
        "idle_power_w": idle.get(meter.channels[0].key), "power_limit_w": d["power_limit_w"],
        "other_processes": d["other_processes"],
    }])  # fmt: skip

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = load_model(args.model, args.device, dtype, seed=0).model.eval()
    vocab = model.config.get_text_config().vocab_size
    rows = []
    for b in (int(x) for x in args.batches.split(",")):
        ids = torch.randint(0, vocab, (b, args.prompt_tokens), device=args.device)
        generate(model, ids, args.new_tokens)  # warm-up
        for i in range(args.trials):
            time.sleep(1.0)  # a short cool-down between trials
            row = {"model": args.model, "batch_size": b, "trial": i}
            row.update(trial(meter, model, ids, args.new_tokens, args.min_seconds, generate))
            rows.append(row)
            print(row)
    write(out / "gpu_decode.csv", rows)

    ids = torch.randint(0, vocab, (1, args.prompt_tokens), device=args.device)
    pairs = []
    for i in range(args.pairs):
        got = {}
        for on in (False, True) if i % 2 == 0 else (True, False):
            s = Sampler([meter]).start() if on else None
            synchronize(args.device)
            t0 = time.perf_counter()
            gen = generate(model, ids, args.new_tokens)
            got[on] = gen.decode_tokens / (time.perf_counter() - t0)
            if s is not None:
                s.stop()
        pairs.append({"pair": i, "off_tok_s": got[False], "on_tok_s": got[True],
                      "slowdown_pct": 100 * (1 - got[True] / got[False])})  # fmt: skip
    write(out / "gpu_overhead.csv", pairs)
    print("median sampler slowdown %:", statistics.median(p["slowdown_pct"] for p in pairs))
    meter.close()


if __name__ == "__main__":
    main()
