"""Every column of results.csv and summary.csv, declared once: its name, dtype, unit, whether it
may be empty, the files that carry it, its group in the docs and its meaning.

The writers, `load_results`, `tokenwatt validate`, the dataset card and docs/results-schema.md
read this table; tests fail when a writer emits a column that is not here and when the docs
page is stale (`python scripts/results-schema.py` regenerates it). A name is exact or a family:
`{i}` stands for a board position (0, 1, ...), `{phase}` for `decode` or `prefill`. The
summary's statistics (`<metric>_mean`, ...) are generated from the metrics marked `stats`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

# Bump when a column changes meaning or unit (a new column is no bump), and add the migration
# from the previous version to results/load.py's MIGRATIONS.
SCHEMA_VERSION = 1

Dtype = Literal["string", "int", "float", "bool", "datetime", "json"]
Files = Literal["results", "summary", "both"]
# never: on every row, a failed sweep case's too; unmeasured: empty only on a row that measured
# nothing (a failed case, a degraded trial); yes: may be empty on a measured row as well.
Empty = Literal["never", "unmeasured", "yes"]
Stats = Literal["", "trial", "served"]

RESULTS, SUMMARY = "results", "summary"
STAT_SUFFIXES = ("mean", "std", "cv", "ci95_low", "ci95_high")
PLACEHOLDERS = {"i": r"\d+", "phase": "(?:decode|prefill)"}
# Units a column may carry ("–": a label, a count of nothing in particular, a ratio).
UNITS = frozenset({
    "–", "UTC", "J", "J/token", "J/request", "W", "s", "s/token", "Hz", "MHz", "tokens",
    "tokens/s", "tokens/kWh", "Wh", "gCO2", "gCO2/kWh", "%", "fraction", "MiB", "bytes", "bits",
    "FLOP", "nats", "probability", "sequences", "requests", "parameters", "cores", "threads",
    "processes", "trials", "boards", "generations", "experts/layer", "requests/s",
})  # fmt: skip


@dataclass(frozen=True)
class Column:
    name: str  # exact, or a family pattern with {i} / {phase}
    dtype: Dtype
    unit: str
    files: Files
    empty: Empty
    description: str  # one line: what the value means
    group: str = ""
    stats: Stats = ""  # summary.csv carries <name>_mean, _std, ... over the trials

    @property
    def is_family(self) -> bool:
        return "{" in self.name

    def in_file(self, file: str | None) -> bool:
        return file is None or self.files in ("both", file_kind(file))

    def matches(self, name: str) -> bool:
        return _pattern(self.name).fullmatch(name) is not None if self.is_family \
            else name == self.name  # fmt: skip

    def nullable(self, file: str) -> bool:
        """Whether a cell of this column may be empty in `file` (summary.csv has no failed or
        degraded rows)."""
        return self.empty == "yes" or (self.empty == "unmeasured" and file_kind(file) == RESULTS)

    def pandas_dtype(self, file: str) -> str:
        """The dtype `load_results` gives the column."""
        if self.dtype == "int":
            return "Int64" if self.nullable(file) else "int64"
        return {"string": "str", "json": "str", "float": "float64", "bool": "boolean",
                "datetime": "datetime64[us, UTC]"}[self.dtype]  # fmt: skip


def file_kind(file: str) -> str:
    """ "results" or "summary" from either word or its CSV's name."""
    kind = file.removesuffix(".csv")
    if kind not in (RESULTS, SUMMARY):
        raise ValueError(f"file: {file!r} is neither results nor summary")
    return kind


