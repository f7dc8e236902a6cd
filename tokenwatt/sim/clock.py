"""A virtual clock: `sleep` advances time instantly, so simulated runs are fast and exact."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class VirtualClock:
    def __init__(self, start: float = 1000.0, call_cost_s: float = 0.0) -> None:
        self.t = start
        self.call_cost_s = call_cost_s  # each reading of the clock costs this much time

    def __call__(self) -> float:
        self.t += self.call_cost_s
        return self.t

    def wall(self) -> float:
        """Seconds since 1970 on this clock (for NVML's timestamps)."""
        return self.t + 1.7e9

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            self.t += seconds

    def advance_to(self, t: float) -> None:
        self.t = max(self.t, t)


class VirtualDriver:
    """Runs a `Sampler`'s own loop on a VirtualClock, without a thread (see energy/sampler.py).

    Sleeping advances virtual time at once; a wait steps the loop from one wake to the next
    until the condition holds or the deadline passes. Deterministic and fast.
    """

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock

    def start(self, sampler: Any) -> None:
        pass  # nothing runs until someone waits or advances time

    def stop(self, sampler: Any) -> None:
        pass

    def sleep(self, sampler: Any, seconds: float) -> None:
        self.clock.sleep(seconds)

    def wait(self, sampler: Any, done: Callable[[], bool], deadline: float) -> bool:
        while not done() and self.clock() < deadline and not sampler.stopping.is_set():
            sampler.run(until=min(sampler.next_lane().next_wake, deadline))
        return done()

    def advance(self, sampler: Any, t: float) -> None:
        """Run the sampler's loop up to virtual time t, then move the clock there."""
        sampler.run(until=t)
        self.clock.advance_to(t)
