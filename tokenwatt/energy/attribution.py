"""Attributing an energy counter that updates slowly (NVML: about every 100 ms) to time.

Pure numbers (numpy and scipy), no hardware: the recorder feeds it the sampler's dated counter
updates and the marks (phase boundaries or window edges), and it returns joules per label with
an uncertainty. Written by hand because no library models NVML's sensor: each update period's
energy is exact (a counter difference), its instant value is the average power over the last
`window` of the period (25 ms on A100/H100), and everything else is inference.

Inside one period, power is modelled by the simplest shape the evidence allows, chosen per
period (`free_fit`):
- **step**: one change, from the power at the end of the previous period (its instant value)
  to the power at the end of this one (its instant value), placed so the period's energy is
  exact. It is chosen when the period's average lies between those two levels and the change
  lands before the instant window: one change explains everything. A change on an update tick
  is the special case of a step at the period's start.
- **instant-tail**: otherwise (a burst or a dip inside the period, two changes), the last
  `window` at the instant value and the rest spread evenly;
- **even**: without an instant value, the period's average.

Where marks are known power changes (`changes_at_marks`: the runner's prefill/decode marks,
taken after a device synchronisation), a period holding marks is split at them (`mark_fit`): a
piece continuing a segment seen over the neighbouring instant window takes that level, a short
piece (a 30 ms prefill) takes a level fitted locally (least squares over the nearby periods) as
its prior, and the levels are reconciled so the period's energy (and the instant window's) are
exact, each piece never below a fraction of the local power. The unknown split of such an edge
period gives each phase an uncertainty (the posterior standard deviation of the reconciliation);
a window edge cut inside a free period gets half the spread of the models consistent with it.
`trace_joules` integrates the instant-power trace alone, for the counter-versus-trace gap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tokenwatt.energy.sampler import Sample, tick_time

INSTANT_WINDOW_S = 0.025  # NVML_FI_DEV_POWER_INSTANT on A100/H100, when not measured
BEFORE, AFTER = "_before", "_after"  # time before the first and after the last mark
FLOOR_SHARE = 0.3  # a piece between marks never drops below this share of the local power
LOCAL_PERIODS = 12  # phase levels are fitted over this many periods on either side
# The head's level minus the instant value deviates by about T/(T-w) times (instant - period
# average), whose median absolute value `ripple` measures (0.674 sigma): about 2x.
HEAD_NOISE = 2.0
SQRT_2PI = math.sqrt(2 * math.pi)
KNOWN, OUTSIDE, UNKNOWN = "known", "outside", "unknown"
PRIOR_REL_SD = {OUTSIDE: 0.1, UNKNOWN: 0.5}  # a KNOWN level's is the local ripple
OCCURRENCE_SD = 0.05  # assumed spread of one phase's power between its occurrences

Piece = tuple[float, float, float]  # (start, end, watts)


@dataclass
class Updates:
    """One counter channel's updates: dates, cumulative joules, instant power published then,
    and how many sensor updates each interval ending there covers (> 1: some were missed)."""

    t: np.ndarray
    e: np.ndarray
    p: np.ndarray  # NaN where no instant value
    n: np.ndarray = field(default_factory=lambda: np.zeros(0))  # sensor updates per interval
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0))  # changes dated per interval

    def __post_init__(self) -> None:
        if len(self.n) != len(self.t):
            self.n = np.ones(len(self.t))
        if len(self.seen) != len(self.t):
            self.seen = np.ones(len(self.t))

    @classmethod
    def from_samples(cls, samples: list[Sample], key: str, period: float | None = None) -> Updates:
        ticks = [s for s in samples if s.tick and key in s.joules]
        t = [tick_time(s) for s in ticks]
        e = [s.joules[key] for s in ticks]
        p = [(s.power_w or {}).get(key, math.nan) for s in ticks]
        # per interval, from the lane's running counts: right across samples pruned between
        n = [s.updates for s in ticks]
        seen = [1] * len(ticks)
        for k in range(1, len(ticks)):
            if ticks[k].seen_cum and ticks[k - 1].seen_cum:
                seen[k] = ticks[k].seen_cum - ticks[k - 1].seen_cum
                n[k] = ticks[k].updates_cum - ticks[k - 1].updates_cum
        first = samples[0] if samples else None
        if first is not None and not first.tick and key in first.joules and (ticks or period):
            # The first read holds the value of the update before it: dated by the instant
            # field's timestamp when there is one, else one period before the first change.
            when = first.t_tick
            if when is None and ticks and period:
                when = t[0] - period
            if when is not None and (not t or when < t[0]):
                t.insert(0, when)
                e.insert(0, first.joules[key])
                p.insert(0, (first.power_w or {}).get(key, math.nan))
                n.insert(0, 1)
                seen.insert(0, 1)
        return cls(*(np.array(x, dtype=float) for x in (t, e, p, n, seen)))

    def around(self, t0: float, t1: float, extra: int = 3) -> Updates:
        """The updates that bound [t0, t1] and `extra` periods on either side."""
        lo = max(int(np.searchsorted(self.t, t0, side="right")) - 1 - extra, 0)
        hi = min(int(np.searchsorted(self.t, t1, side="left")) + 1 + extra, len(self.t))
        return self.slice(lo, hi)

    def slice(self, lo: int, hi: int) -> Updates:
        return Updates(self.t[lo:hi], self.e[lo:hi], self.p[lo:hi], self.n[lo:hi],
                       self.seen[lo:hi])  # fmt: skip

    def covers(self, t0: float, t1: float) -> bool:
        return len(self.t) >= 2 and self.t[0] <= t0 and self.t[-1] >= t1

    def avg(self, j: int) -> float | None:
        """Average power of period j (from update j-1 to update j), None outside."""
        if 1 <= j < len(self.t):
            return float((self.e[j] - self.e[j - 1]) / (self.t[j] - self.t[j - 1]))
        return None

    def instant(self, j: int) -> float | None:
        if 0 <= j < len(self.t) and not math.isnan(self.p[j]):
            return float(self.p[j])
        return None


def update_counts(u: Updates, t0: float, t1: float) -> tuple[int, int]:
    """(seen, expected) sensor updates over the periods that cover [t0, t1]: each observed
    change is one seen; the sensor made as many as the periods it covered."""
    if len(u.t) < 2:
        return 0, 0
    lo = max(int(np.searchsorted(u.t, t0, side="right")) - 1, 0)
    hi = min(int(np.searchsorted(u.t, t1, side="left")), len(u.t) - 1)
    if hi <= lo:
        return 0, 0
    return int(u.seen[lo + 1 : hi + 1].sum()), int(u.n[lo + 1 : hi + 1].sum())


def segments_of(marks: list[tuple[float, str]]) -> list[tuple[float, float, str]]:
    """The timeline as (start, end, label); before and after the marks get their own labels,
    so an edge is corrected with local power."""
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
    """Per-label power (W) that best explains every period's energy and instant value
    (non-negative least squares over the periods of `u`)."""
    return fit_levels_se(u, segs, labels, window)[0]


def fit_levels_se(u: Updates, segs: list[tuple[float, float, str]], labels: list[str],
                  window: float) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """`fit_levels` and each level's standard error (least squares on the labels the fit
    keeps; NaN where a label is not in `u` or the fit cannot tell it: a gap of a millisecond
    beside a prefill is not observable, however many periods hold one)."""
    from scipy.optimize import nnls

    rows, rhs = [], []
    for k in range(len(u.t) - 1):
        rows.append(_overlaps(segs, u.t[k], u.t[k + 1], labels))
        rhs.append(u.e[k + 1] - u.e[k])
        if not math.isnan(u.p[k + 1]):
            w = min(window, u.t[k + 1] - u.t[k])
            rows.append(0.5 * _overlaps(segs, u.t[k + 1] - w, u.t[k + 1], labels))
            rhs.append(0.5 * u.p[k + 1] * w)
    levels, se = np.full(len(labels), math.nan), np.full(len(labels), math.nan)
    if not rows:
        return np.ones(len(labels)), se
    a, b = np.array(rows), np.array(rhs)
    used = a.max(axis=0) > 0
    if used.any():
        scale = a[:, used].max(axis=0)  # columns in comparable units
        got, _ = nnls(a[:, used] / scale, b, maxiter=50 * len(labels))
        levels[used] = got / scale
        active = used & (np.nan_to_num(levels) > 0)
        dof = len(b) - int(active.sum())
        if active.any() and dof > 0:
            resid = b - a[:, used] @ levels[used]
            jac = a[:, active]
            cov = (resid @ resid / dof) * np.linalg.pinv(jac.T @ jac)
            se[active] = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return levels, se


# ---- one period --------------------------------------------------------------------------


@dataclass
class PeriodFit:
    pieces: list[Piece]
    rule: str
    alternatives: list[list[Piece]] = field(default_factory=list)  # other consistent models
    var: dict[str, float] = field(default_factory=dict)  # per label, J^2 (mark fits)


def step_pieces(a: float, b: float, energy: float, start_w: float | None,
                end_w: float | None, tail_s: float) -> list[Piece] | None:  # fmt: skip
    """One change from start_w to end_w that makes the period's energy exact, or None when no
    single change before the last tail_s can (the average is not between the two levels)."""
    if start_w is None or end_w is None:
        return None
    d = end_w - start_w
    if abs(d) <= 1e-9 * max(abs(start_w), abs(end_w), 1.0):
        return None
    x = (end_w * (b - a) - energy) / d  # when the change happens, after a
    if not 0.0 <= x <= (b - a) - tail_s:
        return None
    return [(a, a + x, start_w), (a + x, b, end_w)]


def tail_pieces(a: float, b: float, energy: float, end_w: float | None,
                window: float) -> list[Piece] | None:  # fmt: skip
    """The instant value over the last `window`, the rest of the energy spread evenly."""
    if end_w is None:
        return None
    w = min(window, b - a)
    head = (energy - end_w * w) / (b - a - w) if b - a > w else math.nan
    if not head >= 0.0:  # also NaN
        return None
    return [(a, b - w, head), (b - w, b, end_w)]


def free_fit(u: Updates, j: int, window: float, rule: str = "auto",
             noise_w: float = 0.0) -> PeriodFit:  # fmt: skip
    """Power inside period j without marks: the step, the instant tail, or even (see module
    doc). `rule` forces one ("even", "instant-tail", "step"), for comparing estimators.
    `noise_w`: the standard deviation of (head level - instant value) that ripple alone
    gives; a step is not taken when the head's level is that close to the end's (the change
    fell on the update that starts the period, or there was none: a step would fit ripple)."""
    a, b = float(u.t[j - 1]), float(u.t[j])
    energy = float(u.e[j] - u.e[j - 1])
    even = [(a, b, energy / (b - a))]
    end_w = u.instant(j)
    start_w = u.instant(j - 1)
    if start_w is None:
        start_w = u.avg(j - 1)
    if end_w is None:
        nxt = u.avg(j + 1)
        step = step_pieces(a, b, energy, start_w, nxt, 0.0)
        tail = None
    else:
        step = step_pieces(a, b, energy, start_w, end_w, min(window, b - a))
        tail = tail_pieces(a, b, energy, end_w, window)
    if rule == "auto" and step is not None and tail is not None and noise_w > 0:
        # The head already at the end's level: the change came on the update that starts the
        # period (or there was none), and a step would only place the ripple. Which is likelier:
        # the head's level h is ~N(end, noise) if so, ~uniform between the two levels if the
        # change fell inside the head; take the step only if that density is the higher.
        # Levels apart by no more than the ripple hold no change to place at all.
        d, jump = abs(tail[0][2] - end_w), abs(end_w - start_w)
        if jump <= 3 * noise_w or d <= noise_w * math.sqrt(
            max(2 * math.log(jump / (noise_w * SQRT_2PI)), 1.0)
        ):
            step = None
    models = {"step": step, "instant-tail": tail, "even": even}
    if rule != "auto":
        chosen = models.get(rule) or tail or even
        return PeriodFit(chosen, rule)
    consistent = [m for m in (step, tail) if m is not None] or [even]
    name = "step" if step is not None else ("instant-tail" if tail is not None else "even")
    return PeriodFit(consistent[0], name, consistent[1:])


def cumulative(pieces: list[Piece], a: float, x: float) -> float:
    """Energy of the pieces from a to x."""
    return sum(w * max(min(hi, x) - max(lo, a), 0.0) for lo, hi, w in pieces)


def reconcile(mu: np.ndarray, sigma: np.ndarray, c: np.ndarray, b: np.ndarray,
              lower: np.ndarray, soft: tuple[np.ndarray, float, float] | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Levels closest to the priors `mu` (standard deviations `sigma`), with C @ levels = b
    exactly, none below `lower` (pinned and solved again); `soft`: one more observation
    (row, value, standard deviation) weighed, not imposed. Returns the levels and their
    posterior covariance (the linear-Gaussian update, then the projection onto C)."""
    n = len(mu)
    free = np.ones(n, dtype=bool)
    levels = mu.copy()
    for _ in range(n + 1):
        s0 = np.diag(np.where(free, sigma**2, 0.0))
        m0 = np.where(free, mu, levels)
        if soft is not None:  # the instant value, as a noisy measurement of the tail
            row, value, sd = soft
            gain = s0 @ row / (row @ s0 @ row + sd**2)
            m0 = m0 + gain * (value - row @ m0)
            s0 = s0 - np.outer(gain, row @ s0)
        resid = b - c @ m0
        k = s0 @ c.T @ np.linalg.pinv(c @ s0 @ c.T)
        levels = np.where(free, m0 + k @ resid, levels)
        low = free & (levels < lower)
        if not low.any():
            return levels, s0 - k @ c @ s0
        levels = np.where(low, lower, levels)
        free &= ~low
    return levels, np.zeros((n, n))


