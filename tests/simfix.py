"""Shared helpers for tests on simulated hardware: a virtual-clock NVML board and a driver."""

from __future__ import annotations

from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.energy.meters.nvml import NvmlMeter
from tokenwatt.energy.sampler import Sampler
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.clock import VirtualClock, VirtualDriver


def virtual_board(power=300.0, gpus=1, **kw):
    """(clock, meters) for `gpus` simulated boards on a virtual clock; NVML initialised."""
    clock = VirtualClock()
    sim.configure(gpus, power, clock=clock, **kw)
    meters = [NvmlMeter(i, nvml=sim, clock=clock, sleep=clock.sleep) for i in range(gpus)]
    return clock, meters


def virtual_sampler(meters, clock, interval_s=0.02):
    return Sampler(meters, interval_s, clock=clock, driver=VirtualDriver(clock))


def advance(sampler, clock, t):
    """Run the sampler's loop on simulated time up to t."""
    sampler.driver.advance(sampler, t)


class Continuous(Meter):
    """A RAPL-like meter at 50 W on a clock: its counter changes at every read, no period."""

    def __init__(self, clock):
        self.clock = clock

    @property
    def channels(self):
        return (Channel("cpu-package-0", "cpu-package", "rapl", True),)

    def read_joules(self):
        return {"cpu-package-0": 50.0 * self.clock()}
