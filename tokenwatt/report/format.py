"""The one number formatter: how every figure looks in the console, tables and reports."""

from __future__ import annotations

import math
from typing import Any


def finite(v: Any) -> bool:
    """True for a number that is neither NaN nor infinite (CSV strings included)."""
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def fmt(v: Any, digits: int = 4) -> str:
    """A figure to `digits` significant digits; "-" for a missing one."""
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {fmt(x, digits)}" for k, x in v.items())
    return str(v)


def compact(v: Any, digits: int = 3) -> str:
    """3 significant digits, never in exponent notation, k/M/G from 10,000 up (plans, racks)."""
    if not finite(v):
        return "-"
    v = float(v)
    for limit, scale, suffix in ((1e9, 1e9, "G"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= limit:
            return _sig(v / scale, digits) + suffix
    return _sig(v, digits)


def _sig(x: float, digits: int) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 ** (digits - 1) else f"{x:.{digits}g}"


def pct(v: Any) -> str:
    """A fraction as a percentage with one decimal: 0.044 -> 4.4%."""
    return f"{float(v):.1%}" if finite(v) else "-"


# --- intervals ------------------------------------------------------------------------------
# How every 95% interval is shown. Below MIN_INTERVAL_N trials a Student-t interval is so wide
# (t = 12.7 at n = 2) that it says nothing, so it is not shown as if it did. A quantity that
# cannot be negative (J/token, tokens/s, W, a ratio of them) never shows a negative lower
# bound, even from a file written before the intervals were computed on the log scale.

MIN_INTERVAL_N = 3
NOT_INFORMATIVE = "interval not informative"


def informative(n: Any) -> bool:
    """True when n trials (None: unknown) are enough to show an interval."""
    return n is None or not finite(n) or float(n) >= MIN_INTERVAL_N


def bounds(lo: Any, hi: Any, positive: bool = True) -> tuple[float, float] | None:
    """(low, high) to show, the low end clipped at 0 for a positive quantity; None if absent."""
    if not (finite(lo) and finite(hi)):
        return None
    low, high = float(lo), float(hi)
    return (max(low, 0.0) if positive else low), high


def interval(lo: Any, hi: Any, n: Any = None, positive: bool = True, digits: int = 4) -> str:
    """`0.03159 – 0.0735`; `interval not informative (n=2)` below 3 trials; "-" if absent."""
    if not informative(n):
        return f"{NOT_INFORMATIVE} (n={int(float(n))})"
    b = bounds(lo, hi, positive)
    return "-" if b is None else f"{fmt(b[0], digits)} – {fmt(b[1], digits)}"


def mean_with_ci(mean: Any, lo: Any, hi: Any, n: Any = None, positive: bool = True) -> str:
    """`0.05255 [0.0316, 0.0735]` for tables; the mean alone with the reason where no CI."""
    if not informative(n):
        return f"{fmt(mean)} [{NOT_INFORMATIVE}, n={int(float(n))}]"
    b = bounds(lo, hi, positive)
    return fmt(mean) if b is None else f"{fmt(mean)} [{fmt(b[0], 3)}, {fmt(b[1], 3)}]"


def ratio_with_ci(r: float, lo: float, hi: float, n: Any = None) -> str:
    """A ratio and its 95% interval: `0.91 [0.85, 0.97]`; n is the smaller side's trials."""
    if not finite(r):
        return "-"
    if not informative(n):
        return f"{r:.3g} [{NOT_INFORMATIVE}, n={int(float(n))}]"
    b = bounds(lo, hi)
    if b is None:
        return f"{r:.3g} [n<2]"
    return f"{r:.3g} [{b[0]:.3g}, {b[1]:.3g}]"


# --- judgements shown beside the numbers ---------------------------------------------------------

IDLE_CLOSE = 0.05  # load power within 5% of idle: no energy above idle can be told apart


def near_idle(avg_power_w: Any, idle_power_w: Any, within: float = IDLE_CLOSE) -> bool:
    """True when the power under load is within `within` of the idle power (both known)."""
    if not (finite(avg_power_w) and finite(idle_power_w)) or float(idle_power_w) <= 0:
        return False
    return abs(float(avg_power_w) / float(idle_power_w) - 1) <= within
