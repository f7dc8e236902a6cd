"""Failures counted in one line: `2 x MeterError: GPU is lost; 1 x ...` (run, sweep, compare,
report and plan all say what failed this way)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any


def plural(n: int, noun: str) -> str:
    """`1 trial`, `3 trials`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def by_reason(reasons: Iterable[Any], shown: int = 3, width: int = 160, sep: str = "; ") -> str:
    """`2 x MeterError: GPU is lost; 1 x ...`: each reason once with its count, commonest
    first, at most `shown` of them, each cut to `width` characters so the line stays one."""
    counts = Counter(_reason(r) for r in reasons)
    parts = [f"{n} x {_cut(r, width)}" for r, n in counts.most_common(shown)]
    rest = sum(counts.values()) - sum(n for _, n in counts.most_common(shown))
    return sep.join(parts + ([f"{rest} x other reasons"] if rest else []))


def _reason(r: Any) -> str:
    text = "" if r is None or (isinstance(r, float) and r != r) else " ".join(str(r).split())
    return text or "no reason recorded"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."
