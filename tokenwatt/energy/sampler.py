"""The background power trace: one cheap thread that reads every meter on a schedule.

Interval: `max(sample_interval_s, meter.update_period_s())` per meter. A meter whose counter
updates slowly (NVML: about every 100 ms) is sampled *tick-locked*: the thread sleeps until a
margin before the next expected update, then polls every millisecond until the counter changes.

Every counter change is kept and dated, never discarded. A thread woken while the measured
code runs Python gets the GIL only after the switch interval (`sys.getswitchinterval()`, 5 ms),
so the margin is larger than that; and a change seen late is still dated, best first:
1. by the instant-power field's own timestamp (NVML publishes the counter and the field at the
   same update), which is exact however late the poll ran; a lane with the field therefore
   reads just after each update is due and every 2 ms until it comes (a few reads per
   update, not a margin of 1 ms polls), and stops trusting the timestamp if it falls outside
   the polls that saw the change;
2. by the poll interval that saw it change, when that interval is short;
3. by the phase-locked schedule (the last dated update plus whole periods);
4. else the middle of the poll interval.
A change that covers more than one sensor period (the poll came after two updates) is kept as
one longer period and counted (`Sample.updates`), so a window knows how many updates it saw
and how many the sensor made (`update_counts` in attribution.py).

Each sample records: when it was read (`t`), the start of the previous poll (`t_lo`: a counter
change happened in (t_lo, t]), cumulative joules per channel, instant power per channel, the
instant value's own timestamp when the meter gives one, whether the counter changed (`tick`),
and for a change its date (`t_tick`) and how it was dated. The loop is run by a *driver*:
`ThreadDriver` (the default, what every real run uses) runs it in a daemon thread and blocks
waits on a condition; `tokenwatt.sim.clock.VirtualDriver` steps the very same loop on a virtual
clock, so tests and benchmarks exercise this code, not a copy.
"""

from __future__ import annotations

import bisect
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenwatt.energy.meters.base import Meter

TICK_MIN_PERIOD_S = 0.005  # counters faster than this are read like continuous ones (RAPL)
FAST_POLL_S = 0.001
WAKE_MARGIN_S = 0.002  # woken this much before (switch interval + period jitter) the update
STAMPED_LAG_S = 0.001  # a timestamped lane reads this long after the update is due...
STAMPED_POLL_S = 0.002  # ...then every 2 ms until it comes: its timestamp dates it anyway
PRUNE_EVERY = 256  # samples appended between two prunings of what no window needs


@dataclass
class Sample:
    t: float
    t_lo: float
    joules: dict[str, float]
    power_w: dict[str, float] | None
    power_t: float | None
    tick: bool
    t_tick: float | None = None  # when the counter changed (or, on a first read, last changed)
    dated_by: str = ""  # "timestamp" | "poll" | "phase-lock" | "midpoint"
    updates: int = 1  # sensor updates this change covers (> 1: the ones between were missed)
    seen_cum: int = 0  # changes this lane dated so far, this one included
    updates_cum: int = 0  # sensor updates they covered


