"""`tokenwatt.Monitor`: named, nested and overlapping energy windows over one shared sampler.

    mon = tokenwatt.Monitor()                 # the NVIDIA boards NVML sees, else RAPL/estimate
    mon.begin_window("step")
    ...                                       # the code to measure
    m = mon.end_window("step")                # returns at once (tens of microseconds)
    m.joules, m.joules_err, m.seconds, m.avg_power_w, m.by_channel, m.labels, m.quality
    mon.read()                                # energy since the monitor started, so far
    mon.close()

The meters are opened once (their update period is measured once per board per process,
`meters/boards.py`) and one sampler dates every counter update for the monitor's life. A
window's edges are two clock marks and meter reads, taken after a device synchronisation;
nothing waits at either edge. The energy is computed on first access: that waits, if it has not
come yet, for the counter update that closes the end's period (at most about one update
period, 100 ms on NVML; two without an instant-power field), then attributes the counter to the
window (attribution.py): exact whole periods, each edge period split by the model its evidence
supports, with an uncertainty. Windows are independent: any number may be open at once.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from tokenwatt.energy.meters.base import Channel, Meter, labels
from tokenwatt.energy.recorder import Mark, evaluate, read_all, reloads
from tokenwatt.energy.sampler import Sampler
from tokenwatt.errors import UserError

PINNED_SAMPLES = 6  # the first samples of each meter stay, so read() can reach the start


class Measurement:
    """The energy of one window; computed on first access of an energy figure.

    seconds, joules (all channels), joules_err (one standard deviation, from the split of the
    edge periods), avg_power_w, by_channel, by_device, labels (scope, source, measured),
    quality (flags, updates seen/expected, update period, ...), trace, meters.
    """

    def __init__(self, name: str = "", channels: list[Channel] | None = None) -> None:
        self.name = name
        self.channels = list(channels or [])
        self.seconds = math.nan
        self._source: Callable[[], dict[str, Any]] | None = None
        self._data: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def _bind(self, seconds: float, source: Callable[[], dict[str, Any]]) -> None:
        self.seconds, self._source = seconds, source

    @property
    def ready(self) -> bool:
        """Whether the energy is computed (else the first access computes it)."""
        return self._data is not None

    def _get(self) -> dict[str, Any]:
        with self._lock:
            if self._data is None:
                if self._source is None:  # the window has not ended
                    return {"by_channel": {}, "err": {}, "quality": {}, "trace": [],
                            "meters": []}  # fmt: skip
                self._data, self._source = self._source(), None
            return self._data

    @property
    def by_channel(self) -> dict[str, float]:
        return self._get()["by_channel"]

    @property
    def joules(self) -> float:
        got = self.by_channel
        return sum(got.values()) if got else math.nan

    @property
    def joules_err(self) -> float:
        err = self._get()["err"]
        return math.sqrt(sum(v * v for v in err.values())) if err else math.nan

    @property
    def avg_power_w(self) -> float:
        return self.joules / self.seconds if self.seconds and self.seconds > 0 else math.nan

    @property
    def quality(self) -> dict[str, Any]:
        return self._get()["quality"]

    @property
    def trace(self) -> list[dict[str, Any]]:
        return self._get()["trace"]

    @property
    def meters(self) -> list[dict[str, Any]]:
        return self._get()["meters"]

    @property
    def by_device(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for c in self.channels:
            name = f"{c.device_name or c.key} ({c.scope})"
            out[name] = out.get(name, 0.0) + self.by_channel.get(c.key, 0.0)
        return out

    @property
    def labels(self) -> dict[str, Any]:
        got = labels(self.channels)
        return {"scope": got["energy_scope"], "source": got["energy_source"],
                "measured": got["measured"]}  # fmt: skip

    def __repr__(self) -> str:
        if not self.ready:
            return f"Measurement({self.name!r}, seconds={self.seconds:.6g}, not computed yet)"
        return (f"Measurement({self.name!r}, seconds={self.seconds:.6g}, "
                f"joules={self.joules:.6g} ± {self.joules_err:.2g})")  # fmt: skip


class Monitor:
    """Energy windows over one set of meters and one background sampler.

    gpus: the NVML boards to measure (indexes, UUIDs or PCI bus ids); meter: auto | nvml | rapl
    | estimate; device: where the measured code runs, synchronised at every window edge
    ("auto", resolved by placement.region_placement: the NVIDIA boards this process may use
    are measured even if torch was never imported; where it sees none, the CPU with RAPL or
    the labelled CPU estimate).
    meters: already open meters to use (not closed by the monitor).
    """

    def __init__(self, gpus: list[str] | None = None, meter: str = "auto",
                 device: str = "auto", sample_interval_ms: float = 20.0,
                 cpu_tdp_w: float | None = None, meters: list[Meter] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 driver: Any = None) -> None:  # fmt: skip
        from tokenwatt.energy.meters.select import open_meters
        from tokenwatt.placement import region_placement

        place = region_placement(device, gpus, meter)
        self.device = place.device
        self._owned = meters is None
        self.meters = meters if meters is not None else open_meters(
            meter, place.measured, device=place.device, cpu_tdp_w=cpu_tdp_w)  # fmt: skip
        self.channels = [c for m in self.meters for c in m.channels]
        self.clock = clock
        self.sampler = Sampler(self.meters, sample_interval_ms / 1000.0, clock=clock,
                               driver=driver)  # fmt: skip
        self.sampler.on_exit = self._release
        self.sampler.keep_from = self._keep_from
        self._longest = max([lane.period for lane in self.sampler.lanes if lane.period] or [0.0])
        self._lock = threading.Lock()
        self._open: dict[str, tuple[Mark, int]] = {}
        self._pending: weakref.WeakSet[Measurement] = weakref.WeakSet()
        self._last_end = -math.inf
        self.closed = False
        self._released = False
        self.sampler.pinned = PINNED_SAMPLES
        self.sampler.start()
        self._origin = self._mark("monitor", sync=False)
        self._origin_reloads = reloads(self.meters)

    # ---- windows ------------------------------------------------------------------------

    def begin_window(self, name: str, sync: bool = True) -> None:
        """Start window `name` (after synchronising the device, unless sync=False)."""
        if self.closed:
            raise UserError(f"Monitor.begin_window({name!r}): the monitor is closed")
        if name in self._open:
            raise UserError(f"Monitor.begin_window({name!r}): a window of that name is open; "
                            "end it first or use another name")  # fmt: skip
        mark = self._mark(name, sync)
        with self._lock:
            self._open[name] = (mark, reloads(self.meters))

    def end_window(self, name: str, sync: bool = True,
                   into: Measurement | None = None) -> Measurement:  # fmt: skip
        """End window `name`; returns at once, the energy is computed on first access.
        `into`: fill this Measurement rather than a new one (what `measure` hands out)."""
        with self._lock:
            got = self._open.pop(name, None)
        if got is None:
            raise UserError(f"Monitor.end_window({name!r}): no window of that name is open; "
                            f"open ones: {sorted(self._open) or 'none'}")  # fmt: skip
        return self._window(name, got, self._mark("end", sync), into)

    def read(self, name: str | None = None, sync: bool = True) -> Measurement:
        """The energy so far: of the open window `name`, or (None) since the monitor opened.
        The window stays open; the figure is computed on first access, like end_window's."""
        with self._lock:
            got = (self._open.get(name) if name is not None
                   else (self._origin, self._origin_reloads))  # fmt: skip
        if got is None:
            raise UserError(f"Monitor.read({name!r}): no window of that name is open")
        begin = got[0]
        return self._window(name or "monitor", (Mark(name or "monitor", begin.t, begin.joules),
                                                got[1]), self._mark("end", sync))  # fmt: skip

    @property
    def open_windows(self) -> list[str]:
        return sorted(self._open)

    def _mark(self, phase: str, sync: bool = True) -> Mark:
        if sync:
            from tokenwatt._util.devices import synchronize

            synchronize(self.device)
        return Mark(phase, self.clock(), read_all(self.meters))

    def _window(self, name: str, begin: tuple[Mark, int], end: Mark,
                into: Measurement | None = None) -> Measurement:  # fmt: skip
        mark0, reloads0 = begin
        marks = [Mark(name, mark0.t, mark0.joules), end]
        m = into if into is not None else Measurement(name, self.channels)
        m._t0 = mark0.t  # type: ignore[attr-defined]
        m._bind(end.t - mark0.t, lambda: self._compute(name, marks, reloads0))
        with self._lock:
            self._pending.add(m)
            self._last_end = max(self._last_end, end.t)
        return m

    def _compute(self, name: str, marks: list[Mark], reloads0: int) -> dict[str, Any]:
        flags: list[str] = []
        end = marks[-1].t
        if not self.sampler.has_ticks_after(end) and not self.sampler.wait_ticks_after(end):
            flags.append("no-update-after-end")
        phases, quality = evaluate(self.meters, self.sampler, marks, flags, reloads0=reloads0,
                                   changes_at_marks=False)  # fmt: skip
        pe = phases.get(name)
        period = quality.get("update_period_s") or 0.0
        return {
            "by_channel": {k: float(v) for k, v in pe.joules.items()} if pe else {},
            "err": dict(pe.joules_err) if pe else {},
            "quality": quality,
            "trace": self.sampler.trace(marks[0].t - period, end + period),
            "meters": [x.describe() for x in self.meters],
        }

    def _keep_from(self) -> float:
        """Samples older than every open window and every uncomputed measurement can go (the
        sampler asks when it prunes, every few hundred samples)."""
        with self._lock:
            starts = [mark.t for mark, _ in self._open.values()]
            starts += [m._t0 for m in list(self._pending) if not m.ready]  # type: ignore[attr-defined]
        oldest = min(starts) if starts else self.clock()
        return oldest - 4 * self._longest

    # ---- life ---------------------------------------------------------------------------

    def close(self, wait: bool = False) -> None:
        """No new windows; the sampler stops once every ended window has the update after its
        end (at once if none is waiting; after five update periods whatever happens), then the
        monitor's own meters close. wait=True blocks until then."""
        if self.closed:
            return
        self.closed = True
        last = self._last_end
        give_up = self.clock() + 5 * self._longest + 1.0  # a stalled counter: stop anyway
        self.sampler.until_done = lambda: (last == -math.inf or self.clock() > give_up
                                           or self.sampler.has_ticks_after(last))  # fmt: skip
        if self.sampler.until_done() or not self.sampler.running:
            self.sampler.stop()
        elif wait:
            self.sampler.wait_ticks_after(last)
            self.sampler.stop()

    def _release(self) -> None:
        if self._owned and not self._released:
            self._released = True
            for m in self.meters:
                m.close()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self.closed:
                self.close()
        except Exception:
            pass
