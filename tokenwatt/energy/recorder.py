"""Joules per phase: counter truth, attributed to phases along the power trace.

API used by the runner (and, through `evaluate`, by `tokenwatt.Monitor`):

    rec = PhaseRecorder(meters)          # sampler="auto": started at the first mark if needed
    rec.mark("prefill"); ...; rec.mark("decode"); ...; rec.mark("end")   # after device sync
    phases = rec.phases()                # {"prefill": PhaseEnergy(seconds, joules, joules_err)}
    q = rec.quality()  # counter_vs_trace_gap_pct, update_period_s, window_s, avg_power_w,
                       # updates_seen, updates_expected, phase_j_err, instant_window_s,
                       # attribution ("counter-updates+trace" | "mark-reads"), flags ("a;b")
    rec.trace()                          # the power trace rows, for the run JSON

An engine that runs outside this process (vLLM's engine core, a server) cannot be marked by a
device synchronisation here; it dates its own phase boundaries (request timestamps on the
system-wide monotonic clock). Then `rec.start()` opens the window and `rec.mark_at(phase, t)`
places each dated boundary afterwards: the reads at such a mark are interpolated from the
sampler's trace, and slowly updating counters are attributed exactly as for live marks.

A phase's energy is summed over all its occurrences; the "end" phase (between repetitions)
belongs to no phase. Channels whose counter is continuous (RAPL, the estimate) use the
difference of the reads taken at the marks. Channels with a slowly updating counter (NVML,
about every 100 ms) are handled so that short windows and short phases are not quantised:

1. Alignment (optional): the first mark waits (at most about one update period) for the
   counter to update, so the window starts right after an update.
2. The sampler dates every counter update (`sampler.py`); after the last mark `phases()`
   waits for the update that closes the end's period (one; two without an instant field, whose
   place the next period's average takes), so both edges lie between known updates.
3. `attribution.py` turns the dated updates and the marks into joules per phase with an
   uncertainty: each update period is exact, the energy inside a period follows the model the
   evidence supports, and a 30 ms prefill gets its share of a 100 ms period.
4. `counter_vs_trace_gap_pct`: the instant-power trace integrated over the trial versus the
   counter. On A100/H100 the trace sees 25 ms of every 100 ms: a large gap is a finding.

Quality flags: short-window (< 10 update periods), zero-joules, below-idle (average power
under 95% of idle power), above-limit (power over 1.7 x power limit), driver-reload,
no-update-after-end (the edge could not be interpolated), missed-updates (the sampler saw fewer
counter updates than the sensor made: the attribution ran over longer periods), sampler-errors.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tokenwatt.energy.attribution import (
    INSTANT_WINDOW_S,
    CounterModel,
    Updates,
    attribute,
    trace_joules,
    update_counts,
)
from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.energy.sampler import Sampler
from tokenwatt.errors import MeterError

SHORT_WINDOW_PERIODS = 10
ABOVE_LIMIT_FACTOR = 1.7
BELOW_IDLE_FACTOR = 0.95


@dataclass
class PhaseEnergy:
    seconds: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)  # per channel key
    joules_err: dict[str, float] = field(default_factory=dict)  # one std. deviation, per key

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())

    @property
    def total_err_j(self) -> float:
        """Uncertainty of total_j: channels' uncertainties added in quadrature."""
        return math.sqrt(sum(v * v for v in self.joules_err.values()))


@dataclass
class Mark:
    phase: str  # the phase that starts here ("end" closes the last one)
    t: float
    joules: dict[str, float]


def read_all(meters: list[Meter]) -> dict[str, float]:
    joules: dict[str, float] = {}
    for m in meters:
        joules.update(m.read_joules())
    return joules


def reloads(meters: list[Meter]) -> int:
    return sum(getattr(m, "reloads", 0) for m in meters)


def instant_window(meter: Meter) -> float:
    """The meter's instant-power averaging window: measured where it could be, else 25 ms."""
    fn = getattr(meter, "instant_window_s", None)
    got = fn() if callable(fn) else None
    return got or INSTANT_WINDOW_S


# ---- the recorder -----------------------------------------------------------------------


