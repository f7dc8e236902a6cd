"""The Meter interface.

A meter exposes one or more *channels*. Each channel is a cumulative energy counter in
joules (like NVML's energy counter or RAPL's `energy_uj`) labelled with what it covers
(`scope`) and how it is obtained (`source`, `measured`). Window and phase energies are
differences of two reads, so every meter, measured or estimated, is used the same way and
the same code path runs against real and simulated hardware.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Channel:
    """One energy channel.

    key: unique within a run ("gpu0", "cpu-package-0", "dram-0", "cpu-estimate").
    scope: what the joules cover ("gpu-board", "cpu-package", "dram", "cpu-package+dram").
    source: how they are obtained ("nvml-energy-counter", "nvml-power-integrated", "rapl",
        "estimate-tdp-process-cpu").
    measured: False for anything estimated; estimates are never mixed silently with
        measurements.
    device_name: the hardware's own name ("NVIDIA H100 80GB HBM3", "AMD EPYC").
    """

    key: str
    scope: str
    source: str
    measured: bool
    device_name: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# A channel's source -> the method it stands for, in the words MLPerf's energy discussion uses
# (mlcommons/inference#2558: measurement_method); a simulated source has its real one's.
METHODS = {
    "nvml-energy-counter": "energy-counter",
    "nvml-power-integrated": "integrated-power",
    "rapl": "rapl-counter",
    "estimate-tdp-process-cpu": "tdp-estimate",
    "dcgm-energy-counter": "energy-counter",
    "dcgm-power-integrated": "integrated-power",
}


def labels(channels: Iterable[Channel]) -> dict[str, Any]:
    """The labels every energy figure carries: what it covers, how it was obtained (the source
    and its method), and whether every channel is a measurement (`+`-joined when several
    meters contribute)."""
    chans = list(channels)
    sources = sorted({c.source for c in chans})
    methods = {METHODS.get(s.removeprefix("simulated-"), s) for s in sources}
    return {
        "energy_source": "+".join(sources),
        "energy_scope": "+".join(sorted({c.scope for c in chans})),
        "measured": bool(chans) and all(c.measured for c in chans),
        "measurement_method": "+".join(sorted(methods)),
    }


@dataclass
class MeterInfo:
    """What a meter can do, for `tokenwatt meters` and run metadata."""

    name: str
    available: bool
    detail: dict[str, Any] = field(default_factory=dict)
    fix: str = ""


class Meter(ABC):
    """A set of cumulative energy channels.

    Subclasses implement `read_joules`; `read_power_w` where the hardware reports power.
    Reads may be called from the sampler thread and the main thread at once: implementations
    must be thread-safe.
    """

    name: str = "meter"

    @property
    @abstractmethod
    def channels(self) -> tuple[Channel, ...]:
        """The channels this meter reads, in a stable order."""

    @abstractmethod
    def read_joules(self) -> dict[str, float]:
        """Cumulative joules per channel key since the meter was opened (monotonic)."""

    def read_power_w(self) -> dict[str, float] | None:
        """Instantaneous power per channel key, or None if the hardware gives none."""
        return None

    def update_period_s(self) -> float | None:
        """How often the underlying counter changes, when known (measured, not assumed)."""
        return None

    def describe(self) -> dict[str, Any]:
        """Metadata recorded with every run (device names, TDP and its source, limits...)."""
        return {"meter": self.name, "channels": [c.as_dict() for c in self.channels]}

    def edge_state(self) -> dict[str, Any]:
        """State worth recording at window edges (temperature, clocks, power limit)."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release handles."""

    def __enter__(self) -> Meter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
