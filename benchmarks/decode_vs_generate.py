"""tokenwatt's decode loop vs `model.generate`, paired in one process.

Same model, same prompts, greedy, fixed new tokens; the two alternate (order flipped every
pair) so drift of this noisy machine hits both alike. Prints the median tokens/s ratio
(tokenwatt / generate) and writes benchmarks/results/decode_vs_generate.{csv,md}.
Goal: ratio >= 1.0.

    python benchmarks/decode_vs_generate.py [--pairs 20] [--batch-size 1] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)

from tokenwatt.models.decode import generate
from tokenwatt.models.load import load_model

OUT = Path(__file__).parent / "results"


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench(preset: str, batch: int, prompt: int, new: int, pairs: int, dtype: torch.dtype):
    model = load_model(f"preset:{preset}", "cpu", dtype, seed=0).model
    ids = torch.randint(0, model.config.vocab_size, (batch, prompt))
    mask = torch.ones_like(ids)

    def ours():
        generate(model, ids, new)

    @torch.inference_mode()
    def hf():
        model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new,
                       do_sample=False, pad_token_id=0)  # fmt: skip

    ours(), hf()  # warm-up both
    ratios = []
    for i in range(pairs):
        a, b = (timed(ours), timed(hf)) if i % 2 == 0 else reversed((timed(hf), timed(ours)))
        ratios.append(b / a)  # tokens/s ratio = time(generate) / time(ours)
    tokens = batch * new
    return {
        "preset": preset,
        "dtype": str(dtype).removeprefix("torch."),
        "batch_size": batch,
        "prompt_tokens": prompt,
        "new_tokens": new,
        "pairs": pairs,
        "ratio_median": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "tokens_per_run": tokens,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    rec = Record()
    rows = [
        bench("tiny-llama", 1, 64, args.new_tokens, args.pairs, torch.float32),
        bench("tiny-llama", 8, 64, args.new_tokens, args.pairs, torch.float32),
        bench("tiny-llama", 1, 64, args.new_tokens, args.pairs, torch.bfloat16),
    ]
    import pandas as pd

    df = pd.DataFrame(rows)
    OUT.mkdir(exist_ok=True)
    df.to_csv(OUT / "decode_vs_generate.csv", index=False)
    md = df.to_markdown(index=False, floatfmt=".3f") if _has_tabulate() else df.to_string()
    (OUT / "decode_vs_generate.md").write_text(
        "# tokenwatt decode loop vs model.generate (tokens/s ratio, >1 = tokenwatt faster)\n\n"
        f"torch {torch.__version__}, CPU, {torch.get_num_threads()} threads\n\n{md}\n"
    )
    rec.write(OUT, "decode_vs_generate", ["decode_vs_generate.csv", "decode_vs_generate.md"])
    print(df.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
