"""The sampler times counter updates to about a millisecond while mostly sleeping."""

import time

import pytest
from simfix import Continuous, advance, virtual_board, virtual_sampler

from tokenwatt.energy.sampler import Sampler, tick_time
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.clock import VirtualDriver
from tokenwatt.sim.profiles import steps, with_noise


def test_tick_locked_sampling_times_every_update():
    """With the instant field, each update is read within ~2 ms and dated by its timestamp."""
    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock)
    calls0 = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"]  # after the open's
    s.poll_all()
    t0 = clock()
    advance(s, clock, t0 + 3.0)
    ticks = [x for x in s.samples(m) if x.tick]
    assert len(ticks) in (29, 30, 31)
    g = sim.STATE.gpus[0]
    for x in ticks:
        true = sim.STATE.origin + g.tick(x.t - sim.STATE.origin)
        assert x.dated_by == "timestamp" and abs(tick_time(x) - true) < 2e-6
        assert x.t - true < 0.0025  # read soon after it came
    polls = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"] - calls0
    assert polls < 3 * len(ticks) + 20  # a read or two per update: no fast polling needed


def test_without_instant_field_updates_are_caught_by_polls_a_margin_early():
    clock, (m,) = virtual_board(300.0, has_instant=False)
    s = virtual_sampler([m], clock)
    calls0 = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"]
    s.poll_all()
    advance(s, clock, clock() + 3.0)
    ticks = [x for x in s.samples(m) if x.tick]
    assert len(ticks) in (29, 30, 31)
    g = sim.STATE.gpus[0]
    for x in ticks:
        true = sim.STATE.origin + g.tick(x.t - sim.STATE.origin)
        assert abs(tick_time(x) - true) < 0.0012
        assert x.t - x.t_lo < 0.0025  # detected within a couple of fast polls
    polls = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"] - calls0
    # woken a switch interval + 2 ms early, then polled every ms: ~8 reads an update, no spin
    assert polls < 10 * len(ticks) + 100


def test_interval_longer_than_the_period_skips_updates():
    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock, interval_s=0.3)
    s.poll_all()
    advance(s, clock, clock() + 3.0)
    assert 8 <= len([x for x in s.samples(m) if x.tick]) <= 11


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


# ---- every update kept and dated, also when a poll comes late --------------------------------


def test_a_late_poll_keeps_the_change_dated_by_the_instant_timestamp():
    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock)
    s.poll_all()
    advance(s, clock, clock() + 0.5)
    lane = s.lanes[0]
    g = sim.STATE.gpus[0]
    last = sim.STATE.origin + g.tick(sim.now())
    clock.advance_to(last + 0.2 + 0.03)  # the sampler was starved: two updates went by
    got = lane.poll(clock)
    assert got.tick and got.updates == 2 and got.dated_by == "timestamp"
    assert tick_time(got) == pytest.approx(last + 0.2, abs=2e-6)


def test_without_an_instant_field_a_late_change_is_dated_by_the_phase_lock():
    clock, (m,) = virtual_board(300.0, has_instant=False)
    s = virtual_sampler([m], clock)
    s.poll_all()
    advance(s, clock, clock() + 0.5)
    lane = s.lanes[0]
    g = sim.STATE.gpus[0]
    last = sim.STATE.origin + g.tick(sim.now())
    clock.advance_to(last + 0.1 + 0.04)
    got = lane.poll(clock)
    assert got.tick and got.updates == 1 and got.dated_by == "phase-lock"
    assert tick_time(got) == pytest.approx(last + 0.1, abs=2e-3)


def test_jittered_updates_are_all_seen_on_the_virtual_clock():
    clock, (m,) = virtual_board(300.0, period_jitter_s=0.005)
    s = virtual_sampler([m], clock)
    s.poll_all()
    t0 = clock()
    advance(s, clock, t0 + 5.0)
    g = sim.STATE.gpus[0]
    o = sim.STATE.origin
    true = g.ticks(t0 - o, clock() - o)
    ticks = [x for x in s.samples(m) if x.tick]
    assert len(ticks) == len(true) and all(x.updates == 1 for x in ticks)
    assert max(abs(tick_time(x) - (o + t)) for x, t in zip(ticks, true)) < 1e-5


# ---- real time, with a measured body that holds the GIL -------------------------------------


def hold_the_gil(seconds):
    """Pure Python: the interpreter lets another thread run only at its switch interval."""
    end, x = time.perf_counter() + seconds, 0
    while time.perf_counter() < end:
        x += 1
    return x


def _real_time_windows(lengths, **board):
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.energy.monitor import Monitor

    prof = with_noise(steps(seconds=30, seed=7), 8.0)
    sim.configure(1, prof, **board)
    meter = NvmlMeter(0, nvml=sim)
    mon = Monitor(meters=[meter])
    got = []
    for length in lengths:
        hold_the_gil(0.04)
        mon.begin_window("w")
        hold_the_gil(length)
        got.append(mon.end_window("w"))
    o = sim.STATE.origin
    errs = [m.joules / prof.energy(m._t0 - o, m._t0 + m.seconds - o) - 1 for m in got]
    mon.close(wait=True)
    return got, errs, mon.sampler.samples(meter)


def test_real_time_every_update_is_kept_while_python_holds_the_gil():
    got, errs, samples = _real_time_windows((0.3, 0.5, 0.7, 0.5, 0.3, 0.45),
                                            period_jitter_s=0.003)  # fmt: skip
    for m in got:
        q = m.quality
        assert q["updates_seen"] == q["updates_expected"] > 0, q
        assert "missed-updates" not in q["flags"]
    assert {x.dated_by for x in samples if x.tick} == {"timestamp"}
    assert max(abs(e) for e in errs) < 0.005, errs


def test_real_time_without_instant_field_no_update_is_lost_either():
    got, errs, samples = _real_time_windows((0.4, 0.6, 0.5, 0.4), has_instant=False)
    for m in got:
        q = m.quality
        assert q["updates_seen"] == q["updates_expected"] > 0, q
    assert "timestamp" not in {x.dated_by for x in samples if x.tick}
    assert max(abs(e) for e in errs) < 0.03, errs


def test_a_timestamp_that_does_not_date_the_counter_is_stopped_being_trusted():
    clock, (m,) = virtual_board(300.0, period_jitter_s=0.004, stamp_offset_s=-0.03)
    s = virtual_sampler([m], clock)
    s.poll_all()
    advance(s, clock, clock() + 4.0)
    lane = s.lanes[0]
    assert not lane.trust_stamp
    late = [x for x in s.samples(m) if x.tick][-10:]
    assert {x.dated_by for x in late} == {"poll"}
    g, o = sim.STATE.gpus[0], sim.STATE.origin
    assert all(abs(tick_time(x) - (o + g.tick(x.t - o))) < 0.0012 for x in late)
