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

import importlib
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

COUNTER = "nvml-energy-counter"
INTEGRATED = "nvml-power-integrated"
MIG_FIX = (
    "MIG slices report the whole board's power, so per-slice energy would be attribution, not "
    "measurement; disable MIG (nvidia-smi -i N -mig 0) to measure, or use --meter estimate"
)


NVML_MODULE_ENV = "TOKENWATT_NVML_MODULE"


def import_pynvml(module: str | None = None) -> ModuleType:
    """The NVML binding: nvidia-ml-py's `pynvml`, or the module an explicit setting names.

    `TOKENWATT_NVML_MODULE=tokenwatt.sim.nvml` (or `module=`) chooses another implementation of
    the same functions, e.g. the simulated boards; everything after this call is the same code.
    """
    name = module or os.environ.get(NVML_MODULE_ENV) or "pynvml"
    try:
        nvml = importlib.import_module(name)
    except ImportError:
        if name != "pynvml":
            raise MeterUnavailable(f"{NVML_MODULE_ENV}={name!r} cannot be imported") from None
        raise MeterUnavailable(
            "NVML is not installed; pip install nvidia-ml-py (NVIDIA's own binding)"
        ) from None
    if name == "pynvml" and not hasattr(nvml, "_nvmlGetFunctionPointer"):
        raise MeterUnavailable(
            "an unofficial `pynvml` package shadows nvidia-ml-py; "
            "pip uninstall pynvml && pip install nvidia-ml-py"
        )
    return nvml


def nvml_init(nvml: ModuleType) -> None:
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as e:
        raise MeterUnavailable(
            f"NVML could not start ({e}); no NVIDIA driver is loaded on this machine. "
            "Install the driver or use --meter rapl/estimate"
        ) from None


_KEPT: set[int] = set()
_KEPT_LOCK = threading.Lock()


def keep_initialised(nvml: ModuleType) -> None:
    """Hold one NVML reference for the rest of the process (NVML counts inits), so closing a
    meter never makes the next open pay NVML's start-up again."""
    with _KEPT_LOCK:
        if id(nvml) not in _KEPT:
            nvml.nvmlInit()
            _KEPT.add(id(nvml))


def cuda_target(device: str, nvml: ModuleType) -> str | int:
    """The NVML identity (a UUID) of torch device `cuda[:N]`.

    torch's device UUID is used when CUDA is initialised (exact whatever CUDA_DEVICE_ORDER
    says); otherwise CUDA_VISIBLE_DEVICES is read, which may hold CUDA indexes, full or
    abbreviated UUIDs, or MIG instances (refused). Never an NVML index: NVML ignores
    CUDA_VISIBLE_DEVICES and numbers boards in its own order.
    """
    n = int(device.split(":")[1]) if ":" in device else 0
    uuid = _torch_uuid(n)
    if uuid:
        return uuid
    visible = cuda_visible()
    if visible is None:
        return cuda_entry_target(str(n), nvml)
    if n >= len(visible):
        raise MeterUnavailable(f"{device} is not among CUDA_VISIBLE_DEVICES={','.join(visible)}")
    return cuda_entry_target(visible[n], nvml)


def cuda_visible() -> list[str] | None:
    """CUDA_VISIBLE_DEVICES's entries; None when it is not set (CUDA sees every board)."""
    text = os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is None:
        return None
    return [v.strip() for v in text.split(",") if v.strip()]


def cuda_entry_target(entry: str, nvml: ModuleType) -> str:
    """The NVML UUID of one CUDA_VISIBLE_DEVICES entry: a UUID (or a unique prefix) as it is;
    a CUDA index through CUDA's own order of the boards (`cuda_order`)."""
    if entry.startswith("MIG-"):
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry} is a MIG instance; {MIG_FIX}")
    if entry.startswith("GPU-"):
        return _full_uuid(entry, nvml)
    if not entry.isdigit():
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry!r} is neither a CUDA index "
                               "nor a GPU UUID")  # fmt: skip
    order = cuda_order(nvml)
    if int(entry) >= len(order):
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {entry} names no board: NVML "
                               f"lists {len(order)}")  # fmt: skip
    return order[int(entry)]


def cuda_order(nvml: ModuleType) -> list[str]:
    """UUIDs of every board in the order CUDA numbers them when CUDA_VISIBLE_DEVICES is unset.

    With CUDA_DEVICE_ORDER=PCI_BUS_ID that is PCI bus order. Under the default FASTEST_FIRST,
    CUDA ranks boards by speed and breaks ties by PCI bus id, so on identical boards it is PCI
    bus order too; on mixed boards the ranking is CUDA's own, and an index cannot be trusted
    to name a board here: the fix is CUDA_DEVICE_ORDER=PCI_BUS_ID, or UUIDs.
    """
    boards = []
    for i in range(nvml.nvmlDeviceGetCount()):
        h = nvml.nvmlDeviceGetHandleByIndex(i)
        bus = normal_bus_id(_text(nvml.nvmlDeviceGetPciInfo(h).busId))
        boards.append((bus, _text(nvml.nvmlDeviceGetUUID(h)), _text(nvml.nvmlDeviceGetName(h))))
    boards.sort()
    by_pci = os.environ.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST") == "PCI_BUS_ID"
    if not by_pci and len({name for _, _, name in boards}) > 1:
        raise MeterUnavailable(
            "CUDA indexes cannot be matched to NVML boards here: the boards differ and "
            "CUDA_DEVICE_ORDER is FASTEST_FIRST (CUDA's own ranking); set "
            "CUDA_DEVICE_ORDER=PCI_BUS_ID or give boards by UUID (nvidia-smi -L)"
        )
    return [uuid for _, uuid, _ in boards]