class Lane:
    """The schedule and samples of one meter."""

    def __init__(self, meter: Meter, interval_s: float) -> None:
        self.meter = meter
        period = meter.update_period_s()
        self.period = period if period and period >= TICK_MIN_PERIOD_S else None
        self.interval = max(interval_s, self.period or 0.0)
        self.steps = max(1, round(self.interval / self.period)) if self.period else 1
        self.stamped = hasattr(meter, "read_power_sample") and self._has_instant()
        self.trust_stamp = True
        self._stamp_checks = self._stamp_misses = 0
        self.samples: list[Sample] = []
        self.next_wake = 0.0
        self.last_tick: float | None = None  # date of the last counter update
        self.expected: float | None = None  # when the next update is due
        self._prev_t = 0.0
        self._prev_j: dict[str, float] | None = None
        self._gaps: list[float] = []  # recent dated gaps between single updates
        self.errors: list[str] = []
        self._appended = 0
        self._last_dated: Sample | None = None
        self.seen_total = 0  # dated changes so far (kept on each sample: counts survive pruning)
        self.updates_total = 0
        self._late: deque[float] = deque(maxlen=16)  # recent wake-up lateness
        self._spacing: deque[float] = deque(maxlen=16)  # recent gaps between fast polls
        self._fast_since: float | None = None

    def _has_instant(self) -> bool:
        return bool(getattr(self.meter, "has_instant", True))

    @property
    def ticking(self) -> bool:
        return self.period is not None

    def guard(self) -> float:
        """How long before an expected update to wake: more than a GIL switch interval, and
        more than this lane's own recent wake-up lateness plus the spacing of its fast polls
        (a thread woken while the measured code runs Python waits a switch interval for the
        GIL at every wake), plus three times the jitter seen between updates; at most half a
        period."""
        jitter = 0.0
        if len(self._gaps) >= 4:
            med = sorted(self._gaps)[len(self._gaps) // 2]
            jitter = 1.5 * sorted(abs(g - med) for g in self._gaps)[len(self._gaps) // 2]
        late = max(self._late, default=0.0) + max(self._spacing, default=FAST_POLL_S)
        margin = max(sys.getswitchinterval(), late) + WAKE_MARGIN_S + 3 * jitter
        return min(margin, 0.5 * self.period) if self.period else 0.0

    def poll(self, clock: Callable[[], float]) -> Sample | None:
        t0 = clock()
        if self._fast_since is not None:  # how far apart fast polls really are
            self._spacing.append(t0 - self._fast_since)
        self._late.append(max(t0 - self.next_wake, 0.0))
        try:
            joules = self.meter.read_joules()
        except Exception as e:  # one failed read must not kill the trace
            self.errors.append(str(e))
            self.next_wake = t0 + (self.period or self.interval) / 4
            return None
        t1 = clock()
        first = self._prev_j is None
        tick = not first and joules != self._prev_j
        t_lo = self._prev_t
        self._prev_t, self._prev_j = t0, joules
        if self.ticking and not (tick or first):
            self._schedule_fast(t1)
            self._fast_since = t0
            return None  # no news: the counter has not moved since the last poll
        self._fast_since = None
        power, power_t = self._power()
        s = Sample(t1, t_lo if tick else t0, joules, power, power_t, tick)
        if self.ticking:
            self._date(s, first)
            self._note(s)
        self._append(s)
        self._schedule(t1)
        return s

    def _date(self, s: Sample, first: bool) -> None:
        """When the counter changed: never discard a change that can be dated."""
        p, prev = self.period or 0.0, self.last_tick
        stamp = s.power_t
        fresh = (
            self.trust_stamp
            and stamp is not None
            and stamp <= s.t + 1e-4
            and (prev is None or stamp > prev + 0.3 * p)
        )
        if fresh and not first and s.t - s.t_lo < 0.2 * p:
            self._check_stamp(stamp, s)
        if first:  # the value read is that of the last update; only a timestamp dates it
            if fresh and stamp > s.t - 1.5 * p:
                s.t_tick, s.dated_by = stamp, "timestamp"
                self.last_tick = stamp
            return
        if fresh:
            t, how = stamp, "timestamp"
        elif s.t - s.t_lo <= 2 * sys.getswitchinterval() + WAKE_MARGIN_S:
            t, how = 0.5 * (s.t_lo + s.t), "poll"
        elif prev is not None and (locked := _locked(prev, p, s.t)) > s.t_lo:
            t, how = locked, "phase-lock"
        else:
            t, how = 0.5 * (s.t_lo + s.t), "midpoint"
        updates = max(1, round((t - prev) / p)) if prev is not None else 1
        if prev is not None and updates == 1 and how in ("timestamp", "poll"):
            self._gaps = [*self._gaps[-15:], t - prev]
        s.t_tick, s.dated_by, s.updates = t, how, updates
        self.last_tick = t
        self.seen_total += 1
        self.updates_total += updates

    def _check_stamp(self, stamp: float, s: Sample) -> None:
        """A timestamp outside the polls that saw the change does not date the counter (a
        driver that stamps the field at another moment): after a few, stop using it."""
        self._stamp_checks += 1
        if not s.t_lo - 0.002 <= stamp <= s.t + 0.001:
            self._stamp_misses += 1
        if self._stamp_misses >= 3 and self._stamp_misses > 0.2 * self._stamp_checks:
            self.trust_stamp = False

    def _note(self, s: Sample) -> None:
        """Give the meter each whole dated period (its instant window is estimated from them)."""
        hook = getattr(self.meter, "note_update", None)
        prev, self._last_dated = self._last_dated, s if s.t_tick is not None else None
        if hook is None or prev is None or not s.tick or s.updates != 1 or not s.power_w:
            return
        key = self.meter.channels[0].key
        if key in s.power_w and key in prev.joules and prev.t_tick is not None:
            hook(s.joules[key] - prev.joules[key], s.t_tick - prev.t_tick, s.power_w[key])

    def _append(self, s: Sample) -> None:
        s.seen_cum, s.updates_cum = self.seen_total, self.updates_total
        self.samples.append(s)
        self._appended += 1

    def prune(self, keep_from: float, pinned: int = 0) -> None:
        """Drop samples no window needs: those read before `keep_from` but the first `pinned`
        (so a window from the very start can still be read) and two more (the anchor)."""
        self._appended = 0
        i = bisect.bisect_left(self.samples, keep_from, key=lambda x: x.t) - 2
        if i > pinned:
            del self.samples[pinned:i]

    def between(self, t0: float, t1: float, margin: int = 8) -> list[Sample]:
        """The samples read in [t0, t1] and `margin` more on either side."""
        s = self.samples[:]  # a copy: the sampler thread appends while we read
        lo = max(bisect.bisect_left(s, t0, key=lambda x: x.t) - margin, 0)
        hi = bisect.bisect_right(s, t1, key=lambda x: x.t) + margin
        return s[lo:hi]

    def _power(self) -> tuple[dict[str, float] | None, float | None]:
        read_sample = getattr(self.meter, "read_power_sample", None)
        try:
            if read_sample is not None:
                got = read_sample()
                if got is None:
                    return None, None
                return {self.meter.channels[0].key: got[1]}, got[0]
            return self.meter.read_power_w(), None
        except Exception as e:
            self.errors.append(str(e))
            return None, None

    def _schedule(self, now: float) -> None:
        if not self.ticking:
            self.next_wake = now + self.interval
        elif self.last_tick is None:  # not yet locked: catch the first change to the ms
            self.next_wake = now + FAST_POLL_S
        else:
            self.expected = self.last_tick + self.steps * self.period
            # skipping updates on purpose (interval > period): read just after the one due,
            # since the counter moves at every update before it
            if self.steps > 1:
                lead = -2 * FAST_POLL_S
            elif self.stamped and self.trust_stamp:
                lead = -STAMPED_LAG_S
            else:
                lead = self.guard()
            self.next_wake = max(self.expected - lead, now + FAST_POLL_S)

    def _schedule_fast(self, now: float) -> None:
        late = self.expected is not None and now > self.expected + 1.5 * self.period
        stamped = self.stamped and self.trust_stamp and self.last_tick is not None
        fast = STAMPED_POLL_S if stamped else FAST_POLL_S
        # a counter that stalls (a board at 0 W, a hung driver) is polled slower, not spun on
        self.next_wake = now + (min(self.period / 4, 0.02) if late else fast)


def _locked(prev: float, period: float, t: float) -> float:
    """The last update the schedule prev + k * period puts at or before t, allowing it to come
    a tenth of a period early (the schedule drifts; the change was seen by t)."""
    k = max(int((t - prev) / period + 0.1), 1)
    return min(prev + k * period, t)


def tick_time(s: Sample) -> float:
    """When the counter changed: the date the lane gave it, else (an old sample, a first read
    without timestamp) the instant value's timestamp inside (t_lo, t], else the midpoint."""
    if s.t_tick is not None:
        return s.t_tick
    if s.power_t is not None and s.t_lo - 1e-4 <= s.power_t <= s.t + 1e-4:
        return s.power_t
    return 0.5 * (s.t_lo + s.t)


class ThreadDriver:
    """Runs a sampler's loop in a daemon thread; waits block on the sampler's condition."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None

    def start(self, sampler: Sampler) -> None:
        self._thread = threading.Thread(target=sampler.run, name="tokenwatt-sampler", daemon=True)
        self._thread.start()

    def stop(self, sampler: Sampler) -> None:
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=2.0)

    def sleep(self, sampler: Sampler, seconds: float) -> None:
        if seconds < 0.005:
            time.sleep(seconds)  # short: cheaper than a condition, and stop() waits it out
        else:
            sampler.stopping.wait(seconds)

    def wait(self, sampler: Sampler, done: Callable[[], bool], deadline: float) -> bool:
        with sampler.cond:
            while not done():
                left = deadline - sampler.clock()
                if left <= 0 or not sampler.running:
                    return done()
                sampler.cond.wait(min(left, 0.05))
        return True

    @property
    def native_id(self) -> int | None:
        return self._thread.native_id if self._thread is not None else None


class Sampler:
    """Background sampler over `meters`; `start()`, `stop()`, `samples(meter)`.

    `keep_from`: samples read before this time may be dropped (a long-lived Monitor gives a
    function: the start of the oldest window still needing them); None keeps everything.
    `until_done`: a predicate the loop checks after each poll; once it holds the loop ends by
    itself (a closing Monitor stops once every ended window has its update after the end).
    """

    def __init__(
        self,
        meters: list[Meter],
        interval_s: float = 0.02,
        clock: Callable[[], float] = time.perf_counter,
        driver: Any = None,
    ) -> None:
        self.lanes = [Lane(m, interval_s) for m in meters]
        self.clock = clock
        self.driver = driver or ThreadDriver()
        self.stopping = threading.Event()
        self.cond = threading.Condition()
        self.keep_from: float | Callable[[], float | None] | None = None
        self.pinned = 0  # first samples per lane never pruned
        self.until_done: Callable[[], bool] | None = None
        self.on_exit: Callable[[], None] | None = None
        self.running = False

    @property
    def ticking(self) -> bool:
        return any(lane.ticking for lane in self.lanes)

    def start(self) -> Sampler:
        self.stopping.clear()
        self.running = True
        self.poll_all()
        self.driver.start(self)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.driver.stop(self)
        self._exit()

    def _exit(self) -> None:
        with self.cond:
            was, self.running = self.running, False
            self.cond.notify_all()
        if was and self.on_exit is not None:
            self.on_exit()

    def poll_all(self) -> None:
        for lane in self.lanes:
            self._poll(lane)

    def _poll(self, lane: Lane) -> None:
        s = lane.poll(self.clock)
        if s is not None and (s.tick or not lane.ticking):
            with self.cond:
                self.cond.notify_all()
        if lane._appended >= PRUNE_EVERY and self.keep_from is not None:
            keep = self.keep_from() if callable(self.keep_from) else self.keep_from
            if keep is not None:
                lane.prune(keep, self.pinned)

    def next_lane(self) -> Lane:
        return min(self.lanes, key=lambda x: x.next_wake)

    def run(self, until: float | None = None) -> None:
        """The loop: sleep to the earliest wake, poll that lane. `until` bounds a driver's step."""
        while not self.stopping.is_set():
            if self.until_done is not None and self.until_done():
                self.stopping.set()
                self._exit()
                return
            lane = self.next_lane()
            if until is not None and lane.next_wake > until:
                return
            delay = lane.next_wake - self.clock()
            if delay > 0:
                self.driver.sleep(self, delay)
                if self.stopping.is_set():
                    return
            self._poll(lane)

    def samples(self, meter: Meter) -> list[Sample]:
        return list(self._lane(meter).samples)

    def _lane(self, meter: Meter) -> Lane:
        return next(lane for lane in self.lanes if lane.meter is meter)

    def updates_needed(self, lane: Lane) -> int:
        """Updates after a window's end its edge needs: one where the instant field gives the
        end period's last power, else two (the next period's average stands in for it)."""
        return 1 if lane.stamped else 2

    def has_ticks_after(self, t: float, count: int | None = None) -> bool:
        for lane in self.lanes:
            if not lane.ticking:
                continue
            need = count or self.updates_needed(lane)
            got, samples = 0, lane.samples
            for s in reversed(samples[-need - 4 :]):
                if s.tick and tick_time(s) > t:
                    got += 1
            if got < need:
                return False
        return True

    def wait_ticks_after(self, t: float, count: int | None = None,
                         timeout_s: float | None = None) -> bool:  # fmt: skip
        """Block until every ticking meter has the updates after `t` a window edge needs
        (`count`, else `updates_needed`); False if they did not come in time."""
        lanes = [lane for lane in self.lanes if lane.ticking]
        if not lanes:
            return True
        longest = max(x.period * x.steps for x in lanes)
        need = count or max(self.updates_needed(x) for x in lanes)
        timeout_s = timeout_s if timeout_s is not None else (need + 2) * longest + 0.1
        return self.driver.wait(self, lambda: self.has_ticks_after(t, count),
                                self.clock() + timeout_s)  # fmt: skip

    def trace(self, t0: float = -float("inf"), t1: float = float("inf")) -> list[dict[str, Any]]:
        """Every sample (read in [t0, t1]) as a flat row: t_s, channel, joules, power_w, tick."""
        rows = []
        for lane in self.lanes:
            for s in lane.samples[:]:
                if not t0 <= s.t <= t1:
                    continue
                for key, j in s.joules.items():
                    p = (s.power_w or {}).get(key)
                    rows.append({"t_s": s.t, "channel": key, "joules": j, "power_w": p,
                                 "power_t_s": s.power_t, "tick": s.tick})  # fmt: skip
        return sorted(rows, key=lambda r: r["t_s"])
