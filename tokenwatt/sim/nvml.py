"""A simulated NVML library: the pynvml functions tokenwatt calls, over a known power profile.

It reproduces what the SC'24 study (Yang, Adámek, Armour) found on A100/H100 boards:
- the energy counter (`nvmlDeviceGetTotalEnergyConsumption`, mJ) changes only at sensor
  updates, every `period_s` (100 ms; `period_jitter_s` varies each gap, seeded, as real
  boards do), holding the exact energy up to the last update;
- `NVML_FI_DEV_POWER_INSTANT` is the average over the last `instant_window_s` (25 ms on
  A100/H100; configurable, since other boards differ) of each period, published at the update
  with that update's timestamp (µs since 1970);
- `nvmlDeviceGetPowerUsage` is a 1 s moving average, refreshed at each update;
- errors on demand (`inject_error`, real NVML codes raised as the real `pynvml.NVMLError_*`
  classes) and a driver reload on demand (`reload_driver`: the counter restarts near zero).

Constants and error classes come from the installed nvidia-ml-py, so code under test catches
exactly what it would catch on hardware. Install it as `pynvml` with `tokenwatt.sim.shim_dir()`
first on PYTHONPATH (configured from TOKENWATT_SIM_* variables, see `install_from_env`), or pass
this module as `nvml=` to `NvmlMeter` in-process. The clock is injectable, so benchmarks drive
simulated time deterministically.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType, SimpleNamespace
from typing import Any

from tokenwatt.sim.profiles import PiecewiseProfile, constant
from tokenwatt.sim.ticks import TickSchedule

TOKENWATT_SIMULATED = True


def _real_pynvml() -> ModuleType:
    """The installed nvidia-ml-py, even when this module shadows it as `pynvml`."""
    shim = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim")
    mod = sys.modules.get("pynvml")
    if mod is not None and not os.path.abspath(getattr(mod, "__file__", "")).startswith(shim):
        return mod
    if "_tokenwatt_real_pynvml" in sys.modules:
        return sys.modules["_tokenwatt_real_pynvml"]
    paths = [p for p in sys.path if os.path.abspath(p or ".") != shim]
    spec = importlib.machinery.PathFinder.find_spec("pynvml", paths)
    if spec is None or not spec.origin:
        raise ImportError("tokenwatt.sim needs nvidia-ml-py installed: pip install nvidia-ml-py")
    if mod is None and importlib.util.find_spec("pynvml").origin == spec.origin:
        return importlib.import_module("pynvml")  # not shadowed: share the one real module
    name = "_tokenwatt_real_pynvml"
    spec = importlib.util.spec_from_file_location(name, spec.origin)
    real = importlib.util.module_from_spec(spec)
    sys.modules[name] = real  # its error classes look their module up by this name
    spec.loader.exec_module(real)
    return real


real = _real_pynvml()
for _name in dir(real):
    if _name.startswith(("NVML_", "NVMLError", "c_nvml")) or _name == "nvmlExceptionClass":
        globals()[_name] = getattr(real, _name)
NVMLError = real.NVMLError


@dataclass
class SimGPU:
    index: int
    profile: PiecewiseProfile
    name: str = "NVIDIA H100 80GB HBM3 (simulated)"
    arch: int = real.NVML_DEVICE_ARCH_HOPPER
    period_s: float = 0.1
    instant_window_s: float = 0.025
    average_window_s: float = 1.0
    phase_s: float = 0.0  # sensor updates at phase_s + k * period_s (sim time)
    period_jitter_s: float = 0.0  # each gap is period_s + U(-jitter, +jitter)
    seed: int = 0  # of the jitter
    stamp_offset_s: float = 0.0  # a driver that stamps the instant field off its update
    power_limit_w: float = 700.0
    has_counter: bool = True
    has_instant: bool = True
    mig: bool = False
    other_pids: list[int] = field(default_factory=list)
    base_mj: int = 987_654_321  # the counter runs since the driver loaded, not since we opened
    zero_j: float = 0.0
    bus: int | None = None  # PCI bus number (default 0x17 + 0x20 x index: NVML order = PCI)

    @property
    def uuid(self) -> str:
        return f"GPU-{self.index:x}157a1e0-0000-4000-8000-{self.index:012d}"

    @property
    def pci_bus_id(self) -> str:
        bus = 0x17 + 0x20 * self.index if self.bus is None else self.bus
        return f"00000000:{bus:02X}:00.0"

    def __post_init__(self) -> None:
        self.schedule = TickSchedule(self.period_s, self.period_jitter_s, self.phase_s,
                                     self.seed + 7919 * self.index)  # fmt: skip

    def tick(self, t: float) -> float:
        """The last sensor update at or before sim time t."""
        return self.schedule.last_at_or_before(t)

    def ticks(self, t0: float, t1: float) -> list[float]:
        """Every sensor update in (t0, t1], sim time: the ground truth of update times."""
        return self.schedule.between(t0, t1)

    def counter_mj(self, t: float) -> int:
        return int(self.base_mj + 1000.0 * (self.profile.cumulative(self.tick(t)) - self.zero_j))

    def window_mw(self, t: float, window: float) -> int:
        tk = self.tick(t)
        return int(round(1000.0 * self.profile.energy(tk - window, tk) / window))


@dataclass
class _State:
    clock: Callable[[], float] = time.perf_counter
    wall: Callable[[], float] = time.time
    origin: float = 0.0
    gpus: list[SimGPU] = field(default_factory=list)
    errors: dict[str, list[int]] = field(default_factory=dict)
    initialized: int = 0
    epoch_offset_s: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)
    generation: int = 0  # bumped by configure: the driver version says the boards changed


STATE = _State()


# Boards of one machine are not synchronised: board i's sensor publishes this fraction of a
# period after board 0's (0.37 spreads any number of boards over the period without repeats).
PHASE_STAGGER = 0.37


def configure(
    gpus: int = 1,
    power: float | PiecewiseProfile | list[float | PiecewiseProfile] = 300.0,
    clock: Callable[[], float] | None = None,
    wall: Callable[[], float] | None = None,
    boards: list[dict[str, Any]] | None = None,
    **gpu_kwargs: Any,
) -> list[SimGPU]:
    """Reset the simulation: `gpus` boards following `power` (watts or profiles, one per board
    when a list) from now. `gpu_kwargs` go to every board, `boards[i]` to board i only (e.g.
    {"other_pids": [...]} or {"bus": 0x81}). Without a `phase_s`, board i's updates come
    PHASE_STAGGER x i of a period after board 0's, as unsynchronised boards' do."""
    profiles = power if isinstance(power, list) else [power] * gpus
    profiles = [p if isinstance(p, PiecewiseProfile) else constant(p) for p in profiles]
    STATE.clock = clock or time.perf_counter
    STATE.origin = STATE.clock()
    STATE.wall = wall or getattr(STATE.clock, "wall", time.time)
    STATE.epoch_offset_s = STATE.wall() - STATE.clock()  # clock time -> seconds since 1970
    STATE.gpus = [SimGPU(i, p, **_board_kwargs(i, gpu_kwargs, boards))
                  for i, p in enumerate(profiles)]  # fmt: skip
    STATE.errors = {}
    STATE.calls = {}
    STATE.generation += 1
    return STATE.gpus


def _board_kwargs(i: int, common: dict[str, Any],
                  boards: list[dict[str, Any]] | None) -> dict[str, Any]:  # fmt: skip
    kwargs = {**common, **(boards[i] if boards and i < len(boards) else {})}
    if "phase_s" not in kwargs:
        period = kwargs.get("period_s", SimGPU.period_s)
        kwargs["phase_s"] = (PHASE_STAGGER * i % 1.0) * period
    return kwargs


def now() -> float:
    """Simulated time: seconds since `configure`."""
    return STATE.clock() - STATE.origin


def inject_error(function: str, code: int, times: int = 1) -> None:
    """Make the next `times` calls of `function` raise NVMLError(code)."""
    STATE.errors.setdefault(function, []).extend([code] * times)


def reload_driver(index: int = 0) -> None:
    """The driver reloads now: the energy counter restarts from zero."""
    gpu = STATE.gpus[index]
    gpu.zero_j = gpu.profile.cumulative(gpu.tick(now()))
    gpu.base_mj = 0


def _enter(fn: str) -> None:
    STATE.calls[fn] = STATE.calls.get(fn, 0) + 1
    if not STATE.initialized and fn != "nvmlInit":
        raise NVMLError(real.NVML_ERROR_UNINITIALIZED)
    codes = STATE.errors.get(fn)
    if codes:
        raise NVMLError(codes.pop(0))


def _gpu(handle: Any) -> SimGPU:
    if not isinstance(handle, SimGPU):
        raise NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
    return handle


# ---- the pynvml functions ----------------------------------------------------------------


def nvmlInit() -> None:
    _enter("nvmlInit")
    if not STATE.gpus:
        install_from_env()
    STATE.initialized += 1


def nvmlShutdown() -> None:
    _enter("nvmlShutdown")
    STATE.initialized = max(STATE.initialized - 1, 0)


def nvmlSystemGetDriverVersion() -> str:
    _enter("nvmlSystemGetDriverVersion")
    # A new configuration is a new machine: what was measured about the old boards is stale.
    return f"570.00-sim{STATE.generation}"


def nvmlDeviceGetCount() -> int:
    _enter("nvmlDeviceGetCount")
    return len(STATE.gpus)


def nvmlDeviceGetHandleByIndex(index: int) -> SimGPU:
    _enter("nvmlDeviceGetHandleByIndex")
    if not 0 <= int(index) < len(STATE.gpus):
        raise NVMLError(real.NVML_ERROR_INVALID_ARGUMENT)
    return STATE.gpus[int(index)]


def nvmlDeviceGetHandleByUUID(uuid: str | bytes) -> SimGPU:
    _enter("nvmlDeviceGetHandleByUUID")
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    for gpu in STATE.gpus:
        if gpu.uuid == text:
            return gpu
    raise NVMLError(real.NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetHandleByPciBusId(bus_id: str | bytes) -> SimGPU:
    _enter("nvmlDeviceGetHandleByPciBusId")
    text = (bus_id.decode() if isinstance(bus_id, bytes) else str(bus_id)).upper()
    for gpu in STATE.gpus:
        if gpu.pci_bus_id == text:
            return gpu
    raise NVMLError(real.NVML_ERROR_NOT_FOUND)


def nvmlDeviceGetPciInfo(handle: Any) -> Any:
    _enter("nvmlDeviceGetPciInfo")
    gpu = _gpu(handle)
    return SimpleNamespace(busId=gpu.pci_bus_id, busIdLegacy=gpu.pci_bus_id[4:])


def nvmlDeviceGetIndex(handle: Any) -> int:
    _enter("nvmlDeviceGetIndex")
    return _gpu(handle).index


def nvmlDeviceGetName(handle: Any) -> str:
    _enter("nvmlDeviceGetName")
    return _gpu(handle).name


def nvmlDeviceGetUUID(handle: Any) -> str:
    _enter("nvmlDeviceGetUUID")
    return _gpu(handle).uuid


def nvmlDeviceGetArchitecture(handle: Any) -> int:
    _enter("nvmlDeviceGetArchitecture")
    return _gpu(handle).arch


def nvmlDeviceGetMigMode(handle: Any) -> list[int]:
    _enter("nvmlDeviceGetMigMode")
    gpu = _gpu(handle)
    if gpu.arch < real.NVML_DEVICE_ARCH_AMPERE:
        raise NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
    mode = real.NVML_DEVICE_MIG_ENABLE if gpu.mig else real.NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetTotalEnergyConsumption(handle: Any) -> int:
    _enter("nvmlDeviceGetTotalEnergyConsumption")
    gpu = _gpu(handle)
    if not gpu.has_counter:
        raise NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
    return gpu.counter_mj(now())


def nvmlDeviceGetPowerUsage(handle: Any) -> int:
    _enter("nvmlDeviceGetPowerUsage")
    gpu = _gpu(handle)
    return gpu.window_mw(now(), gpu.average_window_s)


def nvmlDeviceGetFieldValues(handle: Any, fieldIds: list[Any]) -> Any:
    _enter("nvmlDeviceGetFieldValues")
    gpu = _gpu(handle)
    t = now()
    tick = gpu.tick(t)
    values = (real.c_nvmlFieldValue_t * len(fieldIds))()
    for v, fid in zip(values, fieldIds):
        fid, scope = fid if isinstance(fid, tuple) else (fid, 0)
        v.fieldId, v.scopeId = fid, scope
        v.timestamp = int((STATE.origin + tick + gpu.stamp_offset_s + STATE.epoch_offset_s) * 1e6)
        v.valueType = real.NVML_VALUE_TYPE_UNSIGNED_INT
        v.nvmlReturn = real.NVML_SUCCESS
        if fid == real.NVML_FI_DEV_POWER_INSTANT and gpu.has_instant:
            v.value.uiVal = gpu.window_mw(t, gpu.instant_window_s)
        elif fid == real.NVML_FI_DEV_POWER_AVERAGE:
            v.value.uiVal = gpu.window_mw(t, gpu.average_window_s)
        else:
            v.nvmlReturn = real.NVML_ERROR_NOT_SUPPORTED
    return values


def nvmlDeviceGetSamples(device: Any, sampling_type: int, timeStamp: int) -> tuple[int, list[Any]]:
    """Buffered power samples (one per sensor update, last second) newer than timeStamp µs."""
    _enter("nvmlDeviceGetSamples")
    gpu = _gpu(device)
    if sampling_type != real.NVML_TOTAL_POWER_SAMPLES:
        raise NVMLError(real.NVML_ERROR_NOT_SUPPORTED)
    t, out = now(), []
    for tk in gpu.ticks(t - 1.0, t):
        us = int((STATE.origin + tk + STATE.epoch_offset_s) * 1e6)
        if us > timeStamp:
            mw = gpu.window_mw(tk, gpu.instant_window_s)
            out.append(SimpleNamespace(timeStamp=us, sampleValue=SimpleNamespace(uiVal=mw)))
    return real.NVML_VALUE_TYPE_UNSIGNED_INT, out


def nvmlDeviceGetEnforcedPowerLimit(handle: Any) -> int:
    _enter("nvmlDeviceGetEnforcedPowerLimit")
    return int(_gpu(handle).power_limit_w * 1000)


def nvmlDeviceGetPowerManagementLimit(handle: Any) -> int:
    _enter("nvmlDeviceGetPowerManagementLimit")
    return int(_gpu(handle).power_limit_w * 1000)


def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:
    _enter("nvmlDeviceGetTemperature")
    gpu = _gpu(handle)
    return int(30 + 0.06 * gpu.window_mw(now(), gpu.average_window_s) / 1000)


def nvmlDeviceGetClockInfo(handle: Any, type: int) -> int:  # noqa: A002 - pynvml's name
    _enter("nvmlDeviceGetClockInfo")
    gpu = _gpu(handle)
    if type == NVML_CLOCK_MEM:  # noqa: F821 - copied from the real binding above
        return 2619  # an H100 SXM's HBM3 clock, which does not follow the load
    return 1980 if gpu.window_mw(now(), gpu.average_window_s) > 150_000 else 345


def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[Any]:
    _enter("nvmlDeviceGetComputeRunningProcesses")
    pids = _gpu(handle).other_pids
    return [SimpleNamespace(pid=p, usedGpuMemory=1 << 30) for p in pids]


# ---- configuration from the environment (the `pynvml` shim) -------------------------------


def install_from_env(env: dict[str, str] | None = None) -> list[SimGPU]:
    """Configure from TOKENWATT_SIM_* variables.

    TOKENWATT_SIM_POWER_W   constant board power in W (default 300); a comma-separated list
                            gives each board its own (e.g. 61,74: boards idle differently)
    TOKENWATT_SIM_PROFILE   steady|steps|spikes|bursts|phases instead of a constant (seeded, 120 s)
    TOKENWATT_SIM_GPUS      number of boards (default 1)
    TOKENWATT_SIM_PERIOD_MS sensor update period (default 100)
    TOKENWATT_SIM_JITTER_MS each update gap varies by up to this much (default 0)
    TOKENWATT_SIM_INSTANT_MS averaging window of the instant power field (default 25)
    TOKENWATT_SIM_NO_COUNTER=1  no energy counter (pre-Volta): the meter must fall back
    TOKENWATT_SIM_ARCH      NVML architecture number (default 9, Hopper)
    TOKENWATT_SIM_MIG=1     MIG mode enabled
    TOKENWATT_SIM_OTHER_PIDS  comma-separated pids of other processes on every board;
                            PID@B puts one on board B only
    TOKENWATT_SIM_PHASE_MS  comma-separated update phases per board (default: staggered)
    TOKENWATT_SIM_ERRORS    function:code[:times],... raised on the next calls
    """
    env = dict(os.environ if env is None else env)
    kwargs: dict[str, Any] = {
        "period_s": float(env.get("TOKENWATT_SIM_PERIOD_MS", "100")) / 1000.0,
        "period_jitter_s": float(env.get("TOKENWATT_SIM_JITTER_MS", "0")) / 1000.0,
        "instant_window_s": float(env.get("TOKENWATT_SIM_INSTANT_MS", "25")) / 1000.0,
        "has_counter": env.get("TOKENWATT_SIM_NO_COUNTER", "") not in ("1", "true"),
        "arch": int(env.get("TOKENWATT_SIM_ARCH", str(real.NVML_DEVICE_ARCH_HOPPER))),
        "mig": env.get("TOKENWATT_SIM_MIG", "") in ("1", "true"),
    }
    n = int(env.get("TOKENWATT_SIM_GPUS", "1"))
    boards: list[dict[str, Any]] = [{"other_pids": []} for _ in range(n)]
    for spec in filter(None, env.get("TOKENWATT_SIM_OTHER_PIDS", "").split(",")):
        pid, _, board = spec.partition("@")
        for i in [int(board)] if board else range(n):
            boards[i]["other_pids"].append(int(pid))
    for i, ms in enumerate(filter(None, env.get("TOKENWATT_SIM_PHASE_MS", "").split(","))):
        if i < n:
            boards[i]["phase_s"] = float(ms) / 1000.0
    watts = [float(w) for w in env.get("TOKENWATT_SIM_POWER_W", "300").split(",") if w]
    power: Any = [watts[i % len(watts)] for i in range(n)] if len(watts) > 1 else watts[0]
    if env.get("TOKENWATT_SIM_PROFILE"):
        from tokenwatt.sim.profiles import PROFILES

        power = PROFILES[env["TOKENWATT_SIM_PROFILE"]]()
    gpus = configure(n, power, boards=boards, **kwargs)
    for spec in filter(None, env.get("TOKENWATT_SIM_ERRORS", "").split(",")):
        fn, code, *times = spec.split(":")
        inject_error(fn, int(code), int(times[0]) if times else 1)
    return gpus
