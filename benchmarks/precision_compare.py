"""Every precision on the tiny presets on this CPU: J/token (estimate), tokens/s, fidelity.

Runs each (preset, precision) through tokenwatt's own runner (`tokenwatt.runner.run.run_config`)
with the CPU estimate meter, and prints one table: decode J/token (an estimate from TDP and
utilisation: this VM has no RAPL), decode tokens/s, weight bytes, the share of parameters
quantised, and fidelity against the fp32 reference of the same weights (top-1 agreement and
KL, teacher-forced). A precision this machine cannot run appears with its one-line reason.
The FP4 rows are emulated (dequantise + BF16 matmul): their energy and speed are those of the
emulation on this CPU, not of FP4 hardware. The presets have random weights, so top-1 is
pessimistic (near-uniform distributions; see tokenwatt/fidelity.py) and KL is the ranking
figure. Eager decode only: compiling on this shared 2-core VM takes minutes per model.

    python benchmarks/precision_compare.py [--repeats 3] [--min-seconds 2] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)

OUT = Path(__file__).parent / "results"
PRESETS = ("tiny-llama", "tiny-moe")
COLUMNS = [
    "model", "precision", "status", "decode_j_per_token_mean", "decode_j_per_token_cv",
    "decode_tokens_per_s_mean", "total_j_per_token_mean", "top1_agreement", "kl_divergence",
    "weight_bytes", "quantized_param_fraction", "peak_memory_mb", "params_total",
    "params_active", "routing_imbalance_max_over_mean", "emulated", "precision_backend",
    "energy_source", "measured",
]  # fmt: skip


NOTES = """
Notes
- j_per_tok: decode J per generated token from the CPU estimate meter (TDP x utilisation),
  labelled estimate in the CSV (`energy_source`, `measured`). tok_per_s: decode tokens/s.
  This VM's 2 cores are shared with other jobs, so speed and energy carry that noise; the
  CSV has the coefficient of variation across trials.
- peak_memory_mb (CSV only): on CPU the process's peak resident memory, which never goes
  down, so in this one-process benchmark each row carries the peak of all rows before it.
- quantised: share of parameters actually stored quantised (`quantized_param_fraction`).
  Embeddings stay bf16 everywhere. tiny-llama's MLP width 688 is not a multiple of 32, so
  MXFP4 (32-value blocks) and CPU int4 (groups of 32) leave its down_proj in bf16. tiny-moe's
  experts are quantised by tokenwatt (torchao skips 3-D expert tensors): above 0.9.
- int4-weight on CPU is torchao's IntxWeightOnlyConfig (int4 codes one per byte, dequantised
  in the matmul): it saves less memory than its name suggests and is slow here.
- *-emulated: FP4 numerics (E2M1 codes + block scales) dequantised to bf16 for every matmul.
  The energy and speed are the emulation's on this CPU, never FP4 hardware's.
- Fidelity: against fp32 of the same weights, teacher-forced on sequences the reference
  generated. Random weights give near-flat next-token distributions, so top-1 flips at
  near-ties (bf16 already loses a few per cent); rank precisions by kl.
"""


def run_one(preset: str, precision: str, args: argparse.Namespace, out: Path) -> dict:
    from tokenwatt.config import RunConfig
    from tokenwatt.errors import UserError
    from tokenwatt.runner.run import run_config

    cfg = RunConfig(
        name=f"{preset}-{precision}",
        model=f"preset:{preset}",
        precision=precision,
        device="cpu",
        workload={"batch_size": args.batch_size, "prompt_tokens": args.prompt_tokens,
                  "new_tokens": args.new_tokens, "seed": 0},
        measure={"meter": "estimate", "warmup": 1, "repeats": args.repeats,
                 "min_seconds": args.min_seconds, "idle_seconds": 1.0},
        fidelity={"enabled": True, "reference": "auto", "sequences": 4, "tokens": 32},
        out=str(out / f"{preset}-{precision}"),
    )  # fmt: skip
    try:
        summary = run_config(cfg).summary
    except UserError as e:
        return {"model": cfg.model, "precision": precision, "status": f"unsupported: {e}"}
    return {**{c: summary.get(c) for c in COLUMNS}, "status": "ok"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--precisions", default="", help="comma list; default: all")
    ap.add_argument("--render", metavar="HEADER", help="only rewrite the .md from the .csv")
    args = ap.parse_args()
    rec = Record()
    if args.render:
        import pandas as pd

        df = pd.read_csv(OUT / "precision_compare.csv")
        text = f"{args.render}\n\n{_table(df)}\n{NOTES}"
        (OUT / "precision_compare.md").write_text(text)
        print(text)
        return

    import pandas as pd
    import torch

    from tokenwatt.registry.precisions import PRECISION_NAMES

    precisions = [p for p in args.precisions.split(",") if p] or list(PRECISION_NAMES)
    rows, start = [], time.time()
    with tempfile.TemporaryDirectory() as tmp:
        for preset in PRESETS:
            for precision in precisions:
                rows.append(run_one(preset, precision, args, Path(tmp)))
                print(f"{preset:11s} {precision:15s} {rows[-1]['status'][:60]}", flush=True)
    df = pd.DataFrame(rows, columns=COLUMNS)
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / "precision_compare.csv", index=False)
    table = _table(df)
    header = (
        "# Precision comparison, tiny presets, this CPU (eager decode)\n\n"
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch "
        f"{args.batch_size}, prompt {args.prompt_tokens}, new tokens {args.new_tokens}, "
        f"{args.repeats} trials of >= {args.min_seconds} s; energy: CPU estimate "
        "(TDP x utilisation, not measured); fidelity vs fp32, teacher-forced, 4 x 32 "
        f"positions; *-emulated = FP4 numerics emulated in PyTorch. {time.time() - start:.0f} s."
        "\n\n"
    )
    (OUT / "precision_compare.md").write_text(header + table + "\n" + NOTES)
    rec.write(OUT, "precision_compare", ["precision_compare.csv", "precision_compare.md"])
    print(header + table + "\n" + NOTES)


def _table(df) -> str:
    """The compact view: one line per (model, precision)."""
    view = df.assign(
        model=df["model"].str.removeprefix("preset:"),
        j_per_tok=df["decode_j_per_token_mean"],
        j_cv=df["decode_j_per_token_cv"],
        tok_per_s=df["decode_tokens_per_s_mean"],
        weight_mb=df["weight_bytes"] / 1e6,
        quantised=df["quantized_param_fraction"],
        top1=df["top1_agreement"],
        kl=df["kl_divergence"],
        status=df["status"].str.slice(0, 90),
    )[["model", "precision", "j_per_tok", "j_cv", "tok_per_s", "weight_mb", "quantised", "top1",
       "kl", "status"]]  # fmt: skip
    return view.to_string(index=False, float_format=lambda v: f"{v:.4g}", na_rep="-")


if __name__ == "__main__":
    main()
