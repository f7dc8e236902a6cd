"""Serving windows and latency figures from a trial's request timings: pure numbers.

The steady-state window of the closed loop follows the ML.ENERGY rule: it opens when
`concurrency` requests have their first token (every slot is decoding) and closes when
`N - concurrency` requests have finished (from then on fewer than `concurrency` remain, so the
load ramps down). An open loop (engines/load_shape.py) has no slots to fill: its steady state
opens when the first request finishes (requests now leave as well as arrive, so the number in
flight has grown to what the arrival rate sustains) and closes when the last request is sent
(from then on nothing arrives and the load drains). In the closed loop that closing edge is
the same instant: the (N - concurrency)-th finish sends the last request.
Failed requests count as finished when they fail (their slot came free); their tokens are
not counted, the same as `Batch.tokens_generated`.

Inter-token latency comes in two forms. `itl_s_*` pools every streamed gap inside the window,
per token (AIPerf's inter-chunk latency: long requests weigh more). `itl_per_request_s_*` is
over requests: each request's mean, (end - first token) / (output tokens - 1), as vLLM's
benchmark_serving computes TPOT, for the ok requests whose first token is in the window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tokenwatt.engines.base import RequestTiming

Window = tuple[float, float]


def windows(requests: Sequence[RequestTiming], concurrency: int,
            open_loop: bool = False) -> dict[str, Window | None]:  # fmt: skip
    """{"whole": (first sent_t, last end_t), "steady": (t0, t1)}; a window that is not a
    positive interval (no requests, N <= concurrency, a too-short steady state) is None."""
    ends = sorted(r.end_t for r in requests if r.end_t is not None)
    first_sent = min((r.sent_t for r in requests), default=None)
    whole = _interval(first_sent, ends[-1] if ends else None)
    if open_loop:
        last_sent = max((r.sent_t for r in requests), default=None)
        return {"whole": whole, "steady": _interval(ends[0] if ends else None, last_sent)}
    firsts = sorted(r.first_token_t for r in requests if r.first_token_t is not None)
    k_end = len(requests) - concurrency  # finishing this many ends the steady state
    steady = None
    if concurrency >= 1 and len(firsts) >= concurrency and 1 <= k_end <= len(ends):
        steady = _interval(firsts[concurrency - 1], ends[k_end - 1])
    return {"whole": whole, "steady": steady}


def _interval(t0: float | None, t1: float | None) -> Window | None:
    return (t0, t1) if t0 is not None and t1 is not None and t1 > t0 else None


def phase_marks(requests: Sequence[RequestTiming], concurrency: int,
                open_loop: bool = False) -> list[tuple[str, float]]:  # fmt: skip
    """The marks the recorder attributes energy to: whole run = ramp-up + steady + ramp-down,
    steady state = steady. Without a steady window: ramp-up then end."""
    w = windows(requests, concurrency, open_loop)
    if w["whole"] is None:
        return []
    (t0, t1), steady = w["whole"], w["steady"]
    if steady is None:
        return [("ramp-up", t0), ("end", t1)]
    return [("ramp-up", t0), ("steady", steady[0]), ("ramp-down", steady[1]), ("end", t1)]


def chunk_tokens(r: RequestTiming) -> list[int]:
    """The request's usage tokens spread over its chunks (cumulative rounding, so they sum to
    output_tokens exactly); a request without chunks carries none."""
    n, u = len(r.token_times), r.output_tokens
    if n == 0:
        return []
    return [(i + 1) * u // n - i * u // n for i in range(n)]


def window_stats(requests: Sequence[RequestTiming], t0: float, t1: float) -> dict[str, Any]:
    """Tokens, throughput, finished requests, TTFT and ITL of the ok requests inside [t0, t1]
    (latencies None when the window holds none)."""
    got = _collect(requests, t0, t1)
    seconds = t1 - t0
    return {
        "tokens": got.tokens,
        "seconds": seconds,
        "tokens_per_s": got.tokens / seconds if seconds > 0 else None,
        "requests_finished": got.finished,
        **_latency(got, None),
    }


def tokens_between(requests: Sequence[RequestTiming], t0: float, t1: float) -> int:
    """The ok requests' tokens dated inside [t0, t1] (usage spread over chunks)."""
    return _collect(requests, t0, t1).tokens


def latency_stats(spans: Sequence[tuple[Sequence[RequestTiming], float, float]]
                  ) -> dict[str, float]:  # fmt: skip
    """TTFT and ITL figures pooled over several passes' windows (requests, t0, t1), for a
    row: NaN where no request or gap fell inside."""
    pooled = _Collected()
    for requests, t0, t1 in spans:
        got = _collect(requests, t0, t1)
        pooled.ttft += got.ttft
        pooled.itl += got.itl
        pooled.itl_request += got.itl_request
    return _latency(pooled, math.nan)


@dataclass
class _Collected:
    tokens: int = 0
    ttft: list[float] = field(default_factory=list)
    itl: list[float] = field(default_factory=list)  # one per token: pooled chunk gaps
    itl_request: list[float] = field(default_factory=list)  # one per request: its mean
    finished: int = 0


def _collect(requests: Sequence[RequestTiming], t0: float, t1: float) -> _Collected:
    """Tokens, TTFTs, ITLs and finished of the ok requests inside [t0, t1]. ITL: each gap
    between consecutive chunks that both fall inside, divided by the later chunk's tokens and
    counted once per token; TTFT and per-request ITL: of requests whose first token is inside."""
    c = _Collected()
    for r in requests:
        if not r.ok:
            continue
        per = chunk_tokens(r)
        inside = [t0 <= t <= t1 for t in r.token_times]
        c.tokens += sum(n for n, ok in zip(per, inside) if ok)
        for i in range(1, len(per)):
            if inside[i] and inside[i - 1] and per[i] > 0:
                c.itl.extend([(r.token_times[i] - r.token_times[i - 1]) / per[i]] * per[i])
        if r.first_token_t is not None and t0 <= r.first_token_t <= t1:
            c.ttft.append(r.first_token_t - r.sent_t)
            if (mean := request_itl(r)) is not None:
                c.itl_request.append(mean)
        c.finished += r.end_t is not None and t0 <= r.end_t <= t1
    return c


def request_itl(r: RequestTiming) -> float | None:
    """A request's mean inter-token latency, (end - first token) / (output tokens - 1);
    None where it is undefined (failed, or fewer than two tokens)."""
    if not r.ok or r.first_token_t is None or r.end_t is None or r.output_tokens < 2:
        return None
    return (r.end_t - r.first_token_t) / (r.output_tokens - 1)


def _latency(c: _Collected, empty: Any) -> dict[str, Any]:
    def q(xs: list[float], p: float) -> Any:
        v = quantile(xs, p)
        return empty if v is None else v

    per = c.itl_request
    return {"ttft_s_median": q(c.ttft, 0.5), "ttft_s_p90": q(c.ttft, 0.9),
            "itl_s_median": q(c.itl, 0.5), "itl_s_p90": q(c.itl, 0.9),
            "itl_per_request_s_mean": sum(per) / len(per) if per else empty,
            "itl_per_request_s_median": q(per, 0.5), "itl_per_request_s_p90": q(per, 0.9),
            "itl_per_request_s_p99": q(per, 0.99)}  # fmt: skip


def quantile(xs: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default); None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