def uuid_of_bus_id(bus_id: str, nvml: ModuleType) -> str:
    """The UUID of the board at a PCI bus id (any of the usual spellings)."""
    try:
        handle = nvml.nvmlDeviceGetHandleByPciBusId(normal_bus_id(bus_id))
    except nvml.NVMLError as e:
        raise MeterUnavailable(f"no GPU at PCI bus id {bus_id} ({e}); `nvidia-smi -q | grep "
                               "Bus` lists them") from None  # fmt: skip
    return _text(nvml.nvmlDeviceGetUUID(handle))


def torch_board(n: int) -> str | None:
    """The NVML identity of CUDA device n as torch sees it: its UUID, else its PCI bus id
    (None when torch has not imported CUDA or cannot say)."""
    uuid = _torch_uuid(n)
    if uuid:
        return uuid
    import sys

    torch = sys.modules.get("torch")
    try:
        props = torch.cuda.get_device_properties(n)  # type: ignore[union-attr]
        return f"{props.pci_domain_id:08X}:{props.pci_bus_id:02X}:{props.pci_device_id:02X}.0"
    except Exception:
        return None


def _torch_uuid(n: int) -> str | None:
    import sys

    torch = sys.modules.get("torch")  # never import torch just for this
    try:
        if torch is None or not torch.cuda.is_available():
            return None
        text = str(torch.cuda.get_device_properties(n).uuid)
    except Exception:
        return None
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def _full_uuid(prefix: str, nvml: ModuleType) -> str:
    """CUDA accepts unique UUID prefixes; NVML wants the full UUID."""
    matches = []
    for i in range(nvml.nvmlDeviceGetCount()):
        uuid = _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
        if uuid.startswith(prefix):
            matches.append(uuid)
    if len(matches) != 1:
        raise MeterUnavailable(f"CUDA_VISIBLE_DEVICES entry {prefix} matches {len(matches)} GPUs")
    return matches[0]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def board_target(spec: str | int, nvml: ModuleType) -> int | str:
    """A `measure.gpus` entry as NvmlMeter takes it: an NVML index, a full UUID, or a PCI bus id.

    Accepts an index ("0"), a UUID or a unique UUID prefix ("GPU-5d3c..."), or a PCI bus id in
    NVML's form ("00000000:3B:00.0") or short ("3b:00.0"). NVML indexes are NVML's own order,
    not CUDA's: CUDA_VISIBLE_DEVICES does not renumber them.
    """
    text = str(spec).strip()
    if text.isdigit():
        return int(text)
    if text.startswith("MIG-"):
        raise MeterUnavailable(f"measure.gpus: {text} is a MIG instance; {MIG_FIX}")
    if text.startswith("GPU-"):
        return _full_uuid(text, nvml)
    if ":" in text:
        return normal_bus_id(text)
    raise MeterUnavailable(
        f"measure.gpus: {text!r} is not an NVML index, a GPU UUID (GPU-...) or a PCI bus id "
        "(00000000:3B:00.0); `nvidia-smi -L` lists them"
    )


def normal_bus_id(text: str) -> str:
    """NVML's 8-hex-digit-domain form of a PCI bus id, upper case: 00000000:3B:00.0."""
    parts = text.upper().split(":")
    if len(parts) == 2:
        parts.insert(0, "0")
    domain, bus, devfn = parts[-3:]
    return f"{int(domain, 16):08X}:{bus.zfill(2)}:{devfn}"


class NvmlMeter(Meter):
    """Energy of one GPU board. `target`: NVML index, UUID ("GPU-...") or PCI bus id."""

    name = "nvml"

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

    def _board_facts(self) -> boards.BoardFacts:
        try:
            driver = _text(self.nvml.nvmlSystemGetDriverVersion())
        except self.nvml.NVMLError:
            driver = "?"
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
        self.other_processes = self._other_processes()
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

    def _other_processes(self) -> list[int]:
        pids = self.other_pids()
        if pids:
            warnings.warn(
                f"GPU {self.index}: other processes use this board (pids {pids}); NVML reads the "
                "whole board, so their energy is counted too",
                stacklevel=3,
            )
        return pids

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
            return {"instant_window_s": float(calibrated["instant_window_s"]),
                    "instant_window_source": calibrated.get("source") or SENSOR_FILE_ENV}
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