class PhaseRecorder:
    """Reads every meter at each mark; `phases()` gives energy and time per phase.

    sampler: "auto" starts a `Sampler` at the first mark (and stops it in `phases()`): it
    dates the updates of slowly updating counters and records the power trace of every meter;
    a `Sampler` uses that one (started by the caller); None uses only the reads at the marks.
    align: wait at the first mark for a counter update (at most about one update period).
    changes_at_marks: the marks are where power changes (phase boundaries after a device
    synchronisation); False for windows whose edges need not be.
    """

    def __init__(self, meters: list[Meter], sampler: Sampler | str | None = "auto",
                 align: bool = True, interval_s: float = 0.02,
                 idle_power_w: float | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 driver: Any = None, changes_at_marks: bool = True) -> None:  # fmt: skip
        self.meters = meters
        self.marks: list[Mark] = []
        self._errors0 = 0  # the sampler's read errors before this window began
        self.align = align
        self.interval_s = interval_s
        self.idle_power_w = idle_power_w
        self.clock = clock
        self.driver = driver  # how an own sampler's loop runs (None: a thread; see sampler.py)
        self.changes_at_marks = changes_at_marks
        self._own_sampler = sampler == "auto"
        self.sampler: Sampler | None = None if isinstance(sampler, str) else sampler
        self._result: dict[str, PhaseEnergy] | None = None
        self._quality: dict[str, Any] = {}
        self._reloads0 = reloads(meters)
        self._started = False

    @property
    def channels(self) -> list[Channel]:
        return [c for m in self.meters for c in m.channels]

    def read(self) -> dict[str, float]:
        return read_all(self.meters)

    def mark(self, phase: str) -> None:
        if not self.marks:
            self.start()
        self.marks.append(Mark(phase, self.clock(), self.read()))

    def start(self) -> None:
        """Open the window (sampler, alignment) before any mark; marks may follow dated."""
        if not self._started:
            self._started = True
            self._begin()

    def mark_at(self, phase: str, t: float) -> None:
        """A boundary the engine dated itself, at `t` on this recorder's clock (after start())."""
        if self.sampler is None:
            raise RuntimeError("mark_at needs a sampler: call start() first")
        self.marks.append(Mark(phase, t, {}))

    def _begin(self) -> None:
        self._errors0 = sum(len(lane.errors) for lane in self.sampler.lanes) \
            if self.sampler is not None else 0  # fmt: skip
        if self._own_sampler and self.sampler is None and self.meters:
            # Continuous meters (RAPL, the estimate) get a sampler too: only for the power
            # trace; their phase energies still come from the reads at the marks.
            self.sampler = Sampler(self.meters, self.interval_s, clock=self.clock,
                                   driver=self.driver).start()  # fmt: skip
        if self.sampler is not None and self.align:
            self.sampler.wait_ticks_after(self.clock(), count=1)

    def phases(self) -> dict[str, PhaseEnergy]:
        if self._result is None:
            self._result = self._compute()
        return self._result

    def quality(self) -> dict[str, Any]:
        self.phases()
        return self._quality

    def trace(self) -> list[dict[str, Any]]:
        return self.sampler.trace() if self.sampler is not None else []

    def _compute(self) -> dict[str, PhaseEnergy]:
        if len(self.marks) < 2:
            return {}
        flags: list[str] = []
        dated = any(not m.joules for m in self.marks)
        if dated:
            self.marks.sort(key=lambda m: m.t)
        if self.sampler is not None:
            if dated:  # the continuous meters' trace must reach past the last dated mark
                self.sampler.driver.wait(self.sampler, lambda: self._traced_past(
                    self.marks[-1].t), self.clock() + 1.0)  # fmt: skip
            if not self.sampler.wait_ticks_after(self.marks[-1].t):
                flags.append("no-update-after-end")
                errors = [e for lane in self.sampler.lanes for e in lane.errors]
                if dated and len(errors) > self._errors0:  # failed in the window: no read at a
                    # mark would have failed in its place
                    if self._own_sampler:
                        self.sampler.stop()
                    raise MeterError(f"the meter failed before the window's end: {errors[-1]}")
            if self._own_sampler:
                self.sampler.stop()
            if dated:
                self._fill_dated_reads()
        out, self._quality = evaluate(self.meters, self.sampler, self.marks, flags,
                                      idle_power_w=self.idle_power_w,
                                      reloads0=self._reloads0,
                                      changes_at_marks=self.changes_at_marks)  # fmt: skip
        return out

    def _traced_past(self, t: float) -> bool:
        assert self.sampler is not None
        return all(lane.samples and lane.samples[-1].t > t for lane in self.sampler.lanes)

    def _fill_dated_reads(self) -> None:
        """Each dated mark's cumulative joules, interpolated linearly between the trace's
        reads (every sample_interval for continuous meters; a slowly updating counter's
        value here is replaced by the attribution over its dated updates)."""
        assert self.sampler is not None
        series: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for lane in self.sampler.lanes:
            samples = list(lane.samples)
            for key in samples[0].joules if samples else ():
                pts = [(s.t, s.joules[key]) for s in samples if key in s.joules]
                series[key] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
        for m in self.marks:
            if not m.joules:
                m.joules = {k: float(np.interp(m.t, ts, es)) for k, (ts, es) in series.items()}