# ---- the counter model -----------------------------------------------------------------------


class CounterModel:
    """Cumulative energy at any time between the first and last update, per-period models."""

    def __init__(self, u: Updates, marks: list[tuple[float, str]], window: float,
                 changes_at_marks: bool = True, rule: str = "auto") -> None:  # fmt: skip
        self.u, self.window, self.rule = u, window, rule
        self.marks = marks
        self.mark_t = np.array(sorted(t for t, _ in marks))
        self.segs = segments_of(marks)
        self.changes_at_marks = changes_at_marks
        self._fits: dict[int, PeriodFit] = {}
        self.unknown_shape = False  # attribute() sets it for a slow counter (shape_var)
        self._levels: dict[int, dict[str, tuple[float, float]]] = {}

    def period_of(self, x: float) -> int:
        j = int(np.searchsorted(self.u.t, x, side="left"))
        return min(max(j, 1), len(self.u.t) - 1)

    def marks_inside(self, j: int) -> np.ndarray:
        a, b = self.u.t[j - 1], self.u.t[j]
        return self.mark_t[(self.mark_t > a) & (self.mark_t < b)]

    def fit(self, j: int) -> PeriodFit:
        if j not in self._fits:
            self._fits[j] = self._fit(j)
        return self._fits[j]

    def _fit(self, j: int) -> PeriodFit:
        noise = self.ripple(j) * (self.u.avg(j) or 0.0) * HEAD_NOISE
        free = free_fit(self.u, j, self.window, self.rule, noise)
        inside = self.marks_inside(j)
        if self.rule != "auto" or not len(inside):
            return free
        if self.changes_at_marks or (len(inside) >= 2 and self._burst(j, free)):
            return self.mark_fit(j)
        return free

    def _burst(self, j: int, free: PeriodFit) -> bool:
        """Whether the period's energy departs from its neighbours' power by more than the
        ripple, with no single change to explain it: then a short window inside it is taken
        to hold the work (its marks are where the power changed)."""
        if free.rule == "step":
            return False
        u, ripple = self.u, self.ripple(j)
        levels = [x for x in (u.instant(j - 1), u.instant(j), u.avg(j - 1), u.avg(j + 1))
                  if x is not None]  # fmt: skip
        avg = u.avg(j) or 0.0
        return bool(levels) and all(abs(avg - x) > 3 * ripple * max(x, 1.0) for x in levels)

    def ripple(self, j: int) -> float:
        """Relative power ripple near period j: the instant value against its period's
        average (they differ by the ripple at scales below a period), 0.3%..5%."""
        devs = []
        for i in range(max(j - 3, 1), min(j + 4, len(self.u.t))):
            p, avg = self.u.instant(i), self.u.avg(i)
            if p is not None and avg:
                devs.append(abs(p - avg) / abs(avg))
        return float(np.clip(np.median(devs), 0.003, 0.05)) if devs else 0.02

    def local_levels(self, j: int) -> dict[str, tuple[float, float]]:
        """Per-label power fitted over the periods around j (LOCAL_PERIODS on either side).
        A label that spends less than two periods there (a 30 ms prefill, the gaps between
        repetitions) is not observable from so few periods: it takes its level fitted over the
        whole span, where every repetition adds evidence; its occurrence in period j then gets
        the energy that period leaves it (`mark_fit`)."""
        if j not in self._levels:
            lo, hi = max(j - LOCAL_PERIODS - 1, 0), min(j + LOCAL_PERIODS, len(self.u.t))
            got = self._fit_span(lo, hi)
            t0, t1 = self.u.t[lo], self.u.t[hi - 1]
            period = (t1 - t0) / max(hi - lo - 1, 1)
            spent: dict[str, float] = {}
            for s0, s1, lab in self.segs:
                spent[lab] = spent.get(lab, 0.0) + max(min(s1, t1) - max(s0, t0), 0.0)
            if any(v < 2 * period for v in spent.values()):
                whole = self._fit_span(0, len(self.u.t))
                got = {k: (v if spent.get(k, 0.0) >= 2 * period else whole.get(k, v))
                       for k, v in got.items()}  # fmt: skip
            self._levels[j] = got
        return self._levels[j]

    def _fit_span(self, lo: int, hi: int) -> dict[str, tuple[float, float]]:
        """{label: (level W, its standard error W)} fitted over periods lo..hi."""
        key = -1 - lo * 100_000 - hi  # cached with the local fits, under a key no period has
        if key not in self._levels:
            near = self.u.slice(lo, hi)
            labels = sorted({lab for _, _, lab in self.segs})
            got, se = fit_levels_se(near, self.segs, labels, self.window)
            self._levels[key] = {k: (float(v), float(e)) for k, v, e in zip(labels, got, se)
                                 if not math.isnan(v)}  # fmt: skip
        return self._levels[key]

    def mark_fit(self, j: int) -> PeriodFit:
        """Split period j at its marks and reconcile the pieces' levels with its energy."""
        u, window = self.u, self.window
        a, b = float(u.t[j - 1]), float(u.t[j])
        energy = float(u.e[j] - u.e[j - 1])
        pieces = [(max(s0, a), min(s1, b), lab, s0, s1) for s0, s1, lab in self.segs
                  if min(s1, b) > max(s0, a)]  # fmt: skip
        end_w = u.instant(j)
        w = min(window, b - a) if end_w is not None else 0.0
        ripple, avg = self.ripple(j), energy / (b - a)
        local = [x for x in (u.avg(j - 1), avg, u.avg(j + 1), u.instant(j - 1), end_w)
                 if x is not None and x > 0]  # fmt: skip
        floor_w = FLOOR_SHARE * min(local) if local else 0.0
        mu, sigma, lower, kinds = [], [], [], []
        for lo, hi, lab, s0, s1 in pieces:
            level, kind, sd = self._prior(j, lo, hi, lab, s0, s1, w)
            mu.append(level)
            if kind == KNOWN:  # a level carried over from its neighbour: off by the ripple
                rel = HEAD_NOISE * ripple * max(level, avg)
            else:
                rel = sd if sd is not None else PRIOR_REL_SD[kind] * level
            sigma.append(max(rel, 0.01 * avg, 1e-3))
            lower.append(floor_w if kind == UNKNOWN else 0.0)
            kinds.append(kind)
        c = np.array([[hi - lo for lo, hi, *_ in pieces]])
        mu_a, sig_a, low_a = np.array(mu), np.array(sigma), np.array(lower)
        # The instant value observes the pieces in the last w (each marked phase at one
        # level), unless time outside the marks, whose changes are unmarked, runs across the
        # window's start. A known piece that does holds its level there only up to the
        # ripple: the observation is weighed with that, not imposed (only the counter is
        # exact); phases wholly inside the window it determines.
        across = [lo < b - w < hi for lo, hi, *_ in pieces]
        soft = None
        if (
            end_w is not None
            and w > 0
            and not any(x and k == OUTSIDE for x, k in zip(across, kinds))
        ):
            row = np.array([max(min(hi, b) - max(lo, b - w), 0.0) for lo, hi, *_ in pieces])
            spill = float(sum(r for r, x, k in zip(row, across, kinds) if x and k == KNOWN))
            soft = (row, end_w * w, max(HEAD_NOISE * ripple * end_w * spill, 1e-6 * end_w * w))
        levels, cov = reconcile(mu_a, sig_a, c, np.array([energy]), low_a, soft)
        got = c[0] @ levels
        if got > 0 and abs(got - energy) > 1e-9 * max(abs(energy), 1.0):
            levels = levels * (energy / got)  # the counter is the truth: conserve it exactly
        out = [(lo, hi, float(lv)) for (lo, hi, *_), lv in zip(pieces, levels)]
        d = c[0]
        var: dict[str, float] = {}
        for lab in {p[2] for p in pieces}:
            g = np.array([di if p[2] == lab else 0.0 for di, p in zip(d, pieces)])
            var[lab] = max(float(g @ cov @ g), 0.0)
        return PeriodFit(out, "marks", var=var)

    def _prior(self, j: int, lo: float, hi: float, lab: str, s0: float, s1: float,
               w: float) -> tuple[float, str, float | None]:  # fmt: skip
        """A piece's prior level, kind and (UNKNOWN only) standard deviation: the instant value
        or whole period it continues (KNOWN; for the time outside the marks, whose changes are
        unmarked, OUTSIDE), else its label's fitted level (UNKNOWN), as uncertain as the fit
        says plus OCCURRENCE_SD (a phase's power differs a little from one occurrence to the
        next), so of two short pieces sharing a period the less known takes the residual."""
        u = self.u
        a, b = u.t[j - 1], u.t[j]
        kind = OUTSIDE if lab in (BEFORE, AFTER) else KNOWN
        if lo <= a and s0 < a:  # continues from the previous period
            prev_w = min(self.window, a - u.t[j - 2]) if j >= 2 else self.window
            if u.instant(j - 1) is not None and s0 <= a - prev_w:
                return u.instant(j - 1), kind, None
            if j >= 2 and s0 <= u.t[j - 2]:
                return u.avg(j - 1), kind, None
        if hi >= b and s1 > b:  # runs on into the next period
            if u.instant(j) is not None and lo <= b - w:
                return u.instant(j), kind, None
            if j + 1 < len(u.t) and s1 >= u.t[j + 1]:
                return u.avg(j + 1), kind, None
        level, se = self.local_levels(j).get(lab, (math.nan, math.nan))
        if not level > 0:
            level, se = u.avg(j), math.nan
        if not math.isfinite(se):
            se = PRIOR_REL_SD[UNKNOWN] * level
        return level, UNKNOWN, math.hypot(se, OCCURRENCE_SD * level)

    def at(self, x: float) -> float:
        j = self.period_of(x)
        a, b = self.u.t[j - 1], self.u.t[j]
        x = min(max(x, a), b)
        return float(self.u.e[j - 1] + cumulative(self.fit(j).pieces, a, x))

    def cut_var(self, x: float) -> float:
        """J^2 of where the energy of a free period is cut at x: the ripple the even head
        cannot place (a Brownian bridge over the head), plus half the spread of the models
        consistent with the period (none for a mark fit, whose variance is per label); in a
        period without an instant value, plus its unknown shape (shape_var)."""
        j = self.period_of(x)
        fit = self.fit(j)
        a, b = self.u.t[j - 1], self.u.t[j]
        x = min(max(x, a), b)
        unknown = 0.0
        if self.unknown_shape and self.u.instant(j) is None:
            unknown = self.shape_var(j, (x - a) / (b - a))
        if fit.rule == "marks":
            return unknown
        w = min(self.window, b - a) if self.u.instant(j) is not None else 0.0
        head = max(b - w - a, 1e-9)
        d = min(x - a, head)
        # white ripple of rate r2 (W^2 s): var(instant - period average) = r2 (1/w - 1/T)
        spread = (HEAD_NOISE * self.ripple(j) * (self.u.avg(j) or 0.0)) ** 2 / 4
        r2 = spread / max(1 / max(w or self.window, 1e-3) - 1 / (b - a), 1e-9)
        var = r2 * d * (head - d) / head
        if fit.alternatives:
            got = [cumulative(p, a, x) for p in [fit.pieces, *fit.alternatives]]
            var += (0.5 * (max(got) - min(got))) ** 2
        return var + unknown

    def shape_var(self, j: int, f: float) -> float:
        """J^2 of cutting a period with no instant value at fraction f of it: nothing says
        how its energy spreads inside, so it varies as much as the power varies from period
        to period nearby (a Brownian bridge: zero at the updates, largest mid-period). This is
        what a slow counter (a DCGM exporter's, every second or more) leaves unknown."""
        return (self.power_sd(j) * (self.u.t[j] - self.u.t[j - 1])) ** 2 * f * (1 - f)

    def power_sd(self, j: int) -> float:
        """W: how much the average power varies from period to period near period j."""
        avgs = [x for i in range(max(j - 3, 1), min(j + 4, len(self.u.t)))
                if (x := self.u.avg(i)) is not None]  # fmt: skip
        if len(avgs) < 2:
            return 0.0
        return float(np.sqrt(np.mean(np.diff(avgs) ** 2) / 2))


