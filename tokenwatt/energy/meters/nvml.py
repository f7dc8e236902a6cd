"""NVIDIA GPU board energy through NVML (`nvidia-ml-py`, imported as `pynvml`).

One `NvmlMeter` per GPU, one channel `gpu<nvml index>`:
- source `nvml-energy-counter`: `nvmlDeviceGetTotalEnergyConsumption` (mJ since the driver
  loaded, Volta and newer). Reads are made relative to the value at open; a decrease means the
  driver reloaded (or the counter wrapped): the channel stays monotonic, the event is counted in
  `reloads` and flagged, and no negative delta is ever reported.
- the power trace comes from the `NVML_FI_DEV_POWER_INSTANT` field, with its own timestamp.
  `nvmlDeviceGetPowerUsage` is a 1 s moving average on Ampere and newer and is never integrated
  as if instantaneous.
- without a counter, source `nvml-power-integrated`: the instant field integrated over the
  reads (trapezoids), or `nvmlDeviceGetPowerUsage` on pre-Ampere boards only, where it is
  instantaneous.
- the counter's real update period is measured at the first open in a process
  (`update_period_s`), not assumed, and kept for the board (`boards.py`); so is the instant
  field's averaging window, estimated from the updates seen (`instant_window_s`).
- NVML stays initialised once a meter has opened (init is slow on boards without persistence
  mode), so later opens cost a few NVML calls.
MIG is refused (slices report the whole board). Other processes on the board are warned about:
readings are per board, not per process.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokenwatt.energy.meters import boards
from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.errors import MeterError, MeterUnavailable
from tokenwatt.placement.nvml_ids import MIG_FIX, import_pynvml, nvml_init
from tokenwatt.placement.nvml_ids import text as _text

COUNTER = "nvml-energy-counter"
INTEGRATED = "nvml-power-integrated"

_KEPT: set[int] = set()
_KEPT_LOCK = threading.Lock()


def keep_initialised(nvml: ModuleType) -> None:
    """Hold one NVML reference for the rest of the process (NVML counts inits), so closing a
    meter never makes the next open pay NVML's start-up again."""
    with _KEPT_LOCK:
        if id(nvml) not in _KEPT:
            nvml.nvmlInit()
            _KEPT.add(id(nvml))


