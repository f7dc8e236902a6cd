"""Measure any code region with tokenwatt's meters.

    import tokenwatt

    with tokenwatt.measure() as m:          # device="auto": the GPU if torch sees one
        model.generate(**inputs)
    print(m.joules, m.seconds, m.avg_power_w, m.labels)
    m.by_channel      # {"gpu0": J, ...}; m.by_device {"NVIDIA H100 ...": J}
    m.trace           # the sampled power trace (rows with t_s, channel, joules, power_w)
    m.quality         # flags, counter_vs_trace_gap_pct, update period

    @tokenwatt.measure(device="cuda:0")
    def step(): ...
    step(); step.measurements[-1].joules

The device is synchronised at both edges, the region starts right after a counter update
(at most about 100 ms of waiting on NVML before the region; `align=False` to skip) and its end
is interpolated between updates (about 200 ms of waiting after it), exactly as in
`tokenwatt run`. Energies carry their scope and source; an
estimate is labelled measured=False.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenwatt._util.devices import resolve_device, synchronize
from tokenwatt.energy.meters.base import Channel, Meter, labels


@dataclass
class Measurement:
    seconds: float = math.nan
    by_channel: dict[str, float] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)
    quality: dict[str, Any] = field(default_factory=dict)
    trace: list[dict[str, Any]] = field(default_factory=list)
    meters: list[dict[str, Any]] = field(default_factory=list)

    @property
    def joules(self) -> float:
        return sum(self.by_channel.values()) if self.by_channel else math.nan

    @property
    def avg_power_w(self) -> float:
        return self.joules / self.seconds if self.seconds and self.seconds > 0 else math.nan

    @property
    def by_device(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.channels:
            name = f"{c.device_name or c.key} ({c.scope})"
            out[name] = out.get(name, 0.0) + self.by_channel.get(c.key, 0.0)
        return out

    @property
    def labels(self) -> dict[str, Any]:
        got = labels(self.channels)
        return {"scope": got["energy_scope"], "source": got["energy_source"],
                "measured": got["measured"]}  # fmt: skip


class measure:  # noqa: N801 - used like a function: `with tokenwatt.measure():`
    """Context manager and decorator measuring the energy of a code region."""

    def __init__(
        self,
        device: str = "auto",
        meter: str = "auto",
        gpus: list[str] | None = None,
        sample_interval_ms: float = 20.0,
        align: bool = True,
        cpu_tdp_w: float | None = None,
        meters: list[Meter] | None = None,
    ) -> None:
        self.device = device
        self.meter = meter
        self.gpus = gpus
        self.interval_s = sample_interval_ms / 1000.0
        self.align = align
        self.cpu_tdp_w = cpu_tdp_w
        self._given = meters
        self.measurements: list[Measurement] = []

    def __enter__(self) -> Measurement:
        from tokenwatt.energy.recorder import PhaseRecorder

        self._device = resolve_device(self.device, import_torch=False)
        self._meters = self._given or self._open()
        self._result = Measurement(channels=[c for m in self._meters for c in m.channels])
        self._rec = PhaseRecorder(self._meters, align=self.align, interval_s=self.interval_s)
        synchronize(self._device)
        self._rec.mark("region")
        return self._result

    def _open(self) -> list[Meter]:
        from tokenwatt.energy.meters.select import open_meters

        return open_meters(self.meter, self._device, gpus=self.gpus, cpu_tdp_w=self.cpu_tdp_w)

    def __exit__(self, *exc: object) -> None:
        try:
            synchronize(self._device)
            self._rec.mark("end")
            region = self._rec.phases().get("region")
            m = self._result
            if region is not None:
                m.seconds, m.by_channel = (
                    region.seconds,
                    {k: float(v) for k, v in region.joules.items()},
                )
            m.quality = self._rec.quality()
            m.trace = self._rec.trace()
            m.meters = [x.describe() for x in self._meters]
            self.measurements.append(m)
        finally:
            if self._given is None:
                for x in self._meters:
                    x.close()

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        wrapper.measurements = self.measurements  # type: ignore[attr-defined]
        return wrapper