@dataclass
class Attribution:
    joules: dict[str, float]
    err: dict[str, float]  # one standard deviation (J), from the unknown split of edge periods
    rules: dict[str, int]  # how many periods each model explained


def attribute(u: Updates, marks: list[tuple[float, str]], window: float = INSTANT_WINDOW_S,
              changes_at_marks: bool = True, rule: str = "auto",
              unknown_shape: bool = False) -> Attribution:  # fmt: skip
    """Joules per label between the first and last mark, from counter updates.
    `unknown_shape`: a slow counter without instant values (a DCGM exporter's), whose cuts
    inside a period also carry shape_var."""
    u = u.around(marks[0][0], marks[-1][0])
    model = CounterModel(u, marks, window, changes_at_marks, rule)
    model.unknown_shape = unknown_shape
    joules: dict[str, float] = {}
    var: dict[str, float] = {}
    for (a, phase), (b, _) in zip(marks, marks[1:]):
        joules[phase] = joules.get(phase, 0.0) + model.at(b) - model.at(a)
        var.setdefault(phase, 0.0)
    for i, (t, _) in enumerate(marks):  # a cut inside a free period: both sides share it
        v = model.cut_var(t)
        for side in (marks[i - 1][1] if i else None, marks[i][1] if i < len(marks) - 1 else None):
            if side in var:
                var[side] += v
    first, last = model.period_of(marks[0][0]), model.period_of(marks[-1][0])
    rules: dict[str, int] = {}
    for j in range(first, last + 1):
        fit = model.fit(j)
        rules[fit.rule] = rules.get(fit.rule, 0) + 1
        for lab, v in fit.var.items():
            if lab in var:
                var[lab] += v
    return Attribution(joules, {k: math.sqrt(v) for k, v in var.items()}, rules)


def window_energy(u: Updates, t0: float, t1: float, window: float = INSTANT_WINDOW_S,
                  rule: str = "auto") -> float:  # fmt: skip
    """Energy of [t0, t1] with one estimator (`rule`), marks not taken as power changes."""
    got = attribute(u, [(t0, "w"), (t1, "end")], window, changes_at_marks=False, rule=rule)
    return got.joules["w"]


def trace_joules(u: Updates, t0: float, t1: float) -> float:
    """The instant-power trace integrated over [t0, t1], each value held over its period."""
    total = 0.0
    for k in range(1, len(u.t)):
        lo, hi = max(u.t[k - 1], t0), min(u.t[k], t1)
        if hi > lo and not math.isnan(u.p[k]):
            total += u.p[k] * (hi - lo)
    return total
