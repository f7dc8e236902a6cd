"""The three engines on the same tiny model and workload: tokens/s and J/token, paired in one
run (issue 14).

At each batch size (1 and 8 by default), round by round: tokenwatt's transformers loop, vLLM's
offline engine in process, and a vLLM OpenAI-compatible server started by `--launch` for its
run (a child of this process, so the CPU estimate covers it; nothing else runs beside the other
engines) and driven by tokenwatt's streaming client (`whole-run` window). Same preset weights
(saved once), prompt and new tokens, fp32 on the CPU. Run it in the vLLM environment
(scripts/vllm-env.sh); the figures are medians over rounds of each run's mean, and each
engine's ratio to transformers is the median of the per-round ratios. Every run is labelled
contended or not; publish only an uncontended run.

    VLLM_CPU_KVCACHE_SPACE=1 VLLM_HOST_IP=127.0.0.1 HF_HUB_OFFLINE=1 \\
        python benchmarks/engines.py [--batch 1 8] [--rounds 2] [--new-tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
from pathlib import Path

from _record import Record  # noqa: E402  (benchmarks/: the script's own folder)

ENGINES = ("transformers", "vllm", "openai")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(ckpt: Path, port: int, max_seqs: int) -> str:
    return (
        f"{sys.executable} -m vllm.entrypoints.openai.api_server --model {ckpt} "
        f"--served-model-name preset:tiny-llama --dtype float32 --host 127.0.0.1 "
        f"--port {port} --max-model-len 512 --max-num-seqs {max_seqs} --enforce-eager"
    )


def one_run(engine: str, batch: int, args: argparse.Namespace, out: Path, ckpt: Path) -> dict:
    import tokenwatt

    kw = dict(model="preset:tiny-llama", precision="fp32", batch_size=batch,
              prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens,
              repeats=args.repeats, min_seconds=args.min_seconds, idle_seconds=1.0,
              warmup=1, meter="estimate", out=str(out / engine))  # fmt: skip
    if engine == "transformers":
        kw.update(device="cpu", fidelity=False)
    elif engine == "vllm":
        kw.update(engine="vllm", device="cpu", fidelity=False)
    else:
        port = free_port()
        kw.update(engine="openai", url=f"http://127.0.0.1:{port}/v1", requests=4 * batch,
                  launch=server_command(ckpt, port, batch))  # fmt: skip
        kw.pop("model")
    outcome = tokenwatt.run(**kw)
    s = outcome.summary
    return {"engine": engine, "batch_size": batch, "run_id": outcome.run_id,
            "tokens_per_s": s.get("decode_tokens_per_s_mean") if engine == "openai" else
            s["tokens_generated"] / (s["prefill_s"] + s["decode_s"]),
            "total_j_per_token": s.get("total_j_per_token_mean"),
            "decode_j_per_token": s.get("decode_j_per_token_mean"),
            "contended": bool(s.get("contended")), "energy_source": s.get("energy_source"),
            "window": s.get("window")}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--min-seconds", type=float, default=2.0)
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--out", default="benchmarks/results")
    args = p.parse_args()
    rec = Record()
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_HOST_IP", "127.0.0.1")
    from tokenwatt.models.export import export_preset, with_word_tokenizer

    work = Path(tempfile.mkdtemp(prefix="tokenwatt-engines-"))
    ckpt = with_word_tokenizer(export_preset("tiny-llama", 0, "float32"), work / "ckpt")
    runs = []
    for r in range(args.rounds):
        for batch in args.batch:
            for engine in ENGINES:  # the same order each round: pairs are close in time
                res = one_run(engine, batch, args, work / f"r{r}-b{batch}", ckpt)
                res["round"] = r
                runs.append(res)
                print(json.dumps(res), flush=True)
    table = summarise(runs, args.batch)
    print(json.dumps(table, indent=2))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "engines.json").write_text(
        json.dumps(
            {"runs": runs, "summary": table, "args": vars(args), "load_before": os.getloadavg()},
            indent=2,
        )
    )
    rec.write(out, "engines", ["engines.json"])
    return 0


def summarise(runs: list[dict], batches: list[int]) -> list[dict]:
    rows = []
    for batch in batches:
        base = {r["round"]: r for r in runs if r["batch_size"] == batch
                and r["engine"] == "transformers"}  # fmt: skip
        for engine in ENGINES:
            mine = [r for r in runs if r["batch_size"] == batch and r["engine"] == engine]
            ratios = [r["tokens_per_s"] / base[r["round"]]["tokens_per_s"] for r in mine]
            jr = [r["total_j_per_token"] / base[r["round"]]["total_j_per_token"] for r in mine]
            rows.append({"batch_size": batch, "engine": engine,
                         "tokens_per_s_median": statistics.median(r["tokens_per_s"] for r in mine),
                         "total_j_per_token_median": statistics.median(
                             r["total_j_per_token"] for r in mine),
                         "tokens_per_s_vs_transformers": statistics.median(ratios),
                         "j_per_token_vs_transformers": statistics.median(jr),
                         "contended_runs": sum(r["contended"] for r in mine),
                         "runs": len(mine)})  # fmt: skip
    return rows


if __name__ == "__main__":  # vLLM's workers start with spawn
    sys.exit(main())