@functools.cache
def _pattern(name: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", name)  # text, placeholder, text, ...
    return re.compile("".join(re.escape(p) if k % 2 == 0 else PLACEHOLDERS[p]
                              for k, p in enumerate(parts)))  # fmt: skip


def _group(group: str, *rows: tuple[str, ...]) -> list[Column]:
    """One doc group's columns from (name, dtype, unit, files, empty, description[, stats]) rows."""
    out = []
    for name, dtype, unit, files, empty, text, *stats in rows:
        out.append(
            Column(
                name,
                dtype,
                unit,
                files,
                empty,
                text,
                group,  # type: ignore[arg-type]
                stats[0] if stats else "",
            )
        )  # type: ignore[arg-type]
    return out


IDENTITY = "Identity and configuration"
WORK = "Work done"
SERVED = "Served windows"
ENERGY = "Energy"
QUALITY = "Measurement quality"
METHOD = "Method"
MODEL = "Model and memory"
ROUTING = "Routing (MoE)"
FIDELITY = "Fidelity"
CARBON = "Carbon and leaderboard units"
FLOOR = "The physical floor"
MODEL_CHECK = "The energy model's check"
BOARDS = "Per-board"
STATISTICS = "Summary statistics"
PROVENANCE = "Provenance"

_DECLARED = [
    *_group(
        IDENTITY,
        (
            "run_id",
            "string",
            "–",
            "both",
            "never",
            "one invocation of a config (UTC start time + random suffix); trials of one run share "
            "it",
        ),
        (
            "case_id",
            "string",
            "–",
            "both",
            "never",
            "stable hash of the resolved config without `name` and `out`: the same case on any "
            "machine or folder has the same id (sweeps resume by it)",
        ),
        (
            "timestamp_utc",
            "datetime",
            "UTC",
            "results",
            "never",
            "when the trial row was written (ISO 8601)",
        ),
        (
            "name",
            "string",
            "–",
            "both",
            "never",
            "the config's name (agent sweeps: `<name>-turn<t>`)",
        ),
        (
            "engine",
            "string",
            "–",
            "both",
            "unmeasured",
            "what generated the tokens: `transformers`, `vllm` or `openai` (absent in folders from "
            "before engines existed: compare reads those rows as `transformers`)",
        ),
        (
            "engine_version",
            "string",
            "–",
            "both",
            "yes",
            "that engine's version (transformers', vLLM's, the server's `/version` where it "
            "answers)",
        ),
        (
            "engine_settings",
            "json",
            "–",
            "both",
            "unmeasured",
            "the engine's settings (compile, experts; vLLM's dtype, quantization, max_num_seqs, "
            "tensor_parallel_size; the server's URL, model, concurrency, requests, ignore_eos)",
        ),
        (
            "window",
            "string",
            "–",
            "both",
            "unmeasured",
            "`whole-run` (every row of an in-process engine: the whole of each generation), or for "
            "engine openai `whole-run` and `steady-state` (one row each per trial)",
        ),
        (
            "model",
            "string",
            "–",
            "both",
            "never",
            "`preset:NAME`, a local checkpoint path, or a hub id (engine openai: the served model "
            "name)",
        ),
        (
            "server_model",
            "string",
            "–",
            "both",
            "yes",
            "engine openai: the model the requests named (`server.model`, else the first the "
            "server lists)",
        ),
        (
            "server_processes",
            "string",
            "–",
            "both",
            "yes",
            "engine openai: which processes on this machine are the server (`launched by "
            "tokenwatt: pid N and its children`, `listening on port P: pid N and its children`), "
            "or why none are (another machine, another user's process); empty for other engines",
        ),
        (
            "precision",
            "string",
            "–",
            "both",
            "never",
            "fp32, bf16, fp16, int8-weight, int8-dynamic, int4-weight, fp8, mxfp4-emulated, "
            "nvfp4-emulated (engine openai: the label given, else `server`)",
        ),
        (
            "precision_backend",
            "string",
            "–",
            "both",
            "unmeasured",
            "how the precision was applied (`torch-dtype`, `torchao:<Config>`, tokenwatt's fp4 "
            "emulation, `vllm-dtype`, `vllm-fp8`, `server`)",
        ),
        (
            "emulated",
            "bool",
            "–",
            "both",
            "unmeasured",
            "True when the format is emulated in software (fp4): the energy is that of the "
            "emulation, not of FP4 hardware",
        ),
        (
            "compile",
            "bool",
            "–",
            "both",
            "never",
            "static KV cache + `torch.compile` of the decode step",
        ),
        (
            "device",
            "string",
            "–",
            "both",
            "never",
            "the device the run used (`cpu`, `cuda:N`; a sweep case given `cuda:N` records "
            "`cuda:N`)",
        ),
        (
            "device_resolved_from",
            "string",
            "–",
            "both",
            "unmeasured",
            "how `device` was decided: `given`, or `auto: ...` with what the run's process saw "
            "(`auto: torch sees 1 CUDA GPU(s)`, `auto: torch sees no CUDA GPU`, a GPU allocated "
            "to a CPU build of torch), or that a server runs the model (engine openai); absent in "
            "folders from before it existed",
        ),
        (
            "device_name",
            "string",
            "–",
            "both",
            "unmeasured",
            "CPU model or GPU name (a model run elsewhere: the measured boards' name, this CPU's "
            "for a server on this machine, else `server at HOST`)",
        ),
        (
            "batch_size",
            "int",
            "sequences",
            "both",
            "never",
            "sequences decoded together (engine openai: requests in flight)",
        ),
        (
            "prompt_tokens",
            "int",
            "tokens",
            "both",
            "never",
            "prompt length per sequence (the context in the KV cache when decoding starts)",
        ),
        (
            "new_tokens",
            "int",
            "tokens",
            "both",
            "never",
            "tokens generated per sequence (EOS ignored)",
        ),
        (
            "seed",
            "int",
            "–",
            "both",
            "unmeasured",
            "seed of the random weights (presets) and random prompts",
        ),
        (
            "trial",
            "int",
            "–",
            "results",
            "unmeasured",
            "trial index within the run, from 0 (empty on a failed row)",
        ),
        (
            "status",
            "string",
            "–",
            "results",
            "never",
            "`ok`; `degraded` (a meter read failed inside the trial, or its engine did: requests "
            "failed, a server died, an empty steady-state window; excluded from the summary); "
            "`failed` (a sweep case that could not run)",
        ),
        ("status_reason", "string", "–", "results", "yes", "why a trial is degraded"),
        (
            "error",
            "string",
            "–",
            "results",
            "yes",
            "one-line error of a failed case (`Type: message`), e.g. `PrecisionUnsupported: "
            "precision fp8 needs ...` or `CaseOutOfMemory: ...`",
        ),
        (
            "schema_version",
            "int",
            "–",
            "both",
            "never",
            "the version of this schema the row was written with (bumped on a change of meaning "
            "or unit); `load_results` migrates older rows and gives them today's",
        ),
    ),
    *_group(
        WORK,
        (
            "repetitions",
            "int",
            "generations",
            "both",
            "unmeasured",
            "generations inside the trial (repeated until it lasts `measure.min_seconds`; engine "
            "openai: passes of `workload.requests`); summary: summed over the run's ok trials",
        ),
        (
            "tokens_generated",
            "int",
            "tokens",
            "both",
            "unmeasured",
            "repetitions x batch_size x new_tokens, counted from the outputs (engine openai: "
            "tokens the server's streamed usage counted inside the window); summary: summed",
        ),
        (
            "decode_tokens",
            "int",
            "tokens",
            "both",
            "unmeasured",
            "repetitions x batch_size x (new_tokens - 1): the first token of each sequence comes "
            "from prefill (engine openai: as tokens_generated); summary: summed",
        ),
        (
            "prefill_s",
            "float",
            "s",
            "both",
            "yes",
            "time in the prefill phase, summed over repetitions (summary: over trials); empty for "
            "a served window",
        ),
        (
            "decode_s",
            "float",
            "s",
            "both",
            "yes",
            "time in the decode phase, summed over repetitions (summary: over trials); empty for "
            "a served window",
        ),
    ),
    *_group(
        SERVED,
        (
            "window_s",
            "float",
            "s",
            "both",
            "yes",
            "engine openai: the window's length, summed over the trial's passes (summary: over "
            "trials)",
        ),
        (
            "requests",
            "int",
            "requests",
            "both",
            "yes",
            "engine openai: requests sent in the trial (summary: summed)",
        ),
        (
            "requests_failed",
            "int",
            "requests",
            "both",
            "yes",
            "engine openai: requests that failed (the row is then `degraded`; summary: summed)",
        ),
        (
            "ttft_s_median",
            "float",
            "s",
            "results",
            "yes",
            "median time to first token of the requests whose first token falls in the window",
            "served",
        ),
        (
            "ttft_s_p90",
            "float",
            "s",
            "results",
            "yes",
            "90th percentile of the same times to first token",
            "served",
        ),
        (
            "itl_s_median",
            "float",
            "s",
            "results",
            "yes",
            "median inter-token latency: gaps between a request's chunks inside the window, per "
            "token",
            "served",
        ),
        (
            "itl_s_p90",
            "float",
            "s",
            "results",
            "yes",
            "90th percentile of the same inter-token latencies",
            "served",
        ),
        (
            "itl_per_request_s_mean",
            "float",
            "s",
            "results",
            "yes",
            "mean over requests of each request's inter-token latency, (end - first token) / "
            "(output tokens - 1) (vLLM's TPOT), for the ok requests whose first token falls in "
            "the window (itl_s_*: the chunk gaps pooled instead)",
            "served",
        ),
        (
            "itl_per_request_s_median",
            "float",
            "s",
            "results",
            "yes",
            "median of the same per-request inter-token latencies",
            "served",
        ),
        (
            "itl_per_request_s_p90",
            "float",
            "s",
            "results",
            "yes",
            "90th percentile of the same per-request inter-token latencies",
            "served",
        ),
        (
            "itl_per_request_s_p99",
            "float",
            "s",
            "results",
            "yes",
            "99th percentile of the same per-request inter-token latencies",
            "served",
        ),
        (
            "load_shape",
            "string",
            "–",
            "both",
            "yes",
            "engine openai: how requests arrive: `fixed-concurrency` (batch_size always in "
            "flight), `poisson` or `gamma` (open loop at request_rate, burstiness), `trace` "
            "(a trace file's arrival times and lengths)",
        ),
        (
            "request_rate",
            "float",
            "requests/s",
            "both",
            "yes",
            "engine openai, open loop: the arrival rate asked (`--request-rate`; a trace: its "
            "mean rate, (lines - 1) / its time span); empty for fixed concurrency",
        ),
        (
            "burstiness",
            "float",
            "–",
            "both",
            "yes",
            "engine openai with request_rate: gamma shape of the times between arrivals (1: "
            "Poisson); empty otherwise",
        ),
        (
            "requests_delayed",
            "int",
            "requests",
            "results",
            "yes",
            "engine openai, open loop: requests that arrived while batch_size were in flight and "
            "were sent when a slot came free, not at their arrival",
        ),
        (
            "total_j_err",
            "float",
            "J",
            "results",
            "yes",
            "engine openai: uncertainty (one standard deviation) of the window's `total_j` from "
            "its attribution",
        ),
        (
            "dynamic_total_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "engine openai: the window's energy above idle, per token: (total_j - idle_power_w x "
            "window_s) / tokens_generated",
        ),
    ),
    *_group(
        ENERGY,
        (
            "prefill_j",
            "float",
            "J",
            "results",
            "yes",
            "energy of the prefill phase, summed over repetitions",
        ),
        (
            "decode_j",
            "float",
            "J",
            "results",
            "yes",
            "energy of the decode phase, summed over repetitions",
        ),
        (
            "total_j",
            "float",
            "J",
            "results",
            "unmeasured",
            "prefill_j + decode_j (gaps between repetitions belong to no phase); engine openai: "
            "the window's energy on the measured channels",
        ),
        (
            "prefill_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "prefill_j per **prompt** token: prefill_j / (repetitions x batch_size x "
            "prompt_tokens)",
            "trial",
        ),
        (
            "prefill_j_per_request",
            "float",
            "J/request",
            "results",
            "yes",
            "prefill_j per sequence: prefill_j / (repetitions x batch_size)",
            "trial",
        ),
        (
            "decode_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "decode_j / decode_tokens: the energy of one generated token at steady state",
            "trial",
        ),
        (
            "total_j_per_token",
            "float",
            "J/token",
            "results",
            "unmeasured",
            "total_j / tokens_generated: everything a generated token costs, prefill included",
            "trial",
        ),
        (
            "dynamic_decode_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "(decode_j - idle_power_w x decode_s) / decode_tokens: the energy above idle",
            "trial",
        ),
        (
            "decode_tokens_per_s",
            "float",
            "tokens/s",
            "results",
            "unmeasured",
            "decode_tokens / decode_s (engine openai: the window's tokens per second of it)",
            "trial",
        ),
        (
            "avg_power_w",
            "float",
            "W",
            "results",
            "unmeasured",
            "total_j / (prefill_s + decode_s) (engine openai: / window_s)",
            "trial",
        ),
        (
            "idle_power_w",
            "float",
            "W",
            "both",
            "yes",
            "power measured on the same meters with nothing running, before the trials (empty "
            "with `measure.idle_seconds: 0`)",
        ),
        (
            "energy_source",
            "string",
            "–",
            "both",
            "unmeasured",
            "how energy was obtained: `nvml-energy-counter`, `nvml-power-integrated`, `rapl`, "
            "`estimate-tdp-process-cpu` (`simulated-` prefixed on simulated hardware; `+`-joined "
            "when several meters)",
        ),
        (
            "energy_scope",
            "string",
            "–",
            "both",
            "unmeasured",
            "what it covers: `gpu-board`, `cpu-package`, `dram` (`+`-joined)",
        ),
        (
            "measured",
            "bool",
            "–",
            "both",
            "unmeasured",
            "True only when every channel is a measurement; False means an estimate",
        ),
    ),
    *_group(
        QUALITY,
        (
            "counter_vs_trace_gap_pct",
            "float",
            "%",
            "results",
            "yes",
            "instant-power trace integrated over the trial versus the energy counter (NVML); a "
            "large gap is a finding, not a rounding detail; empty without a trace",
        ),
        (
            "update_period_s",
            "float",
            "s",
            "results",
            "yes",
            "the meter's counter update period, measured at the board's first open in the process "
            "(NVML about 0.1 s)",
        ),
        (
            "cooldown_s",
            "float",
            "s",
            "results",
            "unmeasured",
            "the pause before this trial (`measure.cooldown_s`; default 2 s on a GPU, 0 on CPU; 0 "
            "for the first trial)",
        ),
        (
            "other_cpu_cores",
            "float",
            "cores",
            "results",
            "unmeasured",
            "CPU time other processes used during the trial, per second (machine busy time minus "
            "this process tree's, steal excluded)",
        ),
        (
            "other_runnable",
            "float",
            "threads",
            "results",
            "unmeasured",
            "mean runnable threads (running or waiting for a CPU) of processes outside this "
            "tree and the served model's during the trial, counted in /proc",
        ),
        (
            "cpu_steal_pct",
            "float",
            "%",
            "results",
            "unmeasured",
            "CPU time the hypervisor gave to other guests during the trial",
        ),
        (
            "gpu_other_processes",
            "int",
            "processes",
            "results",
            "unmeasured",
            "other processes seen computing on the measured NVIDIA boards (the server's own, for "
            "a served model, are not others: `server_gpu_pids`)",
        ),
        (
            "server_cpu_cores",
            "float",
            "cores",
            "results",
            "yes",
            "engine openai: CPU time the server's processes on this machine (`server_processes`) "
            "used during the trial, per second; reported apart, never as contention; empty when "
            "the server is not on this machine or not identified",
        ),
        (
            "server_gpu_pids",
            "string",
            "–",
            "results",
            "yes",
            "engine openai: the server's processes seen computing on the measured boards "
            "(space-separated pids; the board's energy is theirs)",
        ),
        (
            "server_metrics",
            "string",
            "–",
            "results",
            "yes",
            "engine openai: the server's own Prometheus page read before and after the trial "
            "(`vllm /metrics`, `sglang /metrics`, `tgi /metrics`); empty when it has none",
        ),
        (
            "server_generated_tokens",
            "float",
            "tokens",
            "results",
            "yes",
            "tokens the server says it generated during the trial (its counter's change)",
        ),
        (
            "server_prompt_tokens",
            "float",
            "tokens",
            "results",
            "yes",
            "prompt tokens the server says it processed during the trial",
        ),
        (
            "server_ttft_s_mean",
            "float",
            "s",
            "results",
            "yes",
            "the server's mean time to first token over the trial (its histogram's sum / count)",
        ),
        (
            "server_itl_s_mean",
            "float",
            "s",
            "results",
            "yes",
            "the server's mean inter-token latency over the trial",
        ),
        (
            "server_check",
            "string",
            "–",
            "results",
            "yes",
            "`agrees`, or what disagrees with tokenwatt's own figures past the tolerances (tokens "
            "1%; mean ITL a factor 1.5 and 5 ms; mean TTFT shorter than the server's by as much): "
            "another client on the server, or a miscount",
        ),
        (
            "contended",
            "bool",
            "–",
            "both",
            "unmeasured",
            "any of the four above past its threshold (0.5 cores, 1 thread, 5 %, 1 process): not "
            "publishable; summary: any trial contended",
        ),
        ("contention_reason", "string", "–", "results", "yes", "which, in words"),
        ("n_contended", "int", "trials", "summary", "never", "trials that were contended"),
        (
            "other_cpu_cores_max",
            "float",
            "cores",
            "summary",
            "yes",
            "the most other CPU load any trial saw",
        ),
        (
            "updates_seen",
            "int",
            "–",
            "results",
            "yes",
            "counter updates the sampler observed over the trial (NVML; empty for continuous "
            "meters)",
        ),
        (
            "updates_expected",
            "int",
            "–",
            "results",
            "yes",
            "counter updates the sensor made over the same span; more than `updates_seen` means "
            "some were missed and the attribution ran over longer periods",
        ),
        (
            "missed_updates",
            "bool",
            "–",
            "results",
            "yes",
            "`updates_seen < updates_expected` (also the `missed-updates` flag)",
        ),
        (
            "prefill_j_err",
            "float",
            "J",
            "results",
            "yes",
            "uncertainty (one standard deviation) of `prefill_j` from the unknown split of the "
            "update periods that hold phase boundaries (docs/measurement.md)",
        ),
        ("decode_j_err", "float", "J", "results", "yes", "the same for `decode_j`"),
        (
            "quality_flags",
            "string",
            "–",
            "results",
            "yes",
            "`;`-joined flags from the meter: `short-window` (< 10 update periods), "
            "`zero-joules`, `below-idle`, `above-limit` (> 1.7 x power limit), `driver-reload`, "
            "`no-update-after-end`, `missed-updates`, `sampler-errors`",
        ),
        ("n_degraded", "int", "trials", "summary", "never", "trials excluded as degraded"),
        (
            "summary_flags",
            "string",
            "–",
            "summary",
            "yes",
            "`;`-joined warnings: `contended`, `cv>5%`, `estimate`, `simulated`, `below-floor`, "
            "`implausible`, `degraded`, `stopped` (the run stopped after 3 degraded trials in a "
            "row: its case is not complete), the meters' quality flags (named `flags` in older "
            "files)",
        ),
        (
            "publishable",
            "bool",
            "–",
            "summary",
            "never",
            "the run's figures can be published: measured, not contended, CV within 5%, at least "
            "3 trials, not below the physical floor, no degraded trial",
        ),
        (
            "publishable_reason",
            "string",
            "–",
            "summary",
            "yes",
            "`;`-joined reasons the run is not publishable; empty when it is",
        ),
    ),
    *_group(
        METHOD,
        (
            "measurement_method",
            "string",
            "–",
            "both",
            "unmeasured",
            "how the energy was obtained, in MLPerf's words: `energy-counter`, "
            "`integrated-power`, `rapl-counter`, `tdp-estimate` (`+`-joined for several meters)",
        ),
        (
            "sampling_rate_hz",
            "float",
            "Hz",
            "both",
            "unmeasured",
            "the power trace's sampling rate: 1000 / `measure.sample_interval_ms`",
        ),
        (
            "idle_baseline_s",
            "float",
            "s",
            "both",
            "unmeasured",
            "how long the idle baseline was measured (`measure.idle_seconds`)",
        ),
        (
            "warmup_generations",
            "int",
            "generations",
            "both",
            "unmeasured",
            "unmeasured generations before the trials (`measure.warmup`)",
        ),
    ),
    *_group(
        MODEL,
        (
            "weight_bytes",
            "int",
            "bytes",
            "both",
            "yes",
            "storage the weights actually hold after the precision is applied (codes and scales "
            "included); empty for a served model",
        ),
        (
            "quantized_param_fraction",
            "float",
            "fraction",
            "both",
            "yes",
            "share of parameters that ended up quantised (0 for dtype precisions)",
        ),
        (
            "weight_bits",
            "int",
            "bits",
            "both",
            "yes",
            "the format's bits per stored weight (registry: MXFP4 W4A4, NVFP4 W4A16, "
            "int8-dynamic W8A8, int4-weight W4A16, ...)",
        ),
        (
            "activation_bits",
            "int",
            "bits",
            "both",
            "yes",
            "the format's bits per activation the matmuls read",
        ),
        (
            "experts_impl",
            "string",
            "–",
            "both",
            "yes",
            "MoE: how the experts ran: `tokenwatt-loop` (every precision by default), "
            "`transformers-<impl>` (`experts: transformers`, dtype precisions) or `vllm`; empty "
            "for dense models",
        ),
        ("params_total", "int", "parameters", "both", "yes", "all parameters of the model"),
        (
            "params_active",
            "int",
            "parameters",
            "both",
            "yes",
            "parameters used per token (MoE: experts count top_k / num_experts)",
        ),
        (
            "peak_memory_mb",
            "float",
            "MiB",
            "both",
            "yes",
            "GPU: peak allocated memory during the trials; CPU: peak resident memory of the "
            "process; empty for a model outside this process (vLLM's engine core, a server); "
            "summary: the largest over trials",
        ),
    ),
    *_group(
        ROUTING,
        (
            "routing_{phase}_tokens_per_expert",
            "json",
            "tokens",
            "summary",
            "yes",
            "MoE, decode steps and prefill apart: per layer, the tokens routed to each expert "
            "over the run",
        ),
        (
            "routing_{phase}_imbalance_max_over_mean",
            "float",
            "–",
            "summary",
            "yes",
            "MoE: max / mean tokens per expert, averaged over layers",
        ),
        (
            "routing_{phase}_imbalance_worst_layer",
            "float",
            "–",
            "summary",
            "yes",
            "MoE: the largest max / mean tokens per expert of any layer",
        ),
        (
            "routing_{phase}_experts_touched_mean",
            "float",
            "experts/layer",
            "summary",
            "yes",
            "MoE: distinct experts a forward call touched, averaged over layers and calls (the "
            "experts a step must read; the summary's floor uses the decode figure)",
        ),
    ),
    *_group(
        FIDELITY,
        (
            "fidelity_ref",
            "string",
            "–",
            "both",
            "yes",
            "the reference precision output quality is compared against (fp32 on CPU, bf16 on "
            "GPU by default); empty when fidelity was off",
        ),
        (
            "top1_agreement",
            "float",
            "fraction",
            "both",
            "yes",
            "share of positions where the precision's argmax token equals the reference's "
            "(teacher-forced)",
        ),
        (
            "kl_divergence",
            "float",
            "nats",
            "both",
            "yes",
            "mean KL(reference ‖ precision) of the next-token distributions",
        ),
        (
            "fidelity_ref_top1_prob",
            "float",
            "probability",
            "both",
            "yes",
            "the reference's mean top-1 probability (a random-weight model is unsure, so "
            "agreement is low by nature)",
        ),
    ),
    *_group(
        CARBON,
        (
            "wh_per_1k_queries",
            "float",
            "Wh",
            "both",
            "yes",
            "energy of 1,000 requests (prefill + decode of one sequence each), AI Energy Score's "
            "unit, IT energy in this row's scope (no PUE)",
        ),
        ("tokens_per_kwh", "float", "tokens/kWh", "both", "yes", "3.6e6 / total_j_per_token"),
        (
            "pue",
            "float",
            "–",
            "both",
            "unmeasured",
            "facility power usage effectiveness applied to carbon (`carbon.pue`, else the "
            "region's typical, else 1)",
        ),
        (
            "carbon_intensity_g_per_kwh",
            "float",
            "gCO2/kWh",
            "both",
            "yes",
            "grid intensity of `carbon.region` (empty without a region)",
        ),
        ("carbon_source", "string", "–", "both", "yes", "where that intensity comes from"),
        (
            "carbon_basis",
            "string",
            "–",
            "both",
            "yes",
            "`lifecycle` (upstream included), `direct` (combustion only) or `unstated`",
        ),
        (
            "g_co2_per_1k_tokens",
            "float",
            "gCO2",
            "both",
            "yes",
            "total_j_per_token x 1000 tokens, in kWh, x PUE x intensity",
        ),
    ),
    *_group(
        FLOOR,
        (
            "floor_hardware",
            "string",
            "–",
            "both",
            "yes",
            "hardware profile the floor was computed for (empty: unknown hardware, no floor)",
        ),
        (
            "floor_compute_format",
            "string",
            "–",
            "both",
            "yes",
            "number format the floor assumes for the arithmetic",
        ),
        (
            "floor_bytes_per_token",
            "float",
            "bytes",
            "both",
            "yes",
            "bytes a decoded token must move: weights read per step / batch + its KV cache at the "
            "mean context",
        ),
        (
            "floor_flops_per_token",
            "float",
            "FLOP",
            "both",
            "yes",
            "2 x active parameters + attention FLOPs per decoded token",
        ),
        (
            "floor_memory_j_per_token",
            "float",
            "J/token",
            "both",
            "yes",
            "the memory term: traffic at the profile's pJ/bit",
        ),
        (
            "floor_compute_j_per_token",
            "float",
            "J/token",
            "both",
            "yes",
            "the arithmetic term, only where the profile has a sourced arithmetic-only pJ/FLOP "
            "(else 0)",
        ),
        (
            "floor_compute_energy_basis",
            "string",
            "–",
            "both",
            "yes",
            "how the compute term was priced, or why it is not counted",
        ),
        (
            "floor_j_per_token",
            "float",
            "J/token",
            "both",
            "yes",
            "the least energy a decoded token can cost on that hardware",
        ),
        (
            "floor_s_per_token",
            "float",
            "s/token",
            "both",
            "yes",
            "the least time a decode step per token can take",
        ),
        (
            "floor_bound",
            "string",
            "–",
            "both",
            "yes",
            "`memory` or `compute`: which limit sets the floor",
        ),
        (
            "floor_experts_touched",
            "float",
            "experts/layer",
            "both",
            "yes",
            "MoE: experts a decode step reads (measured decode routing in the summary, the "
            "uniform-routing expectation in trial rows)",
        ),
        (
            "floor_experts_basis",
            "string",
            "–",
            "both",
            "yes",
            "MoE: where floor_experts_touched comes from",
        ),
        (
            "floor_ratio",
            "float",
            "–",
            "both",
            "yes",
            "decode_j_per_token / floor_j_per_token (measured values sit several times above 1)",
        ),
        (
            "floor_fits_in_cache",
            "bool",
            "–",
            "both",
            "yes",
            "the working set fits in on-chip cache, so the DRAM floor does not bind",
        ),
        (
            "below_floor",
            "bool",
            "–",
            "both",
            "yes",
            "floor_ratio < 1 without fitting in cache: a `below-floor` warning (check the "
            "profile, the meter's window and scope, the cache), not proof of an error",
        ),
        (
            "floor_j_per_token_native_format",
            "float",
            "J/token",
            "both",
            "yes",
            "for emulated fp4: the floor if the format ran natively",
        ),
    ),
    *_group(
        MODEL_CHECK,
        (
            "predicted_j_per_token",
            "float",
            "J/token",
            "both",
            "yes",
            "the energy model's decode J/token (estimate-model, docs/energy-model.md) for this "
            "row's model, precision, batch and lengths on the GPU board measured (else the row's "
            "device); empty where the model cannot price the row",
        ),
        ("plausibility", "float", "–", "both", "yes", "decode_j_per_token / predicted_j_per_token"),
        (
            "implausible",
            "bool",
            "–",
            "both",
            "yes",
            "plausibility outside the model's interval widened 2x each side, judged for measured "
            "GPU boards only: an `implausible` warning (a throttled board, a wrong power limit, a "
            "meter on another board), not proof of an error",
        ),
    ),
    *_group(
        BOARDS,
        ("boards", "int", "boards", "both", "unmeasured", "GPU boards measured (0 without NVML)"),
        (
            "board_uuids",
            "string",
            "–",
            "both",
            "yes",
            "the measured boards' NVML UUIDs, `;`-joined in placement order (board 0 holds the "
            "inputs)",
        ),
        (
            "meter_host",
            "string",
            "–",
            "both",
            "unmeasured",
            "where the energy was read: `local` (this machine's NVML, RAPL or estimate), or the "
            "GPU node's `Hostname` as its dcgm-exporter labels it (meter dcgm or prometheus)",
        ),
        (
            "model_boards",
            "int",
            "boards",
            "both",
            "unmeasured",
            "CUDA boards the model spans (the floor uses their aggregate bandwidth)",
        ),
        (
            "board{i}_prefill_j",
            "float",
            "J",
            "results",
            "yes",
            "board i's share of prefill_j (i: position in board_uuids)",
        ),
        ("board{i}_decode_j", "float", "J", "results", "yes", "board i's share of decode_j"),
        (
            "board{i}_total_j",
            "float",
            "J",
            "results",
            "yes",
            "board i's share of total_j (engine openai: of the window)",
        ),
        (
            "board{i}_decode_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "board i's decode joules / decode_tokens",
        ),
        (
            "board{i}_total_j_per_token",
            "float",
            "J/token",
            "results",
            "yes",
            "board i's total joules / tokens_generated",
        ),
        ("board{i}_idle_power_w", "float", "W", "both", "yes", "board i's idle power"),
        (
            "board{i}_decode_j_per_token_mean",
            "float",
            "J/token",
            "summary",
            "yes",
            "board i's decode J/token, mean over the run's ok trials",
        ),
        (
            "board{i}_total_j_per_token_mean",
            "float",
            "J/token",
            "summary",
            "yes",
            "board i's total J/token, mean over the run's ok trials",
        ),
    ),
    *_group(
        STATISTICS,
        (
            "n_trials",
            "int",
            "trials",
            "summary",
            "never",
            "trials with `status=ok` the statistics use",
        ),
        (
            "n_runs",
            "int",
            "–",
            "summary",
            "never",
            "1: a summary row is one run (compare and report pool a case's runs)",
        ),
        (
            "ci_basis",
            "string",
            "–",
            "summary",
            "never",
            "`trials of one run`: the intervals show within-process variation only",
        ),
    ),
    *_group(
        PROVENANCE,
        (
            "tokenwatt_version",
            "string",
            "–",
            "both",
            "unmeasured",
            "the tokenwatt that wrote the row",
        ),
        (
            "tokenwatt_commit",
            "string",
            "–",
            "both",
            "yes",
            "the git commit of a tokenwatt checkout, `-dirty` when its code (the package's "
            "tracked files) was modified; empty for an installed package",
        ),
        (
            "torch_version",
            "string",
            "–",
            "both",
            "yes",
            "torch's version (empty where the process had not loaded it: a failed case)",
        ),
        (
            "transformers_version",
            "string",
            "–",
            "both",
            "yes",
            "transformers' version (empty where the process had not loaded it: a failed case)",
        ),
        (
            "cuda_version",
            "string",
            "–",
            "both",
            "yes",
            "the CUDA version torch was built with; empty without a GPU",
        ),
        (
            "driver_version",
            "string",
            "–",
            "both",
            "yes",
            "the NVIDIA driver's version; empty without a GPU",
        ),
        (
            "machine_id",
            "string",
            "–",
            "both",
            "unmeasured",
            "a salted hash of the machine's identity (never a hostname), so rows of many "
            "machines stay apart",
        ),
        (
            "power_limit_w",
            "float",
            "W",
            "both",
            "yes",
            "the measured boards' enforced power limit at the start, summed over boards; empty "
            "without a GPU",
        ),
        (
            "gpu_clock_mhz",
            "float",
            "MHz",
            "both",
            "yes",
            "the first measured board's SM clock at the start; empty without a GPU",
        ),
        (
            "mem_clock_mhz",
            "float",
            "MHz",
            "both",
            "yes",
            "the first measured board's memory clock at the start; empty without a GPU",
        ),
    ),
]

_STAT_DOC = {
    "mean": "mean of `{m}` over the run's ok trials",
    "std": "sample standard deviation of `{m}` over the trials",
    "cv": "coefficient of variation of `{m}`: std / mean",
    "ci95_low": "lower end of the exact Student-t 95% interval of the mean of `{m}` (positive "
                "metrics on the log scale, dynamic_decode_j_per_token linear)",
    "ci95_high": "upper end of the same interval",
}  # fmt: skip


def _statistics(metrics: Iterable[Column]) -> list[Column]:
    """The summary's `<metric>_<stat>` columns, one per metric and statistic."""
    return [Column(f"{m.name}_{s}", "float", "fraction" if s == "cv" else m.unit, SUMMARY,
                   "yes", _STAT_DOC[s].format(m=m.name), STATISTICS)
            for m in metrics for s in STAT_SUFFIXES]  # fmt: skip


COLUMNS: tuple[Column, ...] = (*_DECLARED, *_statistics(c for c in _DECLARED if c.stats))
GROUPS = tuple(dict.fromkeys(c.group for c in COLUMNS))
_EXACT = {c.name: c for c in COLUMNS if not c.is_family}
_FAMILIES = tuple(c for c in COLUMNS if c.is_family)


def metrics(kind: Stats) -> list[str]:
    """The metrics whose statistics summary.csv carries: "trial" (every run) or "served"
    (a served engine's windows), in declaration order."""
    return [c.name for c in COLUMNS if c.stats == kind]


def column(name: str, file: str | None = None) -> Column | None:
    """The declaration of a column (exact name first, then a family) in `file` (results,
    summary, or either when None); None when it is not declared there."""
    c = _EXACT.get(name)
    if c is not None and c.in_file(file):
        return c
    return next((f for f in _FAMILIES if f.in_file(file) and f.matches(name)), None)


def undeclared(names: Iterable[str], file: str) -> list[str]:
    """The names a file may not carry: neither declared for it nor matching a family."""
    return [n for n in names if column(n, file) is None]


def pandas_dtypes(names: Iterable[str], file: str) -> dict[str, str]:
    """{name: the pandas dtype load_results gives it} for the declared ones among `names`."""
    return {n: c.pandas_dtype(file) for n in names if (c := column(n, file)) is not None}


# --- the docs page -------------------------------------------------------------------------

EMPTY_WORDS = {"never": "no", "unmeasured": "unmeasured rows", "yes": "yes"}
INTRO = """\
# Results schema

Generated from `tokenwatt/results/schema.py` by `python scripts/results-schema.py`; do not edit
by hand. Every column of `results.csv` (one row per trial, and one `status=failed` row per case
a sweep could not run) and `summary.csv` (one row per complete run, per window for a served
engine), as `tokenwatt.load_results` types it. This is schema version {version}.

- **dtype**: `string`, `int` (pandas `Int64` where a cell may be empty, else `int64`), `float`,
  `bool` (pandas' nullable `boolean`), `datetime` (UTC), `json` (JSON text, loaded as a string).
- **unit**: energy in joules (J), power in watts (W), time in seconds (s), memory in MiB
  (2^20 bytes); `–` for labels and plain numbers. A per-token figure divides by tokens actually
  generated, never by tokens configured. An energy covers only its `energy_scope` and is a
  measurement only when `measured` is True.
- **empty**: `no`: on every row, a failed case's too; `unmeasured rows`: empty only on a row
  that measured nothing (a failed case carries its identity, a degraded trial its run's
  columns); `yes`: may be empty on a measured row as well (where it does not apply).
- **file**: `results`, `summary` or `both`.
- A name with `{{i}}` is a family, one column per measured GPU board in placement order
  (`board0_total_j`, `board1_total_j`, ...); `{{phase}}` is `decode` or `prefill`.
- `load_results` adds `results_dir` (the folder a row came from) and reads older files under
  today's names (`flags` as `summary_flags`).
"""


def markdown() -> str:
    """docs/results-schema.md: the intro, then one table per group."""
    parts = [INTRO.format(version=SCHEMA_VERSION)]
    for group in GROUPS:
        rows = [c for c in COLUMNS if c.group == group]
        parts.append(f"\n## {group}\n\n| column | dtype | unit | empty | file | meaning |\n"
                     "|---|---|---|---|---|---|\n")  # fmt: skip
        parts.extend(f"| `{c.name}` | {c.dtype} | {c.unit} | {EMPTY_WORDS[c.empty]} | "
                     f"{c.files} | {_cell(c.description)} |\n" for c in rows)  # fmt: skip
    return "".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
