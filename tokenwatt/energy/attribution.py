"""Attributing an energy counter that updates slowly (NVML: about every 100 ms) to phases.

Pure numbers (numpy and scipy), no hardware: the recorder feeds it the sampler's dated counter
updates and the phase marks, and it returns joules per phase.

1. Each update period's energy is exact (a counter difference).
2. Inside a period, energy is distributed over time with the instant-power value (which covers
   the last `instant_window_s` of the period, 25 ms on A100/H100) and, for the rest, in
   proportion to per-phase power levels fitted by non-negative least squares over all periods
   of the window against the phase timeline. The window's total is the counter's; a phase
   shorter than a period (a 30 ms prefill) gets its share from the fitted levels, not from
   where the period boundary happened to fall.
3. `trace_joules` integrates the instant-power trace alone, for the counter-versus-trace gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tokenwatt.energy.sampler import Sample, tick_time

INSTANT_WINDOW_S = 0.025  # NVML_FI_DEV_POWER_INSTANT covers the last 25 ms of each update
BEFORE, AFTER = "_before", "_after"  # time before the first and after the last mark


@dataclass
class Updates:
    """One counter channel's updates: times, cumulative joules, instant power published then."""

    t: np.ndarray
    e: np.ndarray
    p: np.ndarray  # NaN where no instant value

    @classmethod
    def from_samples(cls, samples: list[Sample], key: str, period: float | None = None) -> Updates:
        ticks = [s for s in samples if s.tick and key in s.joules]
        t = [tick_time(s) for s in ticks]
        e = [s.joules[key] for s in ticks]
        p = [(s.power_w or {}).get(key, math.nan) for s in ticks]
        if period and ticks and samples[0] is not ticks[0] and key in samples[0].joules:
            # The first read holds the value of the update one period before the first change.
            first = samples[0]
            t.insert(0, t[0] - period)
            e.insert(0, first.joules[key])
            p.insert(0, (first.power_w or {}).get(key, math.nan))
        return cls(np.array(t), np.array(e), np.array(p, dtype=float))

    def around(self, t0: float, t1: float) -> Updates:
        """The updates that bound [t0, t1] and the one period on either side."""
        lo = max(int(np.searchsorted(self.t, t0, side="right")) - 2, 0)
        hi = min(int(np.searchsorted(self.t, t1, side="left")) + 2, len(self.t))
        return Updates(self.t[lo:hi], self.e[lo:hi], self.p[lo:hi])

    def covers(self, t0: float, t1: float) -> bool:
        return len(self.t) >= 2 and self.t[0] <= t0 and self.t[-1] >= t1


