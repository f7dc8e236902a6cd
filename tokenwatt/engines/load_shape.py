"""How engine openai's requests arrive: the one owner of the load shape.

- fixed-concurrency (default): a closed loop, `batch_size` requests always in flight, a new one
  sent when one finishes (`workload.requests` per pass).
- poisson / gamma (`workload.request_rate` R, `workload.burstiness` B): an open loop, as vLLM's
  benchmark_serving: the times between arrivals are gamma draws of shape B and mean 1/R (B = 1
  is exponential: Poisson arrivals), seeded by workload.seed and the pass's number, so a run
  is reproducible. The first request arrives at the pass's start.
- trace (`workload.trace`): an open loop replaying a JSONL file's arrival times, each request
  with its own prompt and output length.

In an open loop each request is sent at its arrival time; `batch_size` caps the requests in
flight (vLLM's --max-concurrency), and a request arriving while the cap is reached waits for a
slot and is counted in `requests_delayed`. The engine asks this module for each pass's arrival
offsets and lengths, and the rows take `columns()` as they are.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tokenwatt.config import Workload, short
from tokenwatt.errors import UserError

FIXED, POISSON, GAMMA, TRACE = "fixed-concurrency", "poisson", "gamma", "trace"
MAX_TRACE_LINES = 1_000_000  # as workload.requests' bound
# Mooncake's and AIPerf's trace fields; their `timestamp` (and `delay`) are milliseconds.
TIME_FIELDS = {"timestamp_s": 1.0, "timestamp": 1e-3}
LENGTH_FIELDS = {"input_length": ("input_length", "input_tokens"),
                 "output_length": ("output_length", "output_tokens")}  # fmt: skip
FORMAT_HINT = ('each line a JSON object like {"timestamp": 0, "input_length": 128, '
               '"output_length": 64} (timestamp in ms, or timestamp_s in s)')  # fmt: skip


@dataclass(frozen=True)
class Arrival:
    """One request of a trace: when it arrives (s from the pass's start) and its lengths."""

    t_s: float
    input_length: int
    output_length: int


class LoadShape:
    """A workload's load shape; a trace is read (and refused in one line) when it is made."""

    def __init__(self, w: Workload) -> None:
        self.w = w
        self.trace = read_trace(w.trace) if w.trace else None

    @property
    def name(self) -> str:
        if self.trace is not None:
            return TRACE
        if self.w.request_rate is None:
            return FIXED
        return POISSON if self.w.burstiness == 1.0 else GAMMA

    @property
    def open_loop(self) -> bool:
        return self.name != FIXED

    def request_count(self) -> int:
        return len(self.trace) if self.trace is not None else self.w.request_count()

    def offsets(self, call: int) -> list[float] | None:
        """Pass `call`'s arrival times in s from its start; None for the closed loop."""
        if self.trace is not None:
            return [a.t_s for a in self.trace]
        if self.w.request_rate is None:
            return None
        return gamma_arrivals(self.w.request_rate, self.w.burstiness, self.request_count(),
                              self.w.seed, call)  # fmt: skip

    def input_lengths(self) -> list[int] | None:
        """Each request's prompt length (a trace's), or None: workload.prompt_tokens each."""
        return [a.input_length for a in self.trace] if self.trace is not None else None

    def output_lengths(self) -> list[int] | None:
        """Each request's max_tokens (a trace's), or None: workload.new_tokens each."""
        return [a.output_length for a in self.trace] if self.trace is not None else None

    def columns(self) -> dict[str, Any]:
        """What every row of the run says about its load (a trace's mean lengths replace the
        configured prompt_tokens and new_tokens, which it does not use)."""
        cols: dict[str, Any] = {
            "load_shape": self.name,
            "request_rate": self.w.request_rate if self.w.request_rate is not None else math.nan,
            "burstiness": self.w.burstiness if self.w.request_rate is not None else math.nan,
        }
        if self.trace is not None:
            cols["prompt_tokens"] = round(np.mean([a.input_length for a in self.trace]))
            cols["new_tokens"] = round(np.mean([a.output_length for a in self.trace]))
            span = self.trace[-1].t_s - self.trace[0].t_s
            cols["request_rate"] = (len(self.trace) - 1) / span if span > 0 else math.nan
        return cols


def gamma_arrivals(rate: float, burstiness: float, n: int, seed: int, call: int) -> list[float]:
    """n arrival times: 0, then cumulative gamma(shape B, scale 1/(R B)) gaps (mean 1/R).
    numpy's Generator draws them; SeedSequence takes non-negative entropy, hence the modulo."""
    rng = np.random.default_rng([seed % 2**64, call, 0x10AD])
    gaps = rng.gamma(shape=burstiness, scale=1.0 / (rate * burstiness), size=max(n - 1, 0))
    return [0.0, *np.cumsum(gaps).tolist()][:n]


def read_trace(path: str) -> list[Arrival]:
    """The trace's arrivals, in order; a bad file or line is one UserError naming the fix."""
    where = f"workload.trace: {path!r}"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{where} does not exist; give a JSONL file, {FORMAT_HINT}") from None
    except (OSError, UnicodeDecodeError) as e:
        why = getattr(e, "strerror", None) or "not UTF-8 text"
        raise UserError(f"{where}: cannot read it ({why}); give a UTF-8 JSONL file") from None
    lines = [(n, ln) for n, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        raise UserError(f"{where} is empty; {FORMAT_HINT}")
    if len(lines) > MAX_TRACE_LINES:
        raise UserError(f"{where} has {len(lines):,} lines; a pass sends at most "
                        f"{MAX_TRACE_LINES:,}: cut the trace")  # fmt: skip
    out: list[Arrival] = []
    for n, line in lines:
        a = _arrival(line, f"{where} line {n}")
        if out and a.t_s < out[-1].t_s:
            raise UserError(f"{where} line {n}: arrives at {a.t_s:g} s, before the line above "
                            f"({out[-1].t_s:g} s); sort the trace by timestamp")  # fmt: skip
        out.append(a)
    return out


def _arrival(line: str, where: str) -> Arrival:
    try:
        obj = json.loads(line)
    except ValueError:
        raise UserError(f"{where} is not JSON; {FORMAT_HINT}") from None
    if not isinstance(obj, dict):
        raise UserError(f"{where} is not a JSON object; {FORMAT_HINT}")
    return Arrival(_time(obj, where), *(_length(obj, f, where) for f in LENGTH_FIELDS))


def _time(obj: dict[str, Any], where: str) -> float:
    given = [k for k in TIME_FIELDS if k in obj]
    if len(given) != 1:
        raise UserError(f"{where}: give exactly one of timestamp (ms) or timestamp_s (s)")
    key = given[0]
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
        raise UserError(f"{where}: {key} is {short(v)}; give a number >= 0 (time since "
                        "the trace's start)")  # fmt: skip
    return float(v) * TIME_FIELDS[key]


def _length(obj: dict[str, Any], field: str, where: str) -> int:
    key = next((k for k in LENGTH_FIELDS[field] if k in obj), None)
    if key is None:
        raise UserError(f"{where}: no {field}; {FORMAT_HINT}")
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 1_048_576:
        raise UserError(f"{where}: {key} is {short(v)}; give a whole number of tokens "
                        "from 1 to 1048576")  # fmt: skip
    return v


def cap_warnings(trials: list[dict[str, Any]]) -> list[str]:
    """The summary's warning when requests of an open loop waited for a slot: the cap
    (batch_size) bounded the load, so the arrivals were not those asked for."""
    delayed = [int(n) for t in trials if t.get("window", "whole-run") == "whole-run"
               and str(n := t.get("requests_delayed") or 0).isdigit()]  # fmt: skip
    if not sum(delayed):
        return []
    return [
        f"load-capped: {sum(delayed)} request(s) waited for a slot because batch_size "
        f"({trials[0].get('batch_size')}) requests were in flight; the load was not the "
        "open loop asked for: raise --batch-size above what the rate needs"
    ]
