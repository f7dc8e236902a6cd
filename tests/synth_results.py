"""A synthetic results folder written with the real writers, for compare/report/plot tests.

Values come from a seeded generator around known means, so tests can check the maths
without running a model.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tokenwatt.results.columns import RESULTS_CSV, RUN_JSON, SUMMARY_CSV, TRIAL_COLUMNS
from tokenwatt.results.store import append_rows, update_json


def trial_row(case: dict[str, Any], i: int, rng: random.Random) -> dict[str, Any]:
    b, p, n = case["batch_size"], case["prompt_tokens"], case["new_tokens"]
    # run_shift: this run's offset from the case mean (what a fresh process changes)
    run_mean = case["decode_j_per_token"] * (1 + case.get("run_shift", 0.0))
    dec_jpt = run_mean * (1 + rng.gauss(0, case.get("cv", 0.03)))
    tps = case.get("tokens_per_s", 100.0) * (1 + rng.gauss(0, 0.02))
    decode_tokens, tokens = b * (n - 1), b * n
    decode_j = dec_jpt * decode_tokens
    prefill_j = case.get("prefill_j", 0.5)
    return {
        "run_id": case["run_id"],
        "case_id": case["case_id"],
        "name": case.get("name", "synth"),
        "model": case.get("model", "preset:tiny-llama"),
        "precision": case["precision"],
        "compile": False,
        "device": "cpu",
        "device_name": "Synthetic CPU",
        "batch_size": b,
        "prompt_tokens": p,
        "new_tokens": n,
        "trial": i,
        "status": "ok",
        "tokens_generated": tokens,
        "decode_tokens": decode_tokens,
        "repetitions": 1,
        "prefill_s": 0.1,
        "decode_s": decode_tokens / tps,
        "prefill_j": prefill_j,
        "decode_j": decode_j,
        "total_j": prefill_j + decode_j,
        "prefill_j_per_token": prefill_j / (b * p),
        "prefill_j_per_request": prefill_j / b,
        "decode_j_per_token": dec_jpt,
        "total_j_per_token": (prefill_j + decode_j) / tokens,
        "decode_tokens_per_s": tps,
        "avg_power_w": 10.0,
        "idle_power_w": 2.0,
        "dynamic_decode_j_per_token": dec_jpt * 0.8,
        "energy_source": case.get("source", "estimate-tdp-process-cpu"),
        "energy_scope": case.get("scope", "cpu-package"),
        "measured": case.get("measured", False),
        "top1_agreement": case.get("top1"),
        "kl_divergence": case.get("kl"),
        "experts_impl": case.get("experts_impl", ""),
        "contended": case.get("contended", False),
    }


def write_folder(
    out: Path,
    cases: list[dict[str, Any]],
    trials: int = 5,
    seed: int = 0,
    failed: list[dict[str, Any]] | None = None,
) -> Path:
    """Each case dict: case_id, precision, batch_size, prompt_tokens, new_tokens,
    decode_j_per_token (mean), optional cv, tokens_per_s, top1, kl, measured, complete."""
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        case.setdefault("run_id", f"run-{case['case_id']}")
        rows = [trial_row(case, i, rng) for i in range(trials)]
        append_rows(out / RESULTS_CSV, rows, TRIAL_COLUMNS)
        if not case.get("complete", True):
            continue  # an interrupted run: trial rows, no summary
        summary = {k: rows[0][k] for k in TRIAL_COLUMNS if k in rows[0] and k != "trial"}
        append_rows(out / SUMMARY_CSV, [summary | {"n_trials": trials}])
        update_json(out / RUN_JSON, "runs", run_record(case, rows))
    for f in failed or []:
        row = {
            "run_id": f"fail-{f['case_id']}",
            "case_id": f["case_id"],
            "status": "failed",
            "precision": f["precision"],
            "batch_size": 1,
            "error": f["error"],
        }
        append_rows(out / RESULTS_CSV, [row], TRIAL_COLUMNS)
        config = {"precision": f["precision"], "workload": {"batch_size": 1}}
        record = {"case_id": f["case_id"], "error": f["error"], "config": config}
        update_json(out / RUN_JSON, "failures", record)
    return out


def run_record(case: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "run_id": case["run_id"],
        "case_id": case["case_id"],
        "config": {
            "name": "synth",
            "model": "preset:tiny-llama",
            "precision": case["precision"],
            "workload": {
                "batch_size": case["batch_size"],
                "prompt_tokens": case["prompt_tokens"],
                "new_tokens": case["new_tokens"],
            },
        },
        "idle_power_w": 2.0,
        "summary": {"measured": case.get("measured", False)},
        "environment": {"tokenwatt": "test", "torch": "x", "cpu": "Synthetic CPU"},
        "meters": [{"meter": "estimate"}],
        "trials": [
            {
                "trial": r["trial"],
                "repetitions": 1,
                "phases": {
                    "prefill": {"seconds": r["prefill_s"], "joules": {"cpu": r["prefill_j"]}},
                    "decode": {"seconds": r["decode_s"], "joules": {"cpu": r["decode_j"]}},
                },
            }
            for r in rows
        ],
    }
