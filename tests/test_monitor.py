"""`tokenwatt.Monitor`: named, nested and overlapping windows over one shared sampler, on the
simulated sensor (virtual clock for exact figures, real time where the thread matters)."""

import math
import os
import subprocess
import sys
import time

import pytest
from simfix import advance, virtual_board

from tokenwatt.energy.monitor import Monitor
from tokenwatt.energy.region import measure
from tokenwatt.errors import UserError
from tokenwatt.sim import nvml as sim
from tokenwatt.sim.clock import VirtualDriver
from tokenwatt.sim.profiles import steps, with_noise


def virtual_monitor(power, **kw):
    clock, meters = virtual_board(power, **kw)
    mon = Monitor(meters=meters, clock=clock, driver=VirtualDriver(clock))
    return clock, mon


def truth(profile, m):
    o = sim.STATE.origin
    return profile.energy(m._t0 - o, m._t0 + m.seconds - o)


def test_nested_and_overlapping_windows_each_match_the_ground_truth():
    prof = with_noise(steps(seconds=30, seed=4), 8.0)
    clock, mon = virtual_monitor(prof)
    s = mon.sampler
    advance(s, clock, clock() + 0.731)
    mon.begin_window("outer")
    advance(s, clock, clock() + 0.413)
    mon.begin_window("inner")
    advance(s, clock, clock() + 0.252)
    mon.begin_window("overlap")
    advance(s, clock, clock() + 0.9)
    inner = mon.end_window("inner")
    advance(s, clock, clock() + 0.37)
    outer = mon.end_window("outer")
    advance(s, clock, clock() + 0.5)
    over = mon.end_window("overlap")
    assert not inner.ready  # ending a window computes nothing
    for m in (inner, outer, over):
        assert m.joules == pytest.approx(truth(prof, m), rel=2e-3), m.name
        assert m.quality["updates_seen"] == m.quality["updates_expected"] > 0
        assert m.labels["source"] == "simulated-nvml-energy-counter"
    assert outer.seconds > inner.seconds and set(inner.by_channel) == {"gpu0"}
    assert math.isfinite(outer.joules_err) and outer.joules_err >= 0


def test_window_names_are_checked_with_one_line_errors():
    clock, mon = virtual_monitor(300.0)
    mon.begin_window("a")
    with pytest.raises(UserError, match="already open|is open"):
        mon.begin_window("a")
    with pytest.raises(UserError, match="no window of that name") as e:
        mon.end_window("b")
    assert "\n" not in str(e.value) and "a" in str(e.value)
    mon.end_window("a")
    mon.close()
    with pytest.raises(UserError, match="closed"):
        mon.begin_window("c")


def test_read_gives_the_energy_so_far_and_leaves_the_window_open():
    clock, mon = virtual_monitor(250.0)
    s = mon.sampler
    advance(s, clock, clock() + 0.5)
    t0 = clock()
    mon.begin_window("w")
    advance(s, clock, clock() + 1.234)
    so_far = mon.read("w")
    since_start = mon.read()
    assert mon.open_windows == ["w"]
    assert so_far.joules == pytest.approx(250.0 * 1.234, rel=1e-4)
    assert since_start.joules == pytest.approx(250.0 * since_start.seconds, rel=1e-4)
    advance(s, clock, clock() + 0.5)  # (computing a read ran the clock to the next update)
    t1 = clock()
    end = mon.end_window("w")
    assert end.seconds == pytest.approx(t1 - t0, abs=1e-6)
    assert end.joules == pytest.approx(250.0 * end.seconds, rel=1e-4)


def test_a_long_lived_monitor_keeps_only_the_samples_windows_need():
    clock, mon = virtual_monitor(200.0)
    s = mon.sampler
    for _ in range(60):  # 60 s of windows of 0.5 s, each computed
        mon.begin_window("w")
        advance(s, clock, clock() + 0.5)
        m = mon.end_window("w")
        advance(s, clock, clock() + 0.5)
        assert m.joules == pytest.approx(100.0, rel=1e-3)
    assert len(s.samples(mon.meters[0])) < 400  # ~600 updates happened
    total = mon.read()  # the first samples are kept: the monitor's whole life is still there
    assert total.joules == pytest.approx(200.0 * total.seconds, rel=1e-4)
    assert total.quality["updates_seen"] == total.quality["updates_expected"] > 500


