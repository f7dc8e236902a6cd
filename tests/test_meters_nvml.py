"""The real NVML meter against the simulated sensor (counter every 100 ms, 25 ms instant)."""

import os
import subprocess
import sys

import pytest
from simfix import virtual_board

from tokenwatt.energy.meters.nvml import INTEGRATED, NvmlMeter
from tokenwatt.errors import MeterError, MeterUnavailable
from tokenwatt.placement import cuda_boards
from tokenwatt.sim import nvml as sim
from tokenwatt.sim import shim_dir
from tokenwatt.sim.clock import VirtualClock


def test_counter_is_the_source_and_matches_truth_between_updates():
    clock, (m,) = virtual_board(250.0)
    assert m.source == "nvml-energy-counter"
    assert m.channels[0].source == "simulated-nvml-energy-counter" and not m.channels[0].measured
    g = sim.STATE.gpus[0]
    clock.advance_to(sim.STATE.origin + g.tick(sim.now()) + g.period_s + 1e-6)
    a = m.read_joules()["gpu0"]
    clock.sleep(2.0)
    b = m.read_joules()["gpu0"]
    assert b - a == pytest.approx(500.0, rel=1e-6)  # 2 s at 250 W, edges on updates


def test_update_period_is_measured_not_assumed():
    _, (m,) = virtual_board(300.0, period_s=0.05)
    assert m.update_period_s() == pytest.approx(0.05, abs=0.002)
    _, (m,) = virtual_board(300.0)
    assert m.update_period_s() == pytest.approx(0.1, abs=0.002)


def test_driver_reload_keeps_the_channel_monotonic_and_counts_it():
    clock, (m,) = virtual_board(300.0)
    clock.sleep(1.0)
    before = m.read_joules()["gpu0"]
    sim.reload_driver(0)
    clock.sleep(1.0)
    with pytest.warns(UserWarning, match="backwards"):
        after = m.read_joules()["gpu0"]
    assert after >= before and m.reloads == 1
    assert after - before == pytest.approx(300.0, rel=0.05)


def test_nvml_errors_become_meter_errors_with_the_nvml_text():
    clock, (m,) = virtual_board(300.0)
    before = m.read_joules()["gpu0"]
    sim.inject_error("nvmlDeviceGetTotalEnergyConsumption", sim.NVML_ERROR_GPU_IS_LOST)
    with pytest.raises(MeterError, match="GPU is lost"):
        m.read_joules()
    clock.sleep(1.0)
    # the next read works again and the failed one lost nothing: 1 s at 300 W (updates 100 ms)
    assert m.read_joules()["gpu0"] - before == pytest.approx(300.0, rel=0.11)
    sim.inject_error("nvmlDeviceGetTotalEnergyConsumption", sim.NVML_ERROR_UNKNOWN)
    with pytest.raises(MeterError, match="Unknown"):
        m.read_joules()


def test_uninitialised_driver_is_a_clear_unavailable():
    sim.configure(1, 300.0)
    sim.inject_error("nvmlInit", sim.NVML_ERROR_DRIVER_NOT_LOADED)
    with pytest.raises(MeterUnavailable, match="no NVIDIA driver"):
        NvmlMeter(0, nvml=sim)


def test_without_counter_integrates_instant_power_and_says_so():
    clock, (m,) = virtual_board(200.0, has_counter=False)
    assert m.source == INTEGRATED and m.update_period_s() is None
    a = m.read_joules()["gpu0"]
    for _ in range(100):
        clock.sleep(0.02)
        m.read_joules()
    assert m.read_joules()["gpu0"] - a == pytest.approx(400.0, rel=0.01)


def test_never_integrates_the_one_second_average_on_ampere_and_newer():
    with pytest.raises(MeterUnavailable, match="1 s average"):
        virtual_board(200.0, has_counter=False, has_instant=False)
    _, (m,) = virtual_board(200.0, has_counter=False, has_instant=False,
                            arch=sim.NVML_DEVICE_ARCH_TURING)  # fmt: skip
    assert m.source == INTEGRATED  # pre-Ampere: nvmlDeviceGetPowerUsage is instantaneous


def test_mig_is_refused_with_the_reason():
    with pytest.raises(MeterUnavailable, match="MIG"):
        virtual_board(300.0, mig=True)