def segments_of(marks: list[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """The timeline as (start, end, label); before and after the marks get their own labels,
    fitted from the edge periods alone, so an edge is corrected with local power."""
    segs = [(-math.inf, marks[0][0], BEFORE)]
    for (a, phase), (b, _) in zip(marks, marks[1:]):
        segs.append((a, b, phase))
    segs.append((marks[-1][0], math.inf, AFTER))
    return segs


def _overlaps(segs: list[tuple[float, float, str]], a: float, b: float,
              labels: list[str]) -> np.ndarray:  # fmt: skip
    row = np.zeros(len(labels))
    for s0, s1, lab in segs:
        lo, hi = max(s0, a), min(s1, b)
        if hi > lo:
            row[labels.index(lab)] += hi - lo
    return row


def fit_levels(u: Updates, segs: list[tuple[float, float, str]], labels: list[str],
               window: float) -> np.ndarray:  # fmt: skip
    """Per-label power (W) that best explains every period's energy and instant value."""
    from scipy.optimize import nnls

    rows, rhs = [], []
    for k in range(len(u.t) - 1):
        rows.append(_overlaps(segs, u.t[k], u.t[k + 1], labels))
        rhs.append(u.e[k + 1] - u.e[k])
        if not math.isnan(u.p[k + 1]):
            w = min(window, u.t[k + 1] - u.t[k])
            rows.append(0.5 * _overlaps(segs, u.t[k + 1] - w, u.t[k + 1], labels))
            rhs.append(0.5 * u.p[k + 1] * w)
    if not rows:
        return np.ones(len(labels))
    a, b = np.array(rows), np.array(rhs)
    scale = np.maximum(a.max(axis=0), 1e-12)  # columns in comparable units
    levels, _ = nnls(a / scale, b, maxiter=50 * len(labels))
    return levels / scale


class CounterModel:
    """Cumulative energy at any time between the first and last update.

    Inside a period, energy is spread over pieces of the phase timeline, each with the nearest
    power known around it: a piece continuing from a whole previous period takes that period's
    average; a piece running to the period's end takes the instant value (which covers that
    end), or else the next period's average; a piece too short for either (a 30 ms prefill)
    takes its phase's fitted level. So a window edge is corrected with local power.
    """

    def __init__(self, u: Updates, segs: list[tuple[float, float, str]], levels: np.ndarray,
                 labels: list[str], window: float) -> None:  # fmt: skip
        self.u, self.segs, self.window = u, segs, window
        self.level = dict(zip(labels, levels))
        self._pieces: dict[int, list[tuple[float, float, float]]] = {}

    def _avg(self, k: int) -> float | None:
        u = self.u
        if 0 <= k < len(u.t) - 1:
            return (u.e[k + 1] - u.e[k]) / (u.t[k + 1] - u.t[k])
        return None

    def pieces(self, k: int) -> list[tuple[float, float, float]]:
        """(start, end, watts) pieces of period k."""
        if k in self._pieces:
            return self._pieces[k]
        t, out = self.u.t, []
        for s0, s1, lab in self.segs:
            lo, hi = max(s0, t[k]), min(s1, t[k + 1])
            if hi <= lo:
                continue
            level = None
            if s0 <= t[k] and k >= 1 and s0 <= t[k - 1]:
                level = self._avg(k - 1)  # continues from a whole previous period
            elif s1 >= t[k + 1] and not math.isnan(self.u.p[k + 1]):
                level = float(self.u.p[k + 1])  # runs to the period's end: the instant value
            elif s1 >= t[k + 1] and k + 2 < len(t) and s1 >= t[k + 2]:
                level = self._avg(k + 1)
            out.append((lo, hi, float(self.level[lab]) if level is None else max(level, 0.0)))
        self._pieces[k] = out
        return out

    def _weight(self, k: int, a: float, b: float) -> float:
        return sum(w * max(min(hi, b) - max(lo, a), 0.0) for lo, hi, w in self.pieces(k))

    def at(self, x: float) -> float:
        u = self.u
        k = int(np.searchsorted(u.t, x, side="right")) - 1
        k = min(max(k, 0), len(u.t) - 2)
        t0, t1, de = u.t[k], u.t[k + 1], u.e[k + 1] - u.e[k]
        x = min(max(x, t0), t1)
        if math.isnan(u.p[k + 1]):
            return u.e[k] + de * self._share(k, t0, x, t1)
        w = min(self.window, t1 - t0)
        tail_j = min(max(u.p[k + 1] * w, 0.0), de)  # the instant value covers the period's end
        head_j, cut = de - tail_j, t1 - w
        if x <= cut:
            return u.e[k] + head_j * self._share(k, t0, x, cut)
        return u.e[k] + head_j + tail_j * self._share(k, cut, x, t1)

    def _share(self, k: int, a: float, x: float, b: float) -> float:
        whole = self._weight(k, a, b)
        if whole <= 0:
            return (x - a) / (b - a) if b > a else 0.0
        return self._weight(k, a, x) / whole


def attribute(u: Updates, marks: list[tuple[float, str]],
              window: float = INSTANT_WINDOW_S) -> dict[str, float]:  # fmt: skip
    """Joules per phase label between the first and last mark, from counter updates."""
    u = u.around(marks[0][0], marks[-1][0])
    segs = segments_of(marks)
    labels = sorted({lab for _, _, lab in segs})
    levels = fit_levels(u, segs, labels, window)
    model = CounterModel(u, segs, levels, labels, window)
    out: dict[str, float] = {}
    for (a, phase), (b, _) in zip(marks, marks[1:]):
        out[phase] = out.get(phase, 0.0) + model.at(b) - model.at(a)
    return out


def trace_joules(u: Updates, t0: float, t1: float) -> float:
    """The instant-power trace integrated over [t0, t1], each value held over its period."""
    total = 0.0
    for k in range(1, len(u.t)):
        lo, hi = max(u.t[k - 1], t0), min(u.t[k], t1)
        if hi > lo and not math.isnan(u.p[k]):
            total += u.p[k] * (hi - lo)
    return total
