"""Serving windows and latency figures from a trial's request timings: pure numbers.

The steady-state window follows the ML.ENERGY rule: it opens when `concurrency` requests
have their first token (every slot is decoding) and closes when `N - concurrency` requests
have finished (from then on fewer than `concurrency` remain, so the load ramps down).
Failed requests count as finished when they fail (their slot came free); their tokens are
not counted, the same as `Batch.tokens_generated`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from tokenwatt.engines.base import RequestTiming

Window = tuple[float, float]


def windows(requests: Sequence[RequestTiming], concurrency: int) -> dict[str, Window | None]:
    """{"whole": (first sent_t, last end_t), "steady": (t0, t1)}; a window that is not a
    positive interval (no requests, N <= concurrency, a too-short steady state) is None."""
    ends = sorted(r.end_t for r in requests if r.end_t is not None)
    whole = _interval(min((r.sent_t for r in requests), default=None), ends[-1] if ends else None)
    firsts = sorted(r.first_token_t for r in requests if r.first_token_t is not None)
    k_end = len(requests) - concurrency  # finishing this many ends the steady state
    steady = None
    if concurrency >= 1 and len(firsts) >= concurrency and 1 <= k_end <= len(ends):
        steady = _interval(firsts[concurrency - 1], ends[k_end - 1])
    return {"whole": whole, "steady": steady}


def _interval(t0: float | None, t1: float | None) -> Window | None:
    return (t0, t1) if t0 is not None and t1 is not None and t1 > t0 else None


def phase_marks(requests: Sequence[RequestTiming], concurrency: int) -> list[tuple[str, float]]:
    """The marks the recorder attributes energy to: whole run = ramp-up + steady + ramp-down,
    steady state = steady. Without a steady window: ramp-up then end."""
    w = windows(requests, concurrency)
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
    tokens, ttft, itl, finished = _collect(requests, t0, t1)
    seconds = t1 - t0
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else None,
        "requests_finished": finished,
        **_latency(ttft, itl, None),
    }


def tokens_between(requests: Sequence[RequestTiming], t0: float, t1: float) -> int:
    """The ok requests' tokens dated inside [t0, t1] (usage spread over chunks)."""
    return _collect(requests, t0, t1)[0]


def latency_stats(spans: Sequence[tuple[Sequence[RequestTiming], float, float]]
                  ) -> dict[str, float]:  # fmt: skip
    """TTFT and ITL median/p90 pooled over several passes' windows (requests, t0, t1), for a
    row: NaN where no request or gap fell inside."""
    ttft: list[float] = []
    itl: list[float] = []
    for requests, t0, t1 in spans:
        _, a, b, _ = _collect(requests, t0, t1)
        ttft += a
        itl += b
    return _latency(ttft, itl, math.nan)


def _collect(requests: Sequence[RequestTiming], t0: float, t1: float
             ) -> tuple[int, list[float], list[float], int]:  # fmt: skip
    """(tokens, TTFTs, ITLs, finished) of the ok requests inside [t0, t1]. ITL: each gap
    between consecutive chunks that both fall inside, divided by the later chunk's tokens and
    counted once per token; TTFT: of requests whose first token is inside."""
    tokens, ttft, itl, finished = 0, [], [], 0
    for r in requests:
        if not r.ok:
            continue
        per = chunk_tokens(r)
        inside = [t0 <= t <= t1 for t in r.token_times]
        tokens += sum(n for n, ok in zip(per, inside) if ok)
        for i in range(1, len(per)):
            if inside[i] and inside[i - 1] and per[i] > 0:
                itl.extend([(r.token_times[i] - r.token_times[i - 1]) / per[i]] * per[i])
        if r.first_token_t is not None and t0 <= r.first_token_t <= t1:
            ttft.append(r.first_token_t - r.sent_t)
        finished += r.end_t is not None and t0 <= r.end_t <= t1
    return tokens, ttft, itl, finished


def _latency(ttft: list[float], itl: list[float], empty: Any) -> dict[str, Any]:
    def q(xs: list[float], p: float) -> Any:
        v = quantile(xs, p)
        return empty if v is None else v

    return {"ttft_s_median": q(ttft, 0.5), "ttft_s_p90": q(ttft, 0.9),
            "itl_s_median": q(itl, 0.5), "itl_s_p90": q(itl, 0.9)}  # fmt: skip


def quantile(xs: Sequence[float], q: float) -> float | None:
    """Linear interpolation between order statistics (numpy's default); None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    pos = q * (len(s) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)