def evaluate(
    meters: list[Meter],
    sampler: Sampler | None,
    marks: list[Mark],
    flags: list[str],
    idle_power_w: float | None = None,
    reloads0: int = 0,
    changes_at_marks: bool = True,
) -> tuple[dict[str, PhaseEnergy], dict[str, Any]]:
    """Energy per phase between `marks` and the window's quality, from the reads at the marks
    and, where the sampler dated a slowly updating counter's updates, from those."""  # fmt: skip
    out = from_marks(marks)
    info = _attribute(meters, sampler, marks, out, flags, changes_at_marks)
    quality = _assess(meters, sampler, out, flags, info, idle_power_w, reloads0)
    return out, quality


def from_marks(marks: list[Mark]) -> dict[str, PhaseEnergy]:
    out: dict[str, PhaseEnergy] = {}
    for a, b in zip(marks, marks[1:]):
        if a.phase == "end":
            continue  # the gap between repetitions belongs to no phase
        pe = out.setdefault(a.phase, PhaseEnergy())
        pe.seconds += b.t - a.t
        for key, j in b.joules.items():
            pe.joules[key] = pe.joules.get(key, 0.0) + (j - a.joules.get(key, j))
            pe.joules_err.setdefault(key, 0.0)
    return out


def _attribute(meters: list[Meter], sampler: Sampler | None, marks: list[Mark],
               out: dict[str, PhaseEnergy], flags: list[str],
               changes_at_marks: bool) -> dict[str, Any]:  # fmt: skip
    """Replace quantised mark deltas with counter-model energies where updates allow."""
    info: dict[str, Any] = {"gaps": [], "periods": [], "seen": 0, "expected": 0,
                            "windows": [], "rules": {}}  # fmt: skip
    if sampler is None:
        return info
    tm = [(m.t, m.phase) for m in marks]
    t0, t1 = tm[0][0], tm[-1][0]
    for meter in meters:
        period = meter.update_period_s()
        if period is None:
            continue
        lane_samples = sampler._lane(meter).between(t0, t1)
        window = instant_window(meter)
        for ch in meter.channels:
            u = Updates.from_samples(lane_samples, ch.key, period)
            if not u.covers(t0, t1):
                flags.append("no-update-after-end")
                continue
            slow = bool(getattr(meter, "slow_counter", False))
            got = attribute(u, tm, window, changes_at_marks=changes_at_marks,
                            unknown_shape=slow)  # fmt: skip
            add_dating_lag(got.err, u, tm, getattr(meter, "dating_lag_s", 0.0))
            for phase, j in got.joules.items():
                if phase in out:
                    out[phase].joules[ch.key] = float(j)
                    out[phase].joules_err[ch.key] = float(got.err.get(phase, 0.0))
            for rule, n in got.rules.items():
                info["rules"][rule] = info["rules"].get(rule, 0) + n
            seen, expected = update_counts(u, t0, t1)
            info["seen"] += seen
            info["expected"] += expected
            counter_j = sum(j for p, j in got.joules.items() if p != "end")
            trace_j = sum(trace_joules(u, a, b) for (a, p), (b, _) in zip(tm, tm[1:])
                          if p != "end")  # fmt: skip
            if counter_j > 0 and not np.isnan(u.p[1:]).all():
                info["gaps"].append(100.0 * (trace_j - counter_j) / counter_j)
            info["periods"].append(period)
            info["windows"].append(window)
            sel = (u.t >= t0) & (u.t <= t1 + period) & ~np.isnan(u.p)
            if sel.any():
                info["max_instant_w"] = max(info.get("max_instant_w", 0.0),
                                            float(np.max(u.p[sel])))  # fmt: skip
    if info["seen"] < info["expected"]:
        flags.append("missed-updates")
    return info