def test_a_short_burst_inside_one_period_is_given_its_energy_not_zero():
    """A 20 ms window around a 20 ms burst inside one update period: the period's excess
    energy is the burst's (the window's marks are where the power changed)."""
    from tokenwatt.sim.profiles import PiecewiseProfile

    clock, mon = virtual_monitor(300.0)
    g = sim.STATE.gpus[0]
    t_burst = g.tick(sim.now()) + 1.03  # 30 ms after an update, one second ahead
    g.profile = PiecewiseProfile([0.0, t_burst, t_burst + 0.02], [300.0, 650.0, 300.0])
    s = mon.sampler
    advance(s, clock, sim.STATE.origin + t_burst)
    mon.begin_window("burst")
    advance(s, clock, sim.STATE.origin + t_burst + 0.02)
    m = mon.end_window("burst")
    assert m.joules == pytest.approx(650.0 * 0.02, rel=0.05)


def test_close_stops_the_sampler_once_the_last_end_is_covered_and_closes_own_meters(
    monkeypatch,
):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    sim.configure(1, 300.0)
    mon = Monitor(gpus=["0"])
    mon.begin_window("w")
    time.sleep(0.25)
    m = mon.end_window("w")
    mon.close()
    assert mon.sampler.running  # still waiting for the update after the end
    assert m.joules == pytest.approx(300.0 * m.seconds, rel=0.01)
    deadline = time.monotonic() + 1.0
    while mon.sampler.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not mon.sampler.running and mon._released


def test_measure_is_a_one_window_monitor_and_returns_without_waiting():
    sim.configure(1, 321.0)
    from tokenwatt.energy.meters.nvml import NvmlMeter

    meters = [NvmlMeter(0, nvml=sim)]
    region = measure(meters=meters)
    with region as m:
        time.sleep(0.3)
        t_end = time.perf_counter()
    assert time.perf_counter() - t_end < 0.05  # no wait at the end of the block
    assert m.joules == pytest.approx(321.0 * m.seconds, rel=0.005)
    assert region.measurements == [m]


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    full = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=full, timeout=120)  # fmt: skip


def test_auto_measures_the_boards_nvml_sees_without_torch():
    code = (
        "import sys, time, tokenwatt\n"
        "mon = tokenwatt.Monitor()\n"
        "mon.begin_window('w'); time.sleep(0.3); m = mon.end_window('w')\n"
        "print(sorted(m.by_channel), round(m.avg_power_w), m.labels['source'])\n"
        "print('torch' in sys.modules, 'numpy' in sys.modules)\n"
    )
    p = _python(code, TOKENWATT_NVML_MODULE="tokenwatt.sim.nvml", TOKENWATT_SIM_GPUS="2",
                TOKENWATT_SIM_POWER_W="150")  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "['gpu0', 'gpu1'] 300 simulated-nvml-energy-counter"
    assert lines[1].startswith("False")  # torch was never imported


def test_auto_follows_cuda_visible_devices():
    code = "import tokenwatt; print([c.key for c in tokenwatt.Monitor().channels])"
    p = _python(code, TOKENWATT_NVML_MODULE="tokenwatt.sim.nvml", TOKENWATT_SIM_GPUS="3",
                CUDA_VISIBLE_DEVICES="2")  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "['gpu2']"


def test_cuda_device_without_a_gpu_is_a_one_line_user_error():
    code = (
        "import tokenwatt\n"
        "from tokenwatt.errors import UserError\n"
        "try:\n    tokenwatt.Monitor(device='cuda:0')\n"
        "except UserError as e:\n    print('UserError:', e)\n"
    )
    p = _python(code, TOKENWATT_NVML_MODULE="")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("UserError: device: 'cuda:0'") and p.stdout.count("\n") == 1
