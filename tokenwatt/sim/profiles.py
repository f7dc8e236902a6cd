"""Power profiles with exact energy integrals: the ground truth the simulated sensors read.

Every profile is piecewise constant (steady, steps, spikes, prefill bursts are all of that
shape), so the energy over any interval is exact to float precision, with no integration error
to blur the comparison between a meter and the truth. Time is in seconds since the profile's
origin; before 0 and after the last breakpoint the first and last levels continue.
"""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field


@dataclass
class PiecewiseProfile:
    """Power `watts[i]` on [times[i], times[i+1]); times[0] is 0."""

    times: list[float]
    watts: list[float]
    name: str = "custom"
    # Phase labels per segment (prefill/decode/gap) for attribution ground truth.
    labels: list[str] | None = None
    _cum: list[float] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not self.times or self.times[0] != 0.0 or len(self.times) != len(self.watts):
            raise ValueError("times must start at 0 and match watts in length")
        self._cum = [0.0]
        for i in range(1, len(self.times)):
            self._cum.append(
                self._cum[-1] + self.watts[i - 1] * (self.times[i] - self.times[i - 1])
            )

    def power(self, t: float) -> float:
        i = max(bisect.bisect_right(self.times, t) - 1, 0)
        return self.watts[i]

    def cumulative(self, t: float) -> float:
        """Energy in J from 0 to t (negative t counts backwards at the first level)."""
        if t <= 0:
            return self.watts[0] * t
        i = bisect.bisect_right(self.times, t) - 1
        return self._cum[i] + self.watts[i] * (t - self.times[i])

    def energy(self, t0: float, t1: float) -> float:
        return self.cumulative(t1) - self.cumulative(t0)


def constant(watts: float) -> PiecewiseProfile:
    return PiecewiseProfile([0.0], [float(watts)], name="steady")


def steady(watts: float = 400.0, noise_w: float = 15.0, seconds: float = 120.0,
           seed: int = 0) -> PiecewiseProfile:  # fmt: skip
    """A decode-like plateau with small 5 ms-scale fluctuations, as a real board shows."""
    rng = random.Random(seed)
    n = int(seconds / 0.005)
    times = [i * 0.005 for i in range(n)]
    return PiecewiseProfile(times, [watts + rng.uniform(-noise_w, noise_w) for _ in times],
                            name="steady")  # fmt: skip


def steps(levels: tuple[float, ...] = (120.0, 450.0, 300.0, 650.0), seconds: float = 120.0,
          hold: tuple[float, float] = (0.05, 1.5), seed: int = 0) -> PiecewiseProfile:  # fmt: skip
    """Jumps between levels held for random durations, edges anywhere in a sensor period."""
    rng = random.Random(seed)
    times, watts, t = [], [], 0.0
    while t < seconds:
        times.append(t)
        watts.append(rng.choice(levels))
        t += rng.uniform(*hold)
    return PiecewiseProfile(times, watts, name="steps")


def spikes(base_w: float = 300.0, spike_w: float = 650.0, seconds: float = 120.0,
           width: tuple[float, float] = (0.003, 0.02), rate_hz: float = 8.0,
           seed: int = 0) -> PiecewiseProfile:  # fmt: skip
    """Short spikes (3-20 ms, shorter than the 25 ms averaging window) on a base level."""
    rng = random.Random(seed)
    times, watts, t = [0.0], [base_w], 0.0
    while True:
        t += rng.expovariate(rate_hz)
        w = rng.uniform(*width)
        if t + w >= seconds:
            break
        times += [t, t + w]
        watts += [spike_w, base_w]
        t += w
    return PiecewiseProfile(times, watts, name="spikes")