def add_dating_lag(err: dict[str, float], u: Updates, marks: list[tuple[float, str]],
                   lag_s: float) -> None:  # fmt: skip
    """Widen each phase's error for values published up to `lag_s` after they were sampled
    (a DCGM exporter publishes DCGM's last sample, taken up to an interval earlier; the page
    gives no time). The same unknown lag L moves every edge: a segment [a, b] then holds the
    energy of [a - L, b - L], off by L x (power at a - power at b); L uniform on [0, lag_s]
    gives an error of root-mean-square lag_s / sqrt(3) times that difference, where the power
    at each edge is its period's average give or take the period-to-period variation there."""
    if lag_s <= 0 or len(u.t) < 2:
        return
    model = CounterModel(u, marks, INSTANT_WINDOW_S)
    diff: dict[str, float] = {}
    spread: dict[str, float] = {}
    for (a, phase), (b, _) in zip(marks, marks[1:]):
        ja, jb = model.period_of(a), model.period_of(b)
        diff[phase] = diff.get(phase, 0.0) + (u.avg(ja) or 0.0) - (u.avg(jb) or 0.0)
        spread[phase] = spread.get(phase, 0.0) + model.power_sd(ja) ** 2 + model.power_sd(jb) ** 2
    for phase, d in diff.items():
        if phase in err:
            sd = math.sqrt(d * d + spread[phase])
            err[phase] = math.hypot(err[phase], lag_s * sd / math.sqrt(3))


def _assess(meters: list[Meter], sampler: Sampler | None, out: dict[str, PhaseEnergy],
            flags: list[str], info: dict[str, Any], idle_power_w: float | None,
            reloads0: int) -> dict[str, Any]:  # fmt: skip
    seconds = sum(p.seconds for p in out.values())
    joules = sum(p.total_j for p in out.values())
    period = max(info["periods"]) if info["periods"] else _max_period(meters)
    if period and seconds < SHORT_WINDOW_PERIODS * period:
        flags.append("short-window")
    if any(j <= 0 for p in out.values() for j in p.joules.values()) or joules <= 0:
        flags.append("zero-joules")
    avg_w = float(joules / seconds) if seconds > 0 else math.nan
    if idle_power_w and avg_w < BELOW_IDLE_FACTOR * idle_power_w:
        flags.append("below-idle")
    limit = _power_limit_w(meters)
    peak = max(avg_w, info.get("max_instant_w", 0.0))
    if limit and peak > ABOVE_LIMIT_FACTOR * limit:
        flags.append("above-limit")
    if reloads(meters) > reloads0:
        flags.append("driver-reload")
    if sampler is not None and any(lane.errors for lane in sampler.lanes):
        flags.append("sampler-errors")
    gaps = info["gaps"]
    return {
        "counter_vs_trace_gap_pct": float(np.mean(gaps)) if gaps else math.nan,
        "update_period_s": period,
        "instant_window_s": max(info["windows"]) if info["windows"] else None,
        "window_s": seconds,
        "avg_power_w": avg_w,
        "updates_seen": info["seen"] if info["periods"] else None,
        "updates_expected": info["expected"] if info["periods"] else None,
        "phase_j_err": {k: p.total_err_j for k, p in out.items()},
        "period_models": dict(sorted(info["rules"].items())),
        "attribution": "counter-updates+trace" if info["periods"] else "mark-reads",
        "flags": ";".join(sorted(set(flags))),
    }


def _max_period(meters: list[Meter]) -> float | None:
    periods = [p for m in meters if (p := m.update_period_s())]
    return max(periods) if periods else None


def _power_limit_w(meters: list[Meter]) -> float | None:
    limits = [getattr(m, "power_limit_w", None) for m in meters]
    limits = [x for x in limits if x]
    return sum(limits) if limits else None


# ---- idle baseline ----------------------------------------------------------------------


def measure_idle_power(meters: list[Meter], seconds: float,
                       sleep: Callable[[float], Any] = time.sleep) -> dict[str, float]:  # fmt: skip
    """Idle power per channel key (W), measured on the meters over `seconds` of nothing."""
    rec = PhaseRecorder(meters)
    rec.mark("idle")
    sleep(seconds)
    rec.mark("end")
    idle = rec.phases().get("idle")
    if idle is None or idle.seconds <= 0:
        return {}
    return {k: j / idle.seconds for k, j in idle.joules.items()}


def dynamic_joules(gross_j: float, idle_power_w: float, seconds: float) -> float:
    """Energy above the idle baseline: gross - idle power x time."""
    if idle_power_w is None or math.isnan(idle_power_w):
        return math.nan
    return gross_j - idle_power_w * seconds
