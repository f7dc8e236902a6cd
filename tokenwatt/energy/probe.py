"""What this machine can measure, and how: the data behind `tokenwatt meters`."""

from __future__ import annotations

import warnings
from typing import Any

from tokenwatt.energy.meters.base import MeterInfo
from tokenwatt.errors import MeterUnavailable


def meters_report(idle_seconds: float = 1.0) -> list[MeterInfo]:
    """One entry per GPU (or one saying why there is none), RAPL, and the CPU estimate."""
    return [*nvml_report(idle_seconds), rapl_report(), estimate_report()]


def nvml_report(idle_seconds: float = 1.0) -> list[MeterInfo]:
    from tokenwatt.energy.meters.nvml import NvmlMeter
    from tokenwatt.placement.nvml_ids import import_pynvml, nvml_init

    try:
        nvml = import_pynvml()
        nvml_init(nvml)
    except MeterUnavailable as e:
        return [MeterInfo("nvml", False, {"scope": "gpu-board"}, fix=str(e))]
    try:
        count = nvml.nvmlDeviceGetCount()
    finally:
        nvml.nvmlShutdown()
    if count == 0:
        return [MeterInfo("nvml", False, fix="NVML sees no GPU; check the driver and the board")]
    return [_gpu_info(NvmlMeter, nvml, i, idle_seconds) for i in range(count)]


def _gpu_info(cls: Any, nvml: Any, index: int, idle_seconds: float) -> MeterInfo:
    name = f"nvml:gpu{index}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            meter = cls(index, nvml=nvml)
    except MeterUnavailable as e:
        return MeterInfo(name, False, {"scope": "gpu-board"}, fix=str(e))
    try:
        d = meter.describe()
        keys = ("device_name", "uuid", "pci_bus_id", "source", "update_period_s",
                "power_limit_w", "instant_power_field", "other_processes", "simulated")  # fmt: skip
        detail = {k: d[k] for k in keys}
        detail.update({k: d[k] for k in ("instant_window_s", "instant_window_source") if k in d})
        detail["energy_counter"] = meter.has_counter
        if idle_seconds > 0:
            from tokenwatt.energy.recorder import measure_idle_power

            detail["idle_power_w"] = measure_idle_power([meter], idle_seconds).get(
                f"gpu{meter.index}"
            )
        fix = ""
        if not meter.has_counter:
            fix = ("no energy counter (needs Volta or newer and a recent driver): energy is "
                   "integrated instant power, labelled nvml-power-integrated")  # fmt: skip
        if caught:
            fix = "; ".join([fix] * bool(fix) + [str(w.message) for w in caught])
        return MeterInfo(name, True, detail, fix)
    finally:
        meter.close()


def dcgm_report(url: str) -> list[MeterInfo]:
    """One entry per board a dcgm-exporter publishes: its labels, the fields present, and its
    collection interval (measured by polling: up to two intervals); or why none."""
    from tokenwatt.energy.meters.remote import ExporterSource, _first_fetch

    source = ExporterSource(url)  # one page for every board, the interval polled once
    try:
        return _dcgm_boards(source, _first_fetch(source))
    except MeterUnavailable as e:
        return [MeterInfo(f"dcgm:{url}", False, {"scope": "gpu-board"}, fix=str(e))]
    finally:
        source.close()


def _dcgm_boards(source: Any, boards: list[Any]) -> list[MeterInfo]:
    from tokenwatt.energy.meters.dcgm_text import ENERGY, POWER
    from tokenwatt.energy.meters.remote import RemoteBoardMeter

    out = []
    for b in boards:
        missing = [f for f, v in ((ENERGY, b.energy_mj), (POWER, b.power_w)) if v is None]
        detail: dict[str, Any] = {
            k: b.labels.get(k) for k in ("Hostname", "gpu", "UUID", "modelName", "pod", "container")
        }
        detail["fields"] = [f for f in (ENERGY, POWER) if f not in missing]
        try:
            meter = RemoteBoardMeter(source, b)  # closing it would close the shared page
        except MeterUnavailable as e:
            out.append(MeterInfo(f"dcgm:{b.name()}", False, detail, fix=str(e)))
            continue
        detail["source"] = meter.source_label
        detail["collection_interval_s"] = meter.interval_s
        fix = ""
        if ENERGY in missing:
            fix = (
                f"no {ENERGY}: energy would be {POWER} integrated (dcgm-power-integrated); "
                "add the field to the exporter's counters CSV for the board's own counter"
            )
        out.append(MeterInfo(f"dcgm:{b.name()}", True, detail, fix))
    return out


def rapl_report(root: str | None = None) -> MeterInfo:
    from tokenwatt.energy.meters.rapl import POWERCAP, ROOT_ONLY_FIX, RaplMeter, discover

    root = root or POWERCAP
    domains = discover(root)
    if not domains:
        return MeterInfo("rapl", False, {"root": root}, fix=(
            f"no RAPL domains under {root}: this is a virtual machine or a CPU/kernel without "
            "powercap RAPL; CPU energy can only be estimated here (--meter estimate)"))  # fmt: skip
    detail: dict[str, Any] = {
        "domains": {
            d.path.name: {
                "name": d.name,
                "channel": d.key or "(not added: inside a package or containing them)",
            }
            for d in domains
        }  # fmt: skip
    }
    try:
        meter = RaplMeter(root)
    except MeterUnavailable as e:
        detail["readable"] = False
        fix = str(e) if "root" in str(e) else f"energy_uj {ROOT_ONLY_FIX}"
        return MeterInfo("rapl", False, detail, fix=fix)
    detail["readable"] = True
    detail["channels"] = [c.key for c in meter.channels]
    return MeterInfo("rapl", True, detail)


def estimate_report() -> MeterInfo:
    from tokenwatt.energy.meters.estimate import IDLE_SHARE, lookup_cpu_tdp

    tdp = lookup_cpu_tdp()
    detail = {"cpu_model": tdp.cpu_model, "tdp_w": tdp.tdp_w, "tdp_source": tdp.source,
              "formula": f"tdp_w x ({IDLE_SHARE} + {1 - IDLE_SHARE:.1f} x this process tree's CPU "
                         "utilisation)",
              "measured": False}  # fmt: skip
    fix = "an estimate, labelled estimate-tdp-process-cpu and measured=False (-57%..+187% vs RAPL)"
    if not tdp.source.startswith("codecarbon-table"):
        fix += (f"; CodeCarbon's table has no entry for {tdp.cpu_model!r}, so the TDP is a "
                "guess: set measure.cpu_tdp_w (--cpu-tdp-w) to your CPU's TDP")  # fmt: skip
    return MeterInfo("estimate", True, detail, fix)
