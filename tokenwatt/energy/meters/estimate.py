"""CPU energy *estimate* for machines without RAPL (virtual machines, macOS, ...).

power = TDP x (idle_share + (1 - idle_share) x utilisation), integrated over time.
The TDP comes from CodeCarbon's CPU table (matched the way CodeCarbon matches it), from
the config, or from CodeCarbon's own fallback of 4 W per thread. CodeCarbon's comparison
found such estimates -57% to +187% off RAPL: every figure from here is labelled
`estimate` and `measured=False`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

from tokenwatt.energy.meters.base import Channel, Meter

IDLE_SHARE = 0.1  # CodeCarbon's floor: a CPU never draws less than 10% of its TDP.
WATTS_PER_THREAD_FALLBACK = 4.0  # CodeCarbon's DEFAULT_POWER_PER_CORE.


@dataclass(frozen=True)
class CpuTdp:
    cpu_model: str
    tdp_w: float
    source: str  # "config", "codecarbon-table:<matched name>", "codecarbon-default-4w-per-thread"


def cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


@lru_cache(maxsize=8)
def lookup_cpu_tdp(model: str | None = None, override_w: float | None = None) -> CpuTdp:
    """TDP of this CPU: the config's value, CodeCarbon's table, or CodeCarbon's fallback."""
    model = model or cpu_model_name()
    if override_w:
        return CpuTdp(model, float(override_w), "config")
    matched = _match_codecarbon(model)
    if matched:
        return CpuTdp(model, matched[1], f"codecarbon-table:{matched[0]}")
    threads = psutil.cpu_count(logical=True) or 1
    return CpuTdp(model, WATTS_PER_THREAD_FALLBACK * threads, "codecarbon-default-4w-per-thread")


def _match_codecarbon(model: str) -> tuple[str, float] | None:
    """Reuse CodeCarbon's table and matcher rather than keep a table of our own."""
    try:
        from codecarbon.core.cpu import TDP
        from codecarbon.input import DataSource
    except Exception:  # codecarbon is an optional extra
        return None
    df = DataSource().get_cpu_power_data()
    try:
        name = TDP._get_matching_cpu(TDP.__new__(TDP), model, df)
    except Exception:
        return None
    if not name:
        return None
    return name, float(df[df["Name"] == name]["TDP"].values[0])


class CpuEstimateMeter(Meter):
    """Integrates TDP x utilisation; thread-safe; system-wide utilisation from /proc/stat."""

    name = "estimate"

    def __init__(self, tdp_w: float | None = None) -> None:
        self.tdp = lookup_cpu_tdp(None, tdp_w)
        self._channel = Channel(
            key="cpu-estimate",
            scope="cpu-package",
            source="estimate-tdp-utilisation",
            measured=False,
            device_name=self.tdp.cpu_model,
        )
        self._lock = threading.Lock()
        self._joules = 0.0
        self._last_t = time.perf_counter()
        self._last_times = psutil.cpu_times()
        self._last_power_w = self.power_at(0.0)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (self._channel,)

    def power_at(self, utilisation: float) -> float:
        u = min(max(utilisation, 0.0), 1.0)
        return self.tdp.tdp_w * (IDLE_SHARE + (1.0 - IDLE_SHARE) * u)

    def read_joules(self) -> dict[str, float]:
        with self._lock:
            now = time.perf_counter()
            times = psutil.cpu_times()
            dt = now - self._last_t
            if dt > 0:
                power = self.power_at(_utilisation(self._last_times, times))
                self._joules += power * dt
                self._last_power_w = power
            self._last_t, self._last_times = now, times
            return {self._channel.key: self._joules}

    def read_power_w(self) -> dict[str, float] | None:
        # The estimate has no instantaneous sensor; report the model's last value.
        return {self._channel.key: self._last_power_w}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            cpu_model=self.tdp.cpu_model,
            tdp_w=self.tdp.tdp_w,
            tdp_source=self.tdp.source,
            idle_share=IDLE_SHARE,
            formula="tdp_w * (idle_share + (1 - idle_share) * system_utilisation)",
            logical_cpus=psutil.cpu_count(logical=True),
        )
        return d


def _utilisation(a: Any, b: Any) -> float:
    busy_a = sum(a) - a.idle - getattr(a, "iowait", 0.0)
    busy_b = sum(b) - b.idle - getattr(b, "iowait", 0.0)
    total = sum(b) - sum(a)
    return (busy_b - busy_a) / total if total > 0 else 0.0
