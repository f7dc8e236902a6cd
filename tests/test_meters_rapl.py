"""RAPL on a fake powercap tree: packages summed, dram apart, psys and sub-domains never added."""

import pytest

from tokenwatt.energy.meters import rapl
from tokenwatt.energy.meters.rapl import RaplMeter
from tokenwatt.energy.probe import rapl_report
from tokenwatt.errors import MeterUnavailable
from tokenwatt.sim.powercap import add_energy, build_tree, set_energy


def test_channels_are_packages_and_dram_only(tmp_path):
    root = build_tree(tmp_path, packages=2)
    m = RaplMeter(root)
    assert [c.key for c in m.channels] == ["cpu-package-0", "dram-0", "cpu-package-1", "dram-1"]
    assert {c.scope for c in m.channels} == {"cpu-package", "dram"}
    assert sorted(m.skipped) == ["core", "core", "psys", "uncore", "uncore"]
    add_energy(root, "intel-rapl:0", 10.0)
    add_energy(root, "intel-rapl:0:0", 7.0)  # core: inside package-0, must not be added
    add_energy(root, "intel-rapl:2", 50.0)  # psys: contains the packages, must not be added
    add_energy(root, "intel-rapl:1:2", 3.0)  # dram-1
    j = m.read_joules()
    assert j == {"cpu-package-0": 10.0, "dram-0": 0.0, "cpu-package-1": 0.0, "dram-1": 3.0}


def test_counter_wrap_at_max_energy_range(tmp_path):
    root = build_tree(tmp_path, packages=1, max_range_uj=10_000_000)
    set_energy(root, "intel-rapl:0", 9_000_000)
    m = RaplMeter(root)
    add_energy(root, "intel-rapl:0", 4.0)  # 9 J + 4 J wraps at 10 J
    assert m.read_joules()["cpu-package-0"] == pytest.approx(4.0)
    assert m.wraps == 1
    add_energy(root, "intel-rapl:0", 1.5)
    assert m.read_joules()["cpu-package-0"] == pytest.approx(5.5)


def test_root_only_energy_uj_says_why_and_how(tmp_path, monkeypatch):
    root = build_tree(tmp_path, packages=1)
    real_text = rapl._text

    def denied(p):
        if p.name == "energy_uj":
            raise PermissionError(13, "Permission denied")
        return real_text(p)

    monkeypatch.setattr(rapl, "_text", denied)
    with pytest.raises(MeterUnavailable, match="root only.*CVE-2020-8694"):
        RaplMeter(root)
    info = rapl_report(str(root))
    assert not info.available and "chmod" in info.fix and info.detail["readable"] is False


def test_no_powercap_is_unavailable_with_the_fix(tmp_path):
    with pytest.raises(MeterUnavailable, match="--meter estimate"):
        RaplMeter(tmp_path / "missing")
    info = rapl_report(str(tmp_path / "missing"))
    assert not info.available and "virtual machine" in info.fix
