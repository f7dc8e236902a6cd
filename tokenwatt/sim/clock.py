"""A virtual clock: `sleep` advances time instantly, so simulated runs are fast and exact."""

from __future__ import annotations


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
