"""The CPU estimate behind every published folder, exactly (issue 26): over a window of wall
time T in which this process tree used C CPU seconds on N logical CPUs, it gives
TDP x (0.1 x T + 0.9 x C / N) joules, a child's CPU time included, however the reads fall."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tokenwatt.energy.meters import estimate
from tokenwatt.energy.meters.estimate import CpuEstimateMeter


class FakeTree:
    """A parent and a child process with known CPU seconds at each moment (a child that
    exits is reaped into the parent's children times, as the OS does)."""

    def __init__(self) -> None:
        self.parent_s, self.child_s = 0.0, 0.0

    def cpu_seconds(self) -> float:
        return self.parent_s + self.child_s


@pytest.fixture
def meter(monkeypatch):
    clock = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(estimate, "time", SimpleNamespace(perf_counter=lambda: clock.t))
    tree = FakeTree()
    m = CpuEstimateMeter(tdp_w=100.0, tree=tree)
    m.cpus = 4
    return m, tree, clock


def test_the_estimate_is_tdp_times_the_static_share_plus_the_trees_utilisation(meter):
    m, tree, clock = meter
    j0 = m.read_joules()["cpu-estimate"]
    # 10 s: the parent uses 6 CPU seconds, a child it started uses 10 (2.5 cores), read
    # at uneven moments
    for dt, parent, child in ((0.7, 0.5, 0.0), (3.3, 2.0, 3.0), (6.0, 3.5, 7.0)):
        clock.t += dt
        tree.parent_s += parent
        tree.child_s += child
        m.read_joules()
    joules = m.read_joules()["cpu-estimate"] - j0
    assert joules == pytest.approx(100.0 * (0.1 * 10.0 + 0.9 * 16.0 / 4))


def test_an_idle_tree_costs_the_static_share_only(meter):
    m, _, clock = meter
    j0 = m.read_joules()["cpu-estimate"]
    clock.t += 5.0
    assert m.read_joules()["cpu-estimate"] - j0 == pytest.approx(100.0 * 0.1 * 5.0)
    assert m.read_power_w() == {"cpu-estimate": pytest.approx(10.0)}
