"""`tokenwatt.measure` as a context manager and a decorator, on simulated and estimated meters."""

import time

import pytest

from tokenwatt.energy.meters.nvml import NvmlMeter
from tokenwatt.energy.region import measure
from tokenwatt.sim import nvml as sim


def test_context_manager_measures_a_region_on_a_simulated_gpu():
    sim.configure(1, 321.0)
    meters = [NvmlMeter(0, nvml=sim)]
    with measure(meters=meters) as m:
        time.sleep(0.35)
    # avg_power_w is joules / seconds, so the window itself must be checked: it spans the block
    assert 0.35 <= m.seconds < 0.6
    assert m.joules == pytest.approx(321.0 * m.seconds, rel=0.005)
    assert m.avg_power_w == pytest.approx(321.0, rel=0.005)
    # the simulation labels itself: same code path, but not a measurement
    assert m.labels == {"scope": "gpu-board", "source": "simulated-nvml-energy-counter",
                        "measured": False}  # fmt: skip
    assert list(m.by_channel) == ["gpu0"] and len(m.by_device) == 1
    assert m.trace and all("power_w" in r for r in m.trace)
    assert "short-window" in m.quality["flags"]


def test_decorator_keeps_one_measurement_per_call_and_labels_estimates():
    @measure(meter="estimate", device="cpu")
    def work(n):
        return sum(range(n))

    assert work(10_000) == sum(range(10_000))
    work(10_000)
    assert len(work.measurements) == 2
    m = work.measurements[-1]
    assert m.joules > 0 and m.labels["measured"] is False
    assert m.labels["source"] == "estimate-tdp-process-cpu"


def test_nvml_on_a_cpu_region_without_boards_is_a_user_error(monkeypatch):
    from tokenwatt.errors import UserError

    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    sim.configure(1, 100.0)
    with pytest.raises(UserError, match="--gpus"):
        with measure(meter="nvml", device="cpu"):
            pass
