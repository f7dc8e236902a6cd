"""The file names of a results folder, the order the writers put columns in, and the summary's
metrics. What each column is (dtype, unit, meaning) is declared once, in results/schema.py;
the metrics come from there and TRIAL_COLUMNS is checked against it (tests/test_schema.py).
"""

from __future__ import annotations

from tokenwatt.results.schema import SCHEMA_VERSION, metrics

RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"
RUN_JSON = "run.json"
__all__ = ["RESULTS_CSV", "RUN_JSON", "SCHEMA_VERSION", "SERVING_METRICS", "SUMMARY_CSV",
           "SUMMARY_METRICS", "TRIAL_COLUMNS"]  # fmt: skip

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

# Each gets <metric>_mean, _std, _cv, _ci95_low, _ci95_high in summary.csv: the schema's
# metrics marked stats="trial"; a served engine's windows add its latencies (stats="served").
SUMMARY_METRICS = metrics("trial")
SERVING_METRICS = metrics("served")
