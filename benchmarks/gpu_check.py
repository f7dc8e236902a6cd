"""Real-GPU check of the measurement core (run on a lent GPU; see issue 3).

Measures, on NVML: the energy counter's real update period (several times), idle power, and
decode runs of a preset (batch 1 and 32) through tokenwatt's own run (`run_config`: the trial
loop, attribution and rows users get, written under OUT/decode); then the sampler's overhead on
decode tokens/s (paired on/off alternations). Writes CSVs to --out.

    python benchmarks/gpu_check.py --out results/h100            # on the GPU box
    TOKENWATT_NVML_MODULE=tokenwatt.sim.nvml python benchmarks/gpu_check.py --device cpu \\
        --gpus 0 --precision fp32 --model preset:tiny-llama --out /tmp/x
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


def decode_runs(args, out: Path) -> None:
    """Decode energy per batch size through tokenwatt's own run (the loop users run)."""
    from tokenwatt.config import validate
    from tokenwatt.runner.run import run_config

    for b in (int(x) for x in args.batches.split(",")):
        cfg = validate({
            "name": f"gpu-check-b{b}", "model": args.model, "precision": args.precision,
            "device": args.device, "fidelity": {"enabled": False},
            "workload": {"batch_size": b, "prompt_tokens": args.prompt_tokens,
                         "new_tokens": args.new_tokens},
            "measure": {"meter": "nvml", "gpus": args.gpus, "repeats": args.trials,
                        "min_seconds": args.min_seconds, "idle_seconds": args.idle_seconds,
                        "cooldown_s": 1.0},
            "out": str(out / "decode"),
        })  # fmt: skip
        s = run_config(cfg).summary
        print({k: s.get(k) for k in ("batch_size", "decode_j_per_token_mean",
                                     "decode_tokens_per_s_mean", "avg_power_w_mean",
                                     "idle_power_w", "flags")})  # fmt: skip


def main() -> None:
    import torch

    from tokenwatt._util.devices import synchronize
    from tokenwatt.energy.meters.select import open_nvml
    from tokenwatt.energy.recorder import measure_idle_power
    from tokenwatt.energy.sampler import Sampler
    from tokenwatt.models.decode import generate
    from tokenwatt.models.load import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="preset:llama-3.2-1b")
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--gpus", default=None, help="boards to measure (default: the model's)")
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

    (meter,) = open_nvml(args.device, args.gpus.split(",") if args.gpus else None)
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

    decode_runs(args, out)

    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = load_model(args.model, args.device, dtype, seed=0).model.eval()
    vocab = model.config.get_text_config().vocab_size
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
