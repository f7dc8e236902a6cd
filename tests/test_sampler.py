"""The sampler times counter updates to about a millisecond while mostly sleeping."""

import pytest
from simfix import advance, virtual_board, virtual_sampler

from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.energy.sampler import Sampler, tick_time
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.clock import VirtualDriver


def test_tick_locked_sampling_times_every_update():
    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock)
    s.poll_all()
    t0 = clock()
    advance(s, clock, t0 + 3.0)
    ticks = [x for x in s.samples(m) if x.tick]
    assert len(ticks) in (29, 30, 31)
    assert ticks[0].t - ticks[0].t_lo < 0.0025  # even the first is caught by fast polls
    g = sim.STATE.gpus[0]
    for x in ticks:
        true = sim.STATE.origin + g.tick(x.t - sim.STATE.origin)
        assert abs(tick_time(x) - true) < 0.0012
        assert x.t - x.t_lo < 0.0025  # detected within a couple of fast polls
    polls = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"]
    assert polls < 400 + 10 * len(ticks)  # ~4 ms of fast polling per 100 ms, not spinning


def test_interval_longer_than_the_period_skips_updates():
    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock, interval_s=0.3)
    s.poll_all()
    advance(s, clock, clock() + 3.0)
    assert 8 <= len([x for x in s.samples(m) if x.tick]) <= 11


class Continuous(Meter):
    """A RAPL-like meter: counter changes at every read, no update period."""

    def __init__(self, clock):
        self.clock = clock

    @property
    def channels(self):
        return (Channel("cpu-package-0", "cpu-package", "rapl", True),)

    def read_joules(self):
        return {"cpu-package-0": 50.0 * self.clock()}


def test_continuous_meters_are_read_at_the_interval():
    clock, (m,) = virtual_board(300.0)
    c = Continuous(clock)
    s = Sampler([m, c], 0.02, clock=clock, driver=VirtualDriver(clock))
    s.poll_all()
    advance(s, clock, clock() + 1.0)
    cs = s.samples(c)
    assert 48 <= len(cs) <= 52
    gaps = [b.t - a.t for a, b in zip(cs, cs[1:])]
    assert min(gaps) == pytest.approx(0.02, abs=0.002)


def test_background_thread_starts_and_stops():
    sim.configure(1, 300.0)
    from tokenwatt.energy.meters.nvml import NvmlMeter

    m = NvmlMeter(0, nvml=sim)
    s = Sampler([m]).start()
    assert s.wait_ticks_after(s.clock())
    s.stop()
    assert any(x.tick for x in s.samples(m)) and s.driver._thread is None
    assert s.trace()[0]["channel"] == "gpu0"