class NvmlMeter(Meter):
    """Energy of one GPU board. `target`: NVML index, UUID ("GPU-...") or PCI bus id."""

    name = "nvml"
    is_board = True  # a GPU board: per-board columns, board_uuids (runner/boards.py)

    def __init__(
        self,
        target: int | str = 0,
        nvml: ModuleType | None = None,
        clock: Callable[[], float] = time.perf_counter,
        sleep: Callable[[float], None] = time.sleep,
        measure_period: bool = True,
    ) -> None:
        self.nvml = nvml or import_pynvml()
        self.clock, self.sleep = clock, sleep
        nvml_init(self.nvml)
        self._lock = threading.Lock()
        self.reloads = 0
        try:
            self._open(target)
        except self.nvml.NVMLError as e:
            self.nvml.nvmlShutdown()
            raise MeterUnavailable(f"NVML GPU {target}: {e}") from None
        self.facts = self._board_facts() if measure_period else boards.BoardFacts(None)
        self._period = self.facts.period_s
        keep_initialised(self.nvml)

    def driver_version(self) -> str:
        """The NVIDIA driver's version ("" when NVML does not say)."""
        try:
            return _text(self.nvml.nvmlSystemGetDriverVersion())
        except self.nvml.NVMLError:
            return ""

    def _board_facts(self) -> boards.BoardFacts:
        driver = self.driver_version() or "?"
        key = (getattr(self.nvml, "__name__", "nvml"), driver, self.uuid)
        known = boards.facts_for(key)
        if known is not None:
            return known
        facts = boards.BoardFacts(None)
        facts.period_s = self.measure_update_period(note=facts)
        return boards.remember(key, facts)

    def _open(self, target: int | str) -> None:
        nv = self.nvml
        if isinstance(target, str) and target.startswith("MIG-"):
            raise MeterUnavailable(f"{target} is a MIG instance; {MIG_FIX}")
        if isinstance(target, str) and target.startswith("GPU-"):
            self.handle = nv.nvmlDeviceGetHandleByUUID(target)
        elif isinstance(target, str):
            self.handle = nv.nvmlDeviceGetHandleByPciBusId(target)
        else:
            self.handle = nv.nvmlDeviceGetHandleByIndex(int(target))
        self.index = nv.nvmlDeviceGetIndex(self.handle)
        self.uuid = _text(nv.nvmlDeviceGetUUID(self.handle))
        pci = self._optional(nv.nvmlDeviceGetPciInfo, self.handle)
        self.pci_bus_id = _text(pci.busId) if pci is not None else None
        self.device_name = _text(nv.nvmlDeviceGetName(self.handle))
        self.arch = self._optional(nv.nvmlDeviceGetArchitecture, self.handle)
        if self._mig_enabled():
            raise MeterUnavailable(f"GPU {self.index} ({self.device_name}) has MIG on; {MIG_FIX}")
        self.has_instant = self._instant_mw() is not None
        self.has_counter = (
            self._optional(nv.nvmlDeviceGetTotalEnergyConsumption, self.handle) is not None
        )
        self.source = COUNTER if self.has_counter else self._fallback_source()
        # A binding that declares itself simulated (tokenwatt.sim.nvml) labels its energy so:
        # the code path is the same, but its joules are not a measurement.
        self.simulated = bool(getattr(nv, "TOKENWATT_SIMULATED", False))
        limit = self._optional(nv.nvmlDeviceGetEnforcedPowerLimit, self.handle)
        self.power_limit_w = limit / 1000.0 if limit else None
        # whose they are (a served model's own server, or another program's) is the session's
        # to say: it knows the server's processes (runner/session.py)
        self.other_processes = self.other_pids()
        source = f"simulated-{self.source}" if self.simulated else self.source
        self._channel = Channel(
            f"gpu{self.index}", "gpu-board", source, not self.simulated, self.device_name
        )
        wall = getattr(self.clock, "wall", time.time)  # a virtual clock brings its own
        self._wall = wall if self.clock is time.perf_counter else None
        self._epoch_to_clock = self.clock() - wall()
        self._raw0 = self._last_raw = self._counter_mj() if self.has_counter else 0
        self._offset_mj = 0
        self._integrated_j, self._last_t, self._last_p = 0.0, self.clock(), self._power_now_w()

    def _optional(self, fn: Callable[..., Any], *args: Any) -> Any:
        """A value NVML may not support on this board: None when NOT_SUPPORTED."""
        try:
            return fn(*args)
        except self.nvml.NVMLError as e:
            if getattr(e, "value", None) in (self.nvml.NVML_ERROR_NOT_SUPPORTED,
                                             self.nvml.NVML_ERROR_FUNCTION_NOT_FOUND):  # fmt: skip
                return None
            raise

    def _mig_enabled(self) -> bool:
        mode = self._optional(self.nvml.nvmlDeviceGetMigMode, self.handle)
        return bool(mode) and mode[0] == self.nvml.NVML_DEVICE_MIG_ENABLE

    def _fallback_source(self) -> str:
        if self.has_instant:
            return INTEGRATED
        if self.arch is not None and self.arch < self.nvml.NVML_DEVICE_ARCH_AMPERE:
            return INTEGRATED  # pre-Ampere nvmlDeviceGetPowerUsage is instantaneous
        raise MeterUnavailable(
            f"GPU {self.index} ({self.device_name}) has neither an energy counter nor instant "
            "power, and its nvmlDeviceGetPowerUsage is a 1 s average that must not be "
            "integrated; update the NVIDIA driver or use --meter estimate"
        )

    def other_pids(self) -> list[int]:
        """Other processes computing on this board now (NVML reads the whole board)."""
        try:
            procs = self.nvml.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except self.nvml.NVMLError:
            return []
        return sorted({p.pid for p in procs} - {os.getpid()})

    # ---- reads ------------------------------------------------------------------------

    def _counter_mj(self) -> int:
        try:
            return int(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle))
        except self.nvml.NVMLError as e:
            raise MeterError(f"NVML GPU {self.index} energy counter: {e}") from None

    def _instant_mw(self) -> int | None:
        return None if (s := self._instant_field()) is None else s[1]

    def _instant_field(self) -> tuple[int, int] | None:
        """(timestamp µs since 1970, mW) of NVML_FI_DEV_POWER_INSTANT, None if unsupported."""
        try:
            v = self.nvml.nvmlDeviceGetFieldValues(
                self.handle, [self.nvml.NVML_FI_DEV_POWER_INSTANT]
            )[0]
        except self.nvml.NVMLError as e:
            if getattr(e, "value", None) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                return None
            raise MeterError(f"NVML GPU {self.index} instant power: {e}") from None
        if v.nvmlReturn != self.nvml.NVML_SUCCESS:
            return None
        return int(v.timestamp), int(v.value.uiVal)

    def _power_now_w(self) -> float | None:
        if self.has_instant:
            mw = self._instant_mw()
            return None if mw is None else mw / 1000.0
        if self.source == INTEGRATED:  # pre-Ampere only, see _fallback_source
            return self.nvml.nvmlDeviceGetPowerUsage(self.handle) / 1000.0
        return None

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (self._channel,)

    def read_joules(self) -> dict[str, float]:
        with self._lock:
            if self.has_counter:
                return {self._channel.key: self._counter_j()}
            return {self._channel.key: self._integrate()}

    def _counter_j(self) -> float:
        raw = self._counter_mj()
        if raw < self._last_raw:  # driver reload or wrap: keep what was counted so far
            self.reloads += 1
            self._offset_mj += self._last_raw
            warnings.warn(
                f"GPU {self.index}: the NVML energy counter went backwards (driver reload); "
                "energy between the last two reads is lost and the window is flagged",
                stacklevel=4,
            )
        self._last_raw = raw
        return (raw + self._offset_mj - self._raw0) / 1000.0

    def _integrate(self) -> float:
        t, p = self.clock(), self._power_now_w()
        if p is not None and self._last_p is not None:
            self._integrated_j += 0.5 * (p + self._last_p) * (t - self._last_t)
        self._last_t, self._last_p = t, p
        return self._integrated_j

    def read_power_w(self) -> dict[str, float] | None:
        p = self._power_now_w() if self.has_instant else None
        return None if p is None else {self._channel.key: p}

    def read_power_sample(self) -> tuple[float, float] | None:
        """(time on this meter's clock, W) of the latest instant-power value, by its timestamp."""
        s = self._instant_field() if self.has_instant else None
        if s is None:
            return None
        return s[0] / 1e6 + self._clock_offset(), s[1] / 1000.0

    def _clock_offset(self) -> float:
        """Seconds to add to a time since 1970 to get this meter's clock; taken afresh (two
        clock reads) so a long-lived meter follows the wall clock's adjustments."""
        if self._wall is None:
            return self._epoch_to_clock
        return self.clock() - self._wall()

    # ---- update period ------------------------------------------------------------------

    def measure_update_period(self, changes: int = 4, timeout_s: float = 2.0,
                              note: boards.BoardFacts | None = None) -> float | None:  # fmt: skip
        """Poll the counter every millisecond and time its changes; the median gap. Each whole
        period seen is also given to `note` (for the instant window)."""
        if not self.has_counter:
            return None
        times, raws, last, start = [], [], self._counter_mj(), self.clock()
        prev_t = start
        while len(times) < changes and self.clock() - start < timeout_s:
            self.sleep(0.001)
            t0 = self.clock()
            raw = self._counter_mj()
            if raw != last:
                times.append(0.5 * (prev_t + t0))
                raws.append(raw)
                last = raw
                if note is not None and len(raws) >= 2 and self.has_instant:
                    mw = self._instant_mw()
                    if mw is not None:
                        note.note((raws[-1] - raws[-2]) / 1000, times[-1] - times[-2], mw / 1000)
            prev_t = t0
        gaps = [b - a for a, b in zip(times, times[1:])]
        return statistics.median(gaps) if gaps else None

    def update_period_s(self) -> float | None:
        return self._period

    def instant_window_s(self) -> float | None:
        """The instant field's averaging window of this board: as benchmarks/gpu_check.py
        measured it with a square wave (TOKENWATT_SENSOR_FILE) where that file names the board,
        else the running estimate from dated updates (boards.py); None until either exists."""
        if not self.has_instant:
            return None
        value = sensor_calibration(self.uuid).get("instant_window_s")
        return float(value) if value else self.facts.instant_window_s

    def note_update(self, energy_j: float, seconds: float, instant_w: float) -> None:
        """The sampler's hook: one dated update period, for the instant window's estimate."""
        self.facts.note(energy_j, seconds, instant_w)

    # ---- metadata -----------------------------------------------------------------------

    def edge_state(self) -> dict[str, Any]:
        nv, h, out = self.nvml, self.handle, {"gpu": self.index}
        probes = {
            "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
            "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "power_w": self._power_now_w,
        }
        for key, probe in probes.items():
            try:
                out[key] = probe()
            except Exception:  # a probe NVML refuses is left out, never fatal at an edge
                out[key] = None
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            nvml_index=self.index,
            uuid=self.uuid,
            pci_bus_id=self.pci_bus_id,
            device_name=self.device_name,
            architecture=self.arch,
            source=self.source,
            instant_power_field=self.has_instant,
            update_period_s=self._period,
            **self._window_description(),
            power_limit_w=self.power_limit_w,
            other_processes=self.other_processes,
            driver_reloads=self.reloads,
            simulated=self.simulated,
        )
        return d

    def _window_description(self) -> dict[str, Any]:
        if not self.has_instant:
            return {}
        calibrated = sensor_calibration(self.uuid)
        if calibrated.get("instant_window_s"):
            return {
                "instant_window_s": float(calibrated["instant_window_s"]),
                "instant_window_source": calibrated.get("source") or SENSOR_FILE_ENV,
            }
        return self.facts.describe()

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


SENSOR_FILE_ENV = "TOKENWATT_SENSOR_FILE"


def sensor_calibration(uuid: str) -> dict[str, Any]:
    """What gpu_check measured on the board with this UUID: its `sensor.json` (named by
    TOKENWATT_SENSOR_FILE) holds {"boards": {uuid: {"instant_window_s", "update_period_s",
    "source"}}}. {} when there is no file or no entry."""
    import json

    path = os.environ.get(SENSOR_FILE_ENV)
    if not path:
        return {}
    try:
        boards = json.loads(open(path, encoding="utf-8").read()).get("boards", {})
    except (OSError, ValueError):
        raise MeterUnavailable(f"{SENSOR_FILE_ENV}={path!r} is not a readable sensor.json; "
                               "fix the path or unset it") from None  # fmt: skip
    return dict(boards.get(uuid) or {})
