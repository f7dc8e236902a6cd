"""The results schema: file names, the columns every row carries first, its version.

The README's "Results schema" section documents every column; this module is where the code
reads the names from.
"""

from __future__ import annotations

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
RUN_JSON = "run.json"
# Every CSV row carries schema_version. Bump it when a column changes meaning or unit, so
# load_results refuses to mix folders whose same-named columns mean different things.
SCHEMA_VERSION = 1

# The columns every trial row carries first, in this order; others follow as they appear.
TRIAL_COLUMNS = [
    "run_id", "case_id", "timestamp_utc", "name", "engine", "engine_version", "window",
    "model", "precision", "precision_backend", "compile", "device", "device_resolved_from",
    "device_name", "batch_size", "prompt_tokens", "new_tokens", "trial",
    "status", "tokens_generated", "decode_tokens", "repetitions", "prefill_s", "decode_s",
    "prefill_j", "decode_j", "total_j", "prefill_j_per_token", "prefill_j_per_request",
    "decode_j_per_token", "total_j_per_token", "decode_tokens_per_s", "avg_power_w",
    "idle_power_w", "dynamic_decode_j_per_token", "energy_source", "energy_scope", "measured",
]  # fmt: skip

SUMMARY_METRICS = [
    "prefill_j_per_token", "prefill_j_per_request", "decode_j_per_token", "total_j_per_token",
    "dynamic_decode_j_per_token", "decode_tokens_per_s", "avg_power_w",
]  # fmt: skip
# A served engine's windows (engine openai): latencies, as means over the trials in summary.csv.
SERVING_METRICS = ["ttft_s_median", "ttft_s_p90", "itl_s_median", "itl_s_p90"]
