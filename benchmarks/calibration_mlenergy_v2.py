"""Turn the ML.ENERGY leaderboard v2 LLM data into tokenwatt's calibration table.

    git clone https://github.com/ml-energy/leaderboard-v2 /tmp/lbv2
    python benchmarks/calibration_mlenergy_v2.py /tmp/lbv2 \
        > tokenwatt/data/calibration/mlenergy-v2.csv

Reads data/llm_text_generation/{chat,code}/<GPU>/<org>/<model>/bs*+tp*+pp*.json at the clone's
HEAD and writes one CSV row per file, the published figures untouched:

- `Energy/req (J)` is the steady-state GPU energy (every board of the deployment, summed over the
  pipeline's nodes, read through Zeus from NVML) per output token x the mean output length
  (scripts/aggregate_leaderboard_data.py), so J per output token = Energy/req / Avg Output Tokens.
  It covers the GPU boards only (no CPU, no node), and the prefill of the requests admitted
  during the window (vLLM's continuous batching interleaves them with decoding).
- `Avg BS (reqs)` is the mean running batch over the steady state; `TP` the boards per node and
  `PP` the pipeline stages (nodes): the deployment spans TP x PP boards.
- The mean prompt length is not published per file: it is approximated from the prompt set
  (ShareGPT_V3_filtered_500.json: 350 characters on average, about 4 characters per token, plus
  the chat template) and labelled as such in `prompt_tokens_basis`.
"""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys

SOURCE = "ML.ENERGY leaderboard v2 (github.com/ml-energy/leaderboard-v2)"
COVERS = (
    "GPU boards only (NVML energy counter via Zeus), all TP x PP boards summed, vLLM "
    "steady-state window, per output token, prefill of admitted requests included"
)
# HF id -> tokenwatt preset (shapes); a model without a preset stays in the table, unfitted.
PRESET = {
    "google/gemma-2-2b-it": "gemma-2-2b",
    "google/gemma-2-9b-it": "gemma-2-9b",
    "google/gemma-2-27b-it": "gemma-2-27b",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "llama-3.1-8b",
    "meta-llama/Meta-Llama-3.1-70B-Instruct": "llama-3.1-70b",
    "meta-llama/Meta-Llama-3.1-405B-Instruct": "llama-3.1-405b",
    "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini",
    "microsoft/Phi-3-medium-4k-instruct": "phi-3-medium",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistral-7b",
    "mistralai/Mistral-Nemo-Instruct-2407": "mistral-nemo-12b",
    "mistralai/Mistral-Large-Instruct-2407": "mistral-large-123b",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral-8x7b",
    "mistralai/Mixtral-8x22B-Instruct-v0.1": "mixtral-8x22b",
    "bigcode/starcoder2-3b": "starcoder2-3b",
    "bigcode/starcoder2-7b": "starcoder2-7b",
    "bigcode/starcoder2-15b": "starcoder2-15b",
    "codellama/CodeLlama-7b-hf": "codellama-7b",
    "codellama/CodeLlama-13b-hf": "codellama-13b",
    "codellama/CodeLlama-34b-hf": "codellama-34b",
    "codellama/CodeLlama-70b-hf": "codellama-70b",
    "google/codegemma-1.1-2b": "codegemma-2b",
    "google/codegemma-7b": "codegemma-7b",
}
HARDWARE = {"NVIDIA A100-SXM4-40GB": "a100-sxm-40gb", "NVIDIA H100 80GB HBM3": "h100-sxm"}
# Approximate mean prompt tokens per task (see the module docstring): chat from ShareGPT
# prompts (350 chars / 4 + ~20 template tokens); code from EvalPlus HumanEval prompts.
PROMPT_TOKENS = {
    "chat": (110, "approx: ShareGPT_V3_filtered_500.json mean 350 chars / 4 + chat template"),
    "code": (150, "approx: EvalPlus HumanEval/MBPP prompt length (not published)"),
}
COLUMNS = (
    "source",
    "source_commit",
    "source_file",
    "task",
    "model",
    "preset",
    "gpu_name",
    "hardware",
    "precision",
    "engine",
    "tp",
    "pp",
    "boards",
    "max_batch",
    "avg_batch",
    "prompt_tokens",
    "prompt_tokens_basis",
    "output_tokens",
    "j_per_output_token",
    "tokens_per_s",
    "tpot_s",
    "energy_per_request_j",
    "covers",
)


def rows(repo: str) -> list[dict[str, object]]:
    def git(*a: str) -> str:
        return subprocess.run(
            ["git", "-C", repo, *a], check=True, capture_output=True, text=True
        ).stdout

    commit = git("rev-parse", "HEAD").strip()
    files = [
        f
        for f in git(
            "ls-tree", "-r", "--name-only", "HEAD", "data/llm_text_generation"
        ).splitlines()
        if re.search(r"/bs\d+\+tp\d+\+pp\d+\.json$", f)
    ]
    out = []
    for f in sorted(files):
        d = json.loads(git("show", f"HEAD:{f}"))
        task = f.split("/")[2]
        prompt, basis = PROMPT_TOKENS[task]
        tp, pp = int(d["TP"]), int(d["PP"])
        out.append(
            {
                "source": SOURCE,
                "source_commit": commit,
                "source_file": f,
                "task": task,
                "model": d["Model"],
                "preset": PRESET.get(d["Model"], ""),
                "gpu_name": d["GPU"],
                "hardware": HARDWARE.get(d["GPU"], ""),
                "precision": "bf16",
                "engine": "vllm 0.5.4",  # v2's version, per ml.energy's longitudinal blog post
                "tp": tp,
                "pp": pp,
                "boards": tp * pp,
                "max_batch": int(d["Max BS (reqs)"]),
                "avg_batch": round(d["Avg BS (reqs)"], 3),
                "prompt_tokens": prompt,
                "prompt_tokens_basis": basis,
                "output_tokens": round(d["Avg Output Tokens"], 3),
                "j_per_output_token": d["Energy/req (J)"] / d["Avg Output Tokens"],
                "tokens_per_s": d["Token tput (tok/s)"],
                "tpot_s": d["Avg TPOT (s)"],
                "energy_per_request_j": d["Energy/req (J)"],
                "covers": COVERS,
            }
        )
    return out


def main() -> None:
    w = csv.DictWriter(sys.stdout, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows(sys.argv[1]):
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


if __name__ == "__main__":
    main()
