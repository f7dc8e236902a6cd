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


def ratio_with_ci(r: float, lo: float, hi: float) -> str:
    """A ratio and its 95% interval: `0.91 [0.85, 0.97]`; `[n<2]` where there is none."""
    if not finite(r):
        return "-"
    if not finite(lo):
        return f"{r:.3g} [n<2]"
    return f"{r:.3g} [{lo:.3g}, {hi:.3g}]"
