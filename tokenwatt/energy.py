"""Joules per phase from meter reads taken at phase marks.

Every meter exposes cumulative counters; a phase's energy is the difference of the reads at
its two marks, summed over the repetitions inside a trial.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tokenwatt.meters.base import Channel, Meter


@dataclass
class PhaseEnergy:
    seconds: float = 0.0
    joules: dict[str, float] = field(default_factory=dict)  # per channel key

    @property
    def total_j(self) -> float:
        return sum(self.joules.values())


@dataclass
class Mark:
    phase: str  # the phase that starts here ("end" closes the last one)
    t: float
    joules: dict[str, float]


class PhaseRecorder:
    """Reads every meter at each mark; `phases()` sums energy and time per phase."""

    def __init__(self, meters: list[Meter]) -> None:
        self.meters = meters
        self.marks: list[Mark] = []

    @property
    def channels(self) -> list[Channel]:
        return [c for m in self.meters for c in m.channels]

    def read(self) -> dict[str, float]:
        joules: dict[str, float] = {}
        for m in self.meters:
            joules.update(m.read_joules())
        return joules

    def mark(self, phase: str) -> None:
        t = time.perf_counter()
        self.marks.append(Mark(phase, t, self.read()))

    def phases(self) -> dict[str, PhaseEnergy]:
        out: dict[str, PhaseEnergy] = {}
        for a, b in zip(self.marks, self.marks[1:]):
            if a.phase == "end":
                continue  # the gap between repetitions belongs to no phase
            pe = out.setdefault(a.phase, PhaseEnergy())
            pe.seconds += b.t - a.t
            for key, j in b.joules.items():
                pe.joules[key] = pe.joules.get(key, 0.0) + (j - a.joules.get(key, j))
        return out