def bursts(prefill_w: float = 620.0, decode_w: float = 380.0, gap_w: float = 150.0,
           prefill_s: tuple[float, float] = (0.01, 0.08),
           decode_s: tuple[float, float] = (0.4, 1.2), gap_s: tuple[float, float] = (0.0, 0.01),
           seconds: float = 120.0, seed: int = 0) -> PiecewiseProfile:  # fmt: skip
    """Generation-like: a short prefill burst, a long decode plateau, a tiny gap; labelled."""
    rng = random.Random(seed)
    times, watts, labels, t = [], [], [], 0.0
    while t < seconds:
        for lab, w, span in (("prefill", prefill_w, prefill_s), ("decode", decode_w, decode_s),
                             ("gap", gap_w, gap_s)):  # fmt: skip
            d = rng.uniform(*span)
            if d <= 0:
                continue
            times.append(t)
            watts.append(w * rng.uniform(0.97, 1.03))
            labels.append(lab)
            t += d
    return PiecewiseProfile(times, watts, name="bursts", labels=labels)


def phases(ticks: list[float] | None = None, offset_s: float = 0.0,
           levels: tuple[float, ...] = (150.0, 420.0, 610.0, 300.0),
           hold: tuple[int, int] = (1, 8), seconds: float = 120.0, period_s: float = 0.1,
           seed: int = 0) -> PiecewiseProfile:  # fmt: skip
    """Levels held for whole update periods: every change falls `offset_s` after an update.

    `ticks` are the sensor's update times (sim time; `SimGPU.ticks`), so the changes follow a
    jittered sensor too; without them, the nominal grid k * period_s. offset_s=0 puts every
    change on an update (the case where "continue the previous period's power" is wrong);
    offset_s=period/2 puts them all between updates.
    """
    rng = random.Random(seed)
    grid = ticks if ticks is not None else [k * period_s for k in range(int(seconds / period_s))]
    grid = [t + offset_s for t in grid if 0.0 < t + offset_s < seconds]
    times, watts, i = [0.0], [rng.choice(levels)], 0
    while True:
        i += rng.randint(*hold)
        if i >= len(grid):
            break
        times.append(grid[i])
        watts.append(rng.choice([x for x in levels if x != watts[-1]]))
    name = "phases-on-ticks" if offset_s == 0 else "phases-off-ticks"
    return PiecewiseProfile(times, watts, name=name)


def with_noise(profile: PiecewiseProfile, noise_w: float = 10.0, block_s: float = 0.005,
               seed: int = 0, seconds: float | None = None) -> PiecewiseProfile:  # fmt: skip
    """The profile plus uniform noise of +-noise_w held for block_s: a real board's ripple
    (until `seconds`, else a second past the profile's last change)."""
    rng = random.Random(seed)
    end = max(profile.times[-1] + 1.0, seconds or 0.0)
    grid = sorted(set(profile.times) | {i * block_s for i in range(int(end / block_s) + 1)})
    watts = [profile.power(t) + rng.uniform(-noise_w, noise_w) for t in grid]
    return PiecewiseProfile(grid, watts, name=f"{profile.name}+noise",
                            labels=None)  # fmt: skip


PROFILES = {"steady": steady, "steps": steps, "spikes": spikes, "bursts": bursts,
            "phases": phases}  # fmt: skip


class LiveProfile(PiecewiseProfile):
    """A profile the running code drives: `switch(t, watts)` changes the power from sim time t
    on, as a GPU's power follows the work it is given (a benchmark switches at each phase
    mark). `ripple` (zero-mean, e.g. `with_noise(constant(0))`) is added on top. Changes are
    appended in time order and never before a time a sensor has already published."""

    def __init__(self, watts: float, ripple: PiecewiseProfile | None = None) -> None:
        super().__init__([0.0], [float(watts)], name="live")
        self.ripple = ripple

    def switch(self, t: float, watts: float) -> None:
        t = max(t, self.times[-1])
        cum = self._cum[-1] + self.watts[-1] * (t - self.times[-1])
        # cumulative values and levels first: a reader in another thread bisects on times
        self._cum.append(cum)
        self.watts.append(float(watts))
        self.times.append(t)

    def power(self, t: float) -> float:
        return super().power(t) + (self.ripple.power(t) if self.ripple else 0.0)

    def cumulative(self, t: float) -> float:
        return super().cumulative(t) + (self.ripple.cumulative(t) if self.ripple else 0.0)
