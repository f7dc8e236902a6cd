"""The background power trace: one cheap thread that reads every meter on a schedule.

Interval: `max(sample_interval_s, meter.update_period_s())` per meter. A meter whose counter
updates slowly (NVML: about every 100 ms) is sampled *tick-locked*: the thread sleeps until just
before the next expected update, then polls every millisecond until the counter changes. Each
update is therefore timed to about a millisecond, which is what lets `energy.py` interpolate a
window's edges between updates, while the thread sleeps (never spins) over 90% of the time and
holds the GIL only for a few microseconds per poll, so the decode it measures is not slowed.

Each sample records: when it was read (`t`), the start of the previous poll (`t_lo`: a counter
change happened in (t_lo, t]), cumulative joules per channel, instant power per channel, the
instant value's own timestamp when the meter gives one, and whether the counter changed (`tick`).
The loop is run by a *driver*: `ThreadDriver` (the default, what every real run uses) runs it
in a daemon thread and blocks waits on a condition; `tokenwatt.sim.clock.VirtualDriver` steps
the very same loop on a virtual clock, so tests and benchmarks exercise this code, not a copy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tokenwatt.energy.meters.base import Meter

TICK_MIN_PERIOD_S = 0.005  # counters faster than this are read like continuous ones (RAPL)
FAST_POLL_S = 0.001


@dataclass
class Sample:
    t: float
    t_lo: float
    joules: dict[str, float]
    power_w: dict[str, float] | None
    power_t: float | None
    tick: bool


class Lane:
    """The schedule and samples of one meter."""

    def __init__(self, meter: Meter, interval_s: float) -> None:
        self.meter = meter
        period = meter.update_period_s()
        self.period = period if period and period >= TICK_MIN_PERIOD_S else None
        self.interval = max(interval_s, self.period or 0.0)
        self.steps = max(1, round(self.interval / self.period)) if self.period else 1
        self.samples: list[Sample] = []
        self.next_wake = 0.0
        self.last_tick: float | None = None  # estimated time of the last counter update
        self._prev_t = 0.0
        self._prev_j: dict[str, float] | None = None
        self.errors: list[str] = []
        self._lost_since = -float("inf")

    @property
    def ticking(self) -> bool:
        return self.period is not None

    def poll(self, clock: Callable[[], float]) -> Sample | None:
        t0 = clock()
        try:
            joules = self.meter.read_joules()
        except Exception as e:  # one failed read must not kill the trace
            self.errors.append(str(e))
            self.next_wake = t0 + self.interval
            return None
        t1 = clock()
        tick = self._prev_j is not None and joules != self._prev_j
        first = self._prev_j is None
        t_lo = self._prev_t
        # A change seen after a long sleep happened at an unknown time: use it as the baseline
        # and catch the next update with fast polls, so every recorded update is timed.
        stale = self.ticking and tick and t0 - t_lo > 0.5 * self.period
        self._prev_t, self._prev_j = t0, joules
        if self.ticking and (stale or not (tick or first)):
            self._schedule_fast(t1)
            return None  # no news: the counter has not moved since the last poll
        power, power_t = self._power()
        s = Sample(t1, t_lo if tick else t0, joules, power, power_t, tick)
        self.samples.append(s)
        if tick:
            self.last_tick = tick_time(s)
        elif first and self.ticking:
            self._lost_since = t1
            self._schedule_fast(t1)  # catch the first update to the millisecond
            return s
        self._schedule(t1)
        return s

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
        if self.ticking and self.last_tick is not None:
            guard = min(0.004, 0.1 * self.period)
            wake = self.last_tick + self.steps * self.period - guard
            self.next_wake = max(wake, now + FAST_POLL_S)
        else:
            self.next_wake = now + self.interval

    def _schedule_fast(self, now: float) -> None:
        expected = self.last_tick is not None and (
            now - self.last_tick < (self.steps + 1.5) * self.period
        )
        if expected or now - self._lost_since < 2 * self.period:
            self.next_wake = now + FAST_POLL_S
        else:  # lost for a while (a stalled counter): back off instead of spinning
            self.next_wake = now + min(self.period / 4, 0.02)
        if expected:
            self._lost_since = now


def tick_time(s: Sample) -> float:
    """Best estimate of when the counter changed: the instant value's own timestamp when it
    falls inside the detection interval (t_lo, t], else the interval's midpoint."""
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
        if self._thread is not None:
            self._thread.join(timeout=2.0)
            self._thread = None

    def sleep(self, sampler: Sampler, seconds: float) -> None:
        sampler.stopping.wait(seconds)

    def wait(self, sampler: Sampler, done: Callable[[], bool], deadline: float) -> bool:
        with sampler.cond:
            while not done():
                left = deadline - sampler.clock()
                if left <= 0:
                    return False
                sampler.cond.wait(min(left, 0.05))
        return True


class Sampler:
    """Background sampler over `meters`; `start()`, `stop()`, `samples(meter)`."""

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

    @property
    def ticking(self) -> bool:
        return any(lane.ticking for lane in self.lanes)

    def start(self) -> Sampler:
        self.stopping.clear()
        self.poll_all()
        self.driver.start(self)
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.driver.stop(self)

    def poll_all(self) -> None:
        for lane in self.lanes:
            self._poll(lane)

    def _poll(self, lane: Lane) -> None:
        if lane.poll(self.clock) is not None:
            with self.cond:
                self.cond.notify_all()

    def next_lane(self) -> Lane:
        return min(self.lanes, key=lambda x: x.next_wake)

    def run(self, until: float | None = None) -> None:
        """The loop: sleep to the earliest wake, poll that lane. `until` bounds a driver's step."""
        while not self.stopping.is_set():
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

    def wait_ticks_after(self, t: float, count: int = 1, timeout_s: float | None = None) -> bool:
        """Block until every ticking meter has `count` counter updates known to lie after `t`."""
        lanes = [lane for lane in self.lanes if lane.ticking]
        if not lanes:
            return True
        longest = max(x.period * x.steps for x in lanes)
        timeout_s = timeout_s if timeout_s is not None else (count + 2) * longest + 0.1

        def done() -> bool:
            return all(
                sum(s.tick and s.t_lo >= t for s in x.samples[-count - 3 :]) >= count for x in lanes
            )

        return self.driver.wait(self, done, self.clock() + timeout_s)

    def trace(self) -> list[dict[str, Any]]:
        """Every sample as a flat row: t_s, channel, joules, power_w, tick."""
        rows = []
        for lane in self.lanes:
            for s in lane.samples:
                for key, j in s.joules.items():
                    p = (s.power_w or {}).get(key)
                    rows.append({"t_s": s.t, "channel": key, "joules": j, "power_w": p,
                                 "power_t_s": s.power_t, "tick": s.tick})  # fmt: skip
        return sorted(rows, key=lambda r: r["t_s"])
