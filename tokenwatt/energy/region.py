"""Measure one code region: `tokenwatt.measure`, the one-window shortcut on `Monitor`.

    import tokenwatt

    with tokenwatt.measure() as m:          # the NVIDIA boards NVML sees, else RAPL/estimate
        model.generate(**inputs)
    print(m.joules, m.joules_err, m.seconds, m.avg_power_w, m.labels)
    m.by_channel      # {"gpu0": J, ...}; m.by_device {"NVIDIA H100 ...": J}
    m.trace           # the sampled power trace (rows with t_s, channel, joules, power_w)
    m.quality         # flags, updates seen/expected, update period

    @tokenwatt.measure(device="cuda:0")
    def step(): ...
    step(); step.measurements[-1].joules

Each use opens a Monitor (meters are measured once per board per process, so that is a few
NVML calls), marks the region's edges after a device synchronisation and closes the monitor at
the end without waiting: the energy is computed on first access (waiting, if it has not come
yet, for the counter update after the end: at most about 100 ms on NVML). For many regions,
keep one `tokenwatt.Monitor` and open windows on it: that costs microseconds per window.
`align=True` waits (at most one update period) for a counter update before the region starts,
so its start edge needs no interpolation. Energies carry their scope and source; an estimate is
labelled measured=False.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from tokenwatt.energy.meters.base import Meter
from tokenwatt.energy.monitor import Measurement, Monitor

__all__ = ["Measurement", "measure"]


class measure:  # noqa: N801 - used like a function: `with tokenwatt.measure():`
    """Context manager and decorator measuring the energy of a code region."""

    def __init__(
        self,
        device: str = "auto",
        meter: str = "auto",
        gpus: list[str] | None = None,
        sample_interval_ms: float = 20.0,
        align: bool = False,
        cpu_tdp_w: float | None = None,
        meters: list[Meter] | None = None,
        monitor: Monitor | None = None,
    ) -> None:
        self.device = device
        self.meter = meter
        self.gpus = gpus
        self.sample_interval_ms = sample_interval_ms
        self.align = align
        self.cpu_tdp_w = cpu_tdp_w
        self._given = meters
        self._monitor = monitor
        self.measurements: list[Measurement] = []
        self._active: list[tuple[Monitor, str, Measurement]] = []  # re-entrant use

    def __enter__(self) -> Measurement:
        mon = self._monitor or Monitor(
            gpus=self.gpus, meter=self.meter, device=self.device,
            sample_interval_ms=self.sample_interval_ms, cpu_tdp_w=self.cpu_tdp_w,
            meters=self._given,
        )  # fmt: skip
        name = f"region-{id(self)}-{len(self._active)}"
        result = Measurement("region", mon.channels)
        try:
            if self.align:
                mon.sampler.wait_ticks_after(mon.clock(), count=1)
            mon.begin_window(name)
        except BaseException:
            if self._monitor is None:
                mon.close()
            raise
        self._active.append((mon, name, result))
        return result

    def __exit__(self, *exc: object) -> None:
        mon, name, result = self._active.pop()
        try:
            mon.end_window(name, into=result)
            self.measurements.append(result)
        finally:
            if self._monitor is None:
                mon.close()  # the sampler stops by itself once the end's update is in

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self:
                return fn(*args, **kwargs)

        wrapper.measurements = self.measurements  # type: ignore[attr-defined]
        return wrapper
