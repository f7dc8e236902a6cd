"""CPU energy *estimate* for machines without RAPL (virtual machines, macOS, ...).

tokenwatt's own linear model, integrated over time:

    power = TDP x (idle_share + (1 - idle_share) x u),  u = this process tree's CPU seconds /
                                                            (wall seconds x logical CPUs)

`u` counts this process and its descendants (live children and reaped ones), not the whole
machine: another program's work neither adds to this estimate nor is hidden in it (it shows up
as contention instead, see runner/contention.py). `idle_share` x TDP stands for the package's
static power, charged in full to the run. The model is not CodeCarbon's (its cpu_load mode uses
a cubic in system-wide load, its process mode no static share); only the TDP data is reused:
CodeCarbon's CPU table (matched the way CodeCarbon matches it), the config's value, or
CodeCarbon's fallback of 4 W per thread. TDP-based estimates were found -57% to +187% off RAPL
in CodeCarbon's own comparison: every figure from here is labelled `estimate-tdp-process-cpu`
and `measured=False`.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import psutil

from tokenwatt._util.proctree import ProcessTree
from tokenwatt.energy.meters.base import Channel, Meter

SOURCE = "estimate-tdp-process-cpu"
# Static share of TDP drawn whatever the load: tokenwatt's assumption (CodeCarbon's cpu_load
# mode also never goes below 10% of TDP), not a measured figure.
IDLE_SHARE = 0.1
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
    """Integrates TDP x this process tree's CPU utilisation; thread-safe."""

    name = "estimate"

    def __init__(self, tdp_w: float | None = None, tree: ProcessTree | None = None) -> None:
        self.tdp = lookup_cpu_tdp(None, tdp_w)
        self._channel = Channel(
            key="cpu-estimate",
            scope="cpu-package",
            source=SOURCE,
            measured=False,
            device_name=self.tdp.cpu_model,
        )
        self.tree = tree or ProcessTree()
        self.cpus = psutil.cpu_count(logical=True) or 1
        self._lock = threading.Lock()
        self._joules = 0.0
        self._last_t = time.perf_counter()
        self._last_cpu_s = self.tree.cpu_seconds()
        self._last_power_w = self.power_at(0.0)

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (self._channel,)

    def power_at(self, utilisation: float) -> float:
        # No upper clamp: a short interval can see one more 10 ms tick than it lasted, and
        # clamping would lose that energy; averaged over a window u stays <= 1.
        u = max(utilisation, 0.0)
        return self.tdp.tdp_w * (IDLE_SHARE + (1.0 - IDLE_SHARE) * u)

    def read_joules(self) -> dict[str, float]:
        with self._lock:
            now = time.perf_counter()
            cpu_s = self.tree.cpu_seconds()
            dt = now - self._last_t
            if dt > 0:
                # Energy is linear in CPU seconds, so the 10 ms ticks of CPU times do not
                # bias a window's sum however short the read interval.
                power = self.power_at((cpu_s - self._last_cpu_s) / (dt * self.cpus))
                self._joules += power * dt
                self._last_power_w = power
            self._last_t, self._last_cpu_s = now, cpu_s
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
            formula="tdp_w * (idle_share + (1 - idle_share) * u), u = this process tree's CPU "
            "seconds / (wall seconds * logical CPUs)",
            covers="this process and its descendants' CPU time (not other processes), plus "
            "idle_share * TDP of static power; tokenwatt's linear model, not CodeCarbon's",
            logical_cpus=self.cpus,
        )
        return d
