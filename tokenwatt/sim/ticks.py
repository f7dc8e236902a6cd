"""When a simulated sensor publishes: a fixed period, or a period jittered at every update.

Real boards publish about every 100 ms, but not like a metronome: the gap between two updates
varies by a few milliseconds. `TickSchedule` reproduces either, seeded, so a benchmark knows
the exact update times (its ground truth) and a power profile can put its changes on them.
"""

from __future__ import annotations

import bisect
import random
import threading


class TickSchedule:
    """Update times phase_s + k * period_s, each gap jittered by U(-jitter_s, +jitter_s)."""

    def __init__(self, period_s: float, jitter_s: float = 0.0, phase_s: float = 0.0,
                 seed: int = 0) -> None:  # fmt: skip
        if not 0 <= jitter_s < period_s:
            raise ValueError("jitter_s must be in [0, period_s)")
        self.period_s, self.jitter_s, self.phase_s = period_s, jitter_s, phase_s
        self._rng = random.Random(seed)
        self._times = [phase_s - 2 * period_s]  # generated forward from here when jittered
        self._lock = threading.Lock()

    def last_at_or_before(self, t: float) -> float:
        """The last update at or before sim time t."""
        if not self.jitter_s:
            return self.phase_s + ((t - self.phase_s) // self.period_s) * self.period_s
        if t < self._times[0]:  # before the generated range: the nominal period backwards
            return self._times[0] - ((self._times[0] - t) // self.period_s + 1) * self.period_s
        self._extend(t)
        return self._times[bisect.bisect_right(self._times, t) - 1]

    def between(self, t0: float, t1: float) -> list[float]:
        """Every update in (t0, t1]."""
        out, t = [], self.last_at_or_before(t1)
        while t > t0:
            out.append(t)
            t = self.last_at_or_before(t - 1e-9)
        return out[::-1]

    def _extend(self, t: float) -> None:
        if self._times[-1] > t:
            return
        with self._lock:
            while self._times[-1] <= t:
                gap = self.period_s + self._rng.uniform(-self.jitter_s, self.jitter_s)
                self._times.append(self._times[-1] + gap)
