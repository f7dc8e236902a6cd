"""The dataset card (README.md) of an exported dataset: the YAML header a dataset hub reads
(license, tags, a config per parquet table), what the dataset holds and how its figures were
measured, where they came from (machines, software, devices, meters), and every column with its
type, unit and meaning from the results schema."""

from __future__ import annotations

from typing import Any

import yaml

from tokenwatt.results.columns import RESULTS_CSV, SUMMARY_CSV

TAGS = ["energy", "llm-inference", "joules-per-token", "benchmark", "tokenwatt"]


def card(runs: Any, trials: Any, license_id: str, name: str) -> str:
    """The card's text."""
    from tokenwatt.results.load import DATASET_RUNS as RUNS
    from tokenwatt.results.load import DATASET_TIMELINES as TIMELINES
    from tokenwatt.results.load import DATASET_TRIALS as TRIALS

    header = {
        "license": license_id,
        "pretty_name": name,
        "tags": TAGS,
        "configs": [
            {"config_name": "runs", "data_files": RUNS, "default": True},
            {"config_name": "trials", "data_files": TRIALS},
            {"config_name": "timelines", "data_files": f"{TIMELINES}/*/*.parquet"},
        ],
    }
    parts = [
        "---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n",
        f"# {name}\n",
        _contents(runs, trials),
        _provenance(runs, trials),
        METHOD,
        "## Columns\n\n"
        + _columns(runs, "runs", SUMMARY_CSV)
        + "\n"
        + _columns(trials, "trials", RESULTS_CSV),
    ]
    return "\n".join(parts)


def _contents(runs: Any, trials: Any) -> str:
    ok = trials[trials["status"].fillna("ok") == "ok"] if "status" in trials else trials
    pub = int(runs["publishable"].fillna(False).astype(bool).sum()) if "publishable" in runs \
        else 0  # fmt: skip
    return (
        "Energy per generated token of language models, from tokenwatt: joules per "
        "token in prefill and decode at a "
        "given batch size, context length, precision and engine, each figure labelled with "
        "what it covers (`energy_scope`) and how it was obtained (`energy_source`, "
        "`measurement_method`, `measured`).\n\n"
        "| table | rows | what |\n|---|---|---|\n"
        f"| `runs` (runs.parquet) | {len(runs)} | one row per case per run (a fresh process), "
        "per window for a served run: means, spreads and 95% intervals over its trials; "
        f"{pub} publishable |\n"
        f"| `trials` (trials.parquet) | {len(trials)} | one row per trial ({len(ok)} ok; "
        "failed and degraded rows say why) |\n"
        "| `timelines` (timelines/MACHINE/RUN.parquet) | - | each run's sampled power trace "
        "(`t_s`, `channel`, cumulative `joules`, `power_w`) per trial |\n\n"
        '```python\nimport pandas as pd\nruns = pd.read_parquet("runs.parquet")\n'
        'from datasets import load_dataset\ntrials = load_dataset("DATASET_DIR", "trials")\n'
        'import tokenwatt\ndf = tokenwatt.load_results("DATASET_DIR")\n```\n'
    )


def _provenance(runs: Any, trials: Any) -> str:
    """Where the rows came from: machines (salted ids), software, devices, meters."""
    rows = []
    for col, what in (("machine_id", "machines (salted ids)"),
                      ("tokenwatt_version", "tokenwatt versions"),
                      ("tokenwatt_commit", "tokenwatt commits"),
                      ("torch_version", "torch versions"),
                      ("transformers_version", "transformers versions"),
                      ("driver_version", "NVIDIA drivers"), ("device_name", "devices"),
                      ("engine", "engines"), ("energy_source", "energy sources"),
                      ("measurement_method", "methods"),
                      ("energy_scope", "scopes")):  # fmt: skip
        if col in trials:
            values = sorted({str(v) for v in trials[col].dropna() if str(v)})
            rows.append(f"| {what} | {', '.join(f'`{v}`' for v in values) or '-'} |")
    measured = int(trials["measured"].fillna(False).astype(bool).sum()) if "measured" in trials \
        else 0  # fmt: skip
    rows.append(
        f"| measured trials | {measured} of {len(trials)} (the rest are estimates, "
        "simulated hardware or failed rows: `measured` says which) |"
    )
    return "## Provenance\n\n| | |\n|---|---|\n" + "\n".join(rows) + "\n"


METHOD = """## How the figures were measured

Each run loads the model in a fresh process, warms up, measures the idle power of the same
meters, then runs trials: each repeats prefill plus a greedy decode of a fixed number of new
tokens (EOS ignored) until it lasts at least the configured time. On NVIDIA GPUs the board's
energy counter (NVML) gives each trial's joules, attributed to prefill and decode along the
instant-power trace (`measurement_method = energy-counter`); on a CPU, RAPL
(`rapl-counter`), or where neither can be read, a labelled estimate (`tdp-estimate`,
`measured = False`: TDP x (0.1 + 0.9 x the process tree's CPU utilisation)). Served engines
are measured over their whole run and their steady-state window. Per-token figures divide by
tokens actually generated. A run is `publishable` only when it is measured, not contended by
other processes, its trial-to-trial CV is within 5%, it has at least 3 trials, no degraded
trial, and it is not below the physical floor; `publishable_reason` says why not.
`tokenwatt validate DATASET_DIR` recomputes every derived figure from its raw columns.
"""


def _columns(df: Any, table: str, file: str) -> str:
    """Every column of one table with its type, unit and meaning (from the results schema)."""
    from tokenwatt.results.schema import column

    lines = [f"### {table}\n", "| column | type | unit | meaning |", "|---|---|---|---|"]
    for name in df.columns:
        c = column(name, file)
        if c is None:
            lines.append(f"| `{name}` | {df[name].dtype} | ? | not in this tokenwatt's schema |")
        else:
            lines.append(f"| `{name}` | {c.dtype} | {c.unit} | {c.description} |")
    return "\n".join(lines) + "\n"