def test_other_processes_are_recorded_for_the_session_to_judge():
    """Whose they are (a served model's server, or another program's) is the session's to say:
    tests/test_server_load.py."""
    _, (m,) = virtual_board(300.0, other_pids=[4242])
    assert m.describe()["other_processes"] == [4242] and m.other_pids() == [4242]


def test_edge_state_records_temperature_clock_and_limit():
    _, (m,) = virtual_board(450.0)
    state = m.edge_state()
    assert state["power_limit_w"] == 700.0 and state["sm_clock_mhz"] > 0
    assert state["temperature_c"] > 30 and state["power_w"] == pytest.approx(450.0)


def test_cuda_visible_devices_maps_indexes_uuid_prefixes_and_refuses_mig(monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    gpus = sim.configure(3, 300.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")  # CUDA indexes -> NVML boards by UUID
    assert [b.uuid for b in cuda_boards()] == [gpus[2].uuid, gpus[0].uuid]
    assert [b.cuda for b in cuda_boards()] == [0, 1]
    uuid1 = gpus[1].uuid
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", uuid1[:9])
    (board,) = cuda_boards()
    assert board.uuid == uuid1 and board.pci_bus_id == gpus[1].pci_bus_id
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-3b7c-4f2a")
    with pytest.raises(MeterUnavailable, match="MIG"):
        cuda_boards()
    assert cuda_boards(strict=False) == []  # a region skips what it cannot measure
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert cuda_boards()[1].uuid == gpus[1].uuid
    sim.nvmlInit()
    m = NvmlMeter(uuid1, nvml=sim, clock=VirtualClock(), measure_period=False)
    assert m.channels[0].key == "gpu1"


def test_shim_is_imported_as_pynvml_with_real_error_classes():
    code = (
        "import pynvml; pynvml.nvmlInit(); h = pynvml.nvmlDeviceGetHandleByIndex(0);"
        "print(pynvml.TOKENWATT_SIMULATED, pynvml.nvmlDeviceGetPowerUsage(h));"
        "pynvml.nvmlDeviceGetTotalEnergyConsumption(h)"
    )
    env = {**os.environ, "PYTHONPATH": shim_dir(), "TOKENWATT_SIM_POWER_W": "123",
           "TOKENWATT_SIM_ERRORS": "nvmlDeviceGetTotalEnergyConsumption:15"}  # fmt: skip
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "True 123000" in p.stdout
    assert "NVMLError_GpuIsLost" in p.stderr


def test_the_update_period_is_measured_once_per_board_and_driver():
    clock, (m,) = virtual_board(300.0, period_s=0.05)
    assert m.update_period_s() == pytest.approx(0.05, abs=0.002)
    calls = sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"]
    again = NvmlMeter(0, nvml=sim, clock=clock, sleep=clock.sleep)
    assert again.update_period_s() == m.update_period_s()
    assert sim.STATE.calls["nvmlDeviceGetTotalEnergyConsumption"] - calls <= 2  # no polling
    _, (other,) = virtual_board(300.0, period_s=0.08)  # reconfigured: a new driver version
    assert other.update_period_s() == pytest.approx(0.08, abs=0.002)


@pytest.mark.parametrize("window", [0.010, 0.050])
def test_the_instant_window_is_measured_from_the_ripple_not_assumed(window):
    from simfix import advance, virtual_sampler

    from tokenwatt.sim.profiles import steady

    clock, (m,) = virtual_board(steady(300.0, 40.0, 60.0), instant_window_s=window)
    assert m.instant_window_s() is None  # not enough periods yet: 25 ms is assumed, and said
    assert "assumed" in m.describe()["instant_window_source"]
    s = virtual_sampler([m], clock)
    s.poll_all()
    advance(s, clock, clock() + 40.0)
    assert m.instant_window_s() == pytest.approx(window, rel=0.35)
    assert m.describe()["instant_window_source"].startswith("measured")


def test_a_steady_board_leaves_the_instant_window_assumed():
    from simfix import advance, virtual_sampler

    clock, (m,) = virtual_board(300.0)
    s = virtual_sampler([m], clock)
    s.poll_all()
    advance(s, clock, clock() + 20.0)
    assert m.instant_window_s() is None
