"""GPU boards measured where they run: a node's dcgm-exporter, or a Prometheus server that
scrapes it (`--meter dcgm`, `--meter prometheus`).

One `RemoteBoardMeter` per board, one channel `gpu<gpu label>` (on `meter_host`), read like
NVML's energy counter so the same sampler and attribution run over it:
- source `dcgm-energy-counter`: `DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION` (mJ since the driver
  loaded), relative to its value at open. It changes once per *collection interval* of the
  exporter (30 s by default, `-c` in ms), which is this meter's update period, measured from
  when the value changes (the Prometheus history when there is one, else by polling), never
  assumed. A drop below half the last value (a reloaded driver restarts near zero) is bridged
  and counted in `reloads`, so the window is flagged `driver-reload`.
- without the counter, `dcgm-power-integrated`: each new `DCGM_FI_DEV_POWER_USAGE` value taken
  to cover the interval since the previous one, added when it appears (a counter of its own,
  with the same period; the field's 1 s averaging is added to the dating lag).
- a page that stops changing for several intervals (a hung exporter) or cannot be fetched is a
  MeterError: inside a trial the trial is degraded with the reason; finished trials stay.
The values carry no time of their own (the exporter publishes none): a change is dated by the
polls that saw it. A value is DCGM's last sample, taken up to one interval before the exporter
published it (DCGM samples on its own schedule), and Prometheus adds up to a scrape interval:
that lag (`dating_lag_s`) moves both edges of a window alike, and widens each window's error
by its power difference across the edges (recorder.add_dating_lag). Inside a period nothing
says how the energy spreads: a cut there carries the period-to-period variation of the power
(attribution.CounterModel.shape_var).
"""

from __future__ import annotations

import http.client
import json
import math
import statistics
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

from tokenwatt.energy.meters.base import Channel, Meter
from tokenwatt.energy.meters.dcgm_text import (
    ENERGY,
    EXPORTER_INTERVAL_FLAG,
    POWER,
    Board,
    Selection,
    boards_of,
    check_named,
    parse_page,
    select,  # fmt: skip
)
from tokenwatt.errors import MeterError, MeterUnavailable

COUNTER = "dcgm-energy-counter"
INTEGRATED = "dcgm-power-integrated"
TIMEOUT_S = 5.0
RECONNECT = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
STALE_PERIODS = 4  # a counter unchanged this many intervals (and 2 s more) is a hung exporter
MIN_WINDOW_PERIODS = 4  # a window shorter than this many intervals is refused before the run
POWER_AVERAGE_S = 1.0  # DCGM_FI_DEV_POWER_USAGE: the board's 1 s average on Ampere and newer
PERIOD_TIMEOUT_S = 150.0  # measuring the interval by polling: 2 changes of a 60 s exporter


class _Http:
    """One kept-alive HTTP connection (polls come every few ms near an update: a new TCP
    connection each time would be most of the cost). Thread-safe."""

    def __init__(self, url: str, what: str) -> None:
        u = urllib.parse.urlsplit(url)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise MeterUnavailable(f"{what}: {url!r} is not an http(s) URL; give e.g. "
                                   "http://NODE:9400/metrics")  # fmt: skip
        self.url, self.u = url, u
        self._conn: http.client.HTTPConnection | None = None
        self._lock = threading.Lock()

    def get(self, path_query: str, ok: tuple[int, ...] = (200,)) -> str:
        """The body of a GET answered with a status in `ok`; any other is a MeterError."""
        with self._lock:
            for attempt in (0, 1):  # a kept-alive connection the server closed: once more
                try:
                    conn = self._conn or self._connect()
                    conn.request("GET", path_query, headers={"Accept": "text/plain"})
                    resp = conn.getresponse()
                    body = resp.read().decode("utf-8", "replace")
                except (OSError, http.client.HTTPException) as e:
                    self.close_locked()
                    # once more only for a kept-alive connection the server closed; a timeout
                    # or a refusal is the answer (a retry would hold the sampler another 5 s)
                    if attempt or not isinstance(e, RECONNECT):
                        why = getattr(e, "strerror", None) or type(e).__name__
                        raise MeterError(f"cannot read {self.url} ({why})") from None
                    continue
                if resp.status not in ok:
                    raise MeterError(f"{self.url} answered HTTP {resp.status}: {body[:120]!r}")
                return body
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.u.scheme == "https" else \
            http.client.HTTPConnection  # fmt: skip
        self._conn = cls(self.u.hostname, self.u.port, timeout=TIMEOUT_S)
        return self._conn

    def close_locked(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self.close_locked()


class ExporterSource:
    """A dcgm-exporter's /metrics page, shared by the meters of its node's boards: a page
    fetched within the last REUSE_S serves them all (one poll, not one per board)."""

    REUSE_S = 0.002
    scrape_interval_s: float | None = None  # read directly: no scrape between

    def __init__(self, url: str) -> None:
        self.where = url
        self.http = _Http(url, "measure.dcgm_url")
        u = self.http.u
        self.path = (u.path or "/metrics") + (f"?{u.query}" if u.query else "")
        self.measured: tuple[str, float] | None = None  # the interval, once a board measured it
        self._page: tuple[float, list[Board]] | None = None
        self._lock = threading.Lock()

    def fetch(self) -> list[Board]:
        with self._lock:
            now = time.monotonic()
            if self._page is None or now - self._page[0] > self.REUSE_S:
                self._page = (now, parse_page(self.http.get(self.path), self.where))
            return self._page[1]

    def history_period_s(self, board: Board) -> float | None:
        return None  # a page holds only the latest values: the interval is polled for

    def describe(self) -> dict[str, Any]:
        return {"dcgm_url": self.where}

    def close(self) -> None:
        self.http.close()


class PrometheusSource:
    """The exporter's series through a Prometheus server's HTTP query API: the raw samples of
    the selected series (a range selector evaluated at now, not rate() over an unknown range),
    the latest one at each read, the last minutes of them for the collection interval."""

    LOOKBACK_S = 120  # how far back a read looks for a series' latest sample
    HISTORY_S = 900

    def __init__(self, url: str, selector: str) -> None:
        self.where = f"{url.rstrip('/')} {selector}"
        self.http = _Http(url, "measure.prometheus_url")
        self.base = (self.http.u.path or "").rstrip("/")
        sel = selector.strip()
        if not (sel.startswith("{") and sel.endswith("}")):
            raise MeterUnavailable(f"measure.prometheus_selector: {selector!r} is not a label "
                                   "selector; give e.g. '{Hostname=\"n1\",gpu=\"0\"}'")  # fmt: skip
        self.selector = sel
        self.fields = (ENERGY, POWER)
        self.scrape_interval_s: float | None = None  # from the stored samples' spacing
        self.measured: tuple[str, float] | None = None  # the interval, when polled for

    def _series(self, name: str, seconds: int) -> list[dict[str, Any]]:
        query = f"{name}{self.selector}[{seconds}s]"
        q = urllib.parse.urlencode({"query": query})
        # Prometheus answers a query it refuses with 400 (bad_data) or 422 and a JSON reason
        body = self.http.get(f"{self.base}/api/v1/query?{q}", ok=(200, 400, 422))
        try:
            data = json.loads(body)
            if data.get("status") != "success":
                why = f"Prometheus at {self.http.url} refused {query} ({data.get('error', data)})"
                if data.get("errorType") == "bad_data":  # the selector does not parse
                    raise MeterUnavailable(f"{why}; fix measure.prometheus_selector")
                raise MeterError(why)
            return list(data["data"]["result"])
        except (ValueError, KeyError, TypeError):
            raise MeterError(f"{self.where} did not answer a Prometheus query; give the "
                             "server's base URL, e.g. http://PROM:9090") from None  # fmt: skip

    def fetch(self) -> list[Board]:
        # A board's series that its latest scrape did not publish are gone: its labels changed
        # (a pod took the board, or was replaced) and the old series' last sample lingers in
        # the lookback, a frozen value. Those of the latest scrape (one per pod on a shared
        # board) carry that scrape's time, the same to the millisecond.
        latest: list[tuple[str, dict[str, str], float, float]] = []
        newest: dict[tuple[str, tuple[str, str]], float] = {}
        for name in self.fields:
            for s in self._series(name, self.LOOKBACK_S):
                if not s.get("values"):
                    continue
                labels = {k: v for k, v in s["metric"].items() if k != "__name__"}
                t, value = float(s["values"][-1][0]), float(s["values"][-1][1])
                latest.append((name, labels, t, value))
                key = (name, _key(labels))
                newest[key] = max(t, newest.get(key, t))
        series = [(name, labels, value) for name, labels, t, value in latest
                  if t >= newest[(name, _key(labels))]]  # fmt: skip
        boards = boards_of(series)
        if not boards:
            raise MeterUnavailable(f"{self.where}: no {ENERGY} or {POWER} sample in the last "
                                   f"{self.LOOKBACK_S} s; check the selector's labels and that "
                                   "Prometheus scrapes the node's dcgm-exporter")  # fmt: skip
        return boards

    def only(self, name: str) -> None:
        """Read one field from now on (each read is one query per field)."""
        self.fields = (name,)

    def history_period_s(self, board: Board) -> float | None:
        """The collection interval from the stored samples: the median gap between the scrape
        times at which the value changed (None with fewer than three changes stored). The
        board's series are merged (one counter, whatever labels it had: a pod that took the
        board starts a new series); the scrape interval is the median spacing within each."""
        name = self.fields[0]
        samples: list[tuple[float, float]] = []
        spacing: list[float] = []
        for s in self._series(name, self.HISTORY_S):
            if _key(s["metric"]) != board.key:
                continue
            vals = [(float(t), float(v)) for t, v in s.get("values", [])]
            samples += vals
            spacing += [b - a for (a, _), (b, _) in zip(vals, vals[1:])]
        if len(spacing) >= 2:
            self.scrape_interval_s = statistics.median(spacing)
        samples.sort()
        changes = [t for (t, v), (_, v0) in zip(samples[1:], samples) if v != v0]
        gaps = [b - a for a, b in zip(changes, changes[1:])]
        return statistics.median(gaps) if len(gaps) >= 2 else None

    def describe(self) -> dict[str, Any]:
        return {"prometheus": self.where, "scrape_interval_s": self.scrape_interval_s}

    def close(self) -> None:
        self.http.close()


class RemoteBoardMeter(Meter):
    """Energy of one GPU board read from a source (exporter page or Prometheus)."""

    name = "dcgm"
    slow_counter = True  # one update per collection: the attribution widens its edges for it
    is_board = True  # a GPU board: per-board columns, board_uuids (runner/boards.py)

    def __init__(self, source: ExporterSource | PrometheusSource, board: Board, *,
                 name: str = "dcgm", pod: str | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 period_timeout_s: float = PERIOD_TIMEOUT_S,
                 key: str | None = None) -> None:  # fmt: skip
        self.name = name
        self.source, self.key = source, board.key
        self.clock, self.sleep = clock, sleep
        self.uuid, self.host = board.uuid, board.host
        self.index = int(board.gpu) if board.gpu.isdigit() else 0
        self.pci_bus_id = board.labels.get("pci_bus_id")
        self.labels = dict(board.labels)
        self.device_name = board.labels.get("modelName", "")
        self.has_counter = board.energy_mj is not None
        self.has_instant = False  # DCGM's power field is an average, never an instant value
        self.source_label = COUNTER if self.has_counter else INTEGRATED
        if isinstance(source, PrometheusSource):
            source.only(ENERGY if self.has_counter else POWER)
        self.power_limit_w: float | None = None
        self.other_processes: list[int] = []  # a remote node's processes are not ours to see
        # the pods the exporter says hold this board (time-slicing), the measured one's first
        mine = pod if pod in board.pods else board.labels.get("pod")
        self.pods = list(dict.fromkeys(p for p in [mine, *board.pods] if p))
        self.containers = dict(board.containers)
        self.reloads = 0
        self._lock = threading.Lock()
        self._raw0 = self._last_raw = board.energy_mj or 0.0
        self._offset = 0.0
        self._integrated, self._last_p = 0.0, board.power_w
        self._period_how = ""
        self.interval_s = self._measure_interval(board, period_timeout_s)
        self.dating_lag_s = self.interval_s + (source.scrape_interval_s or 0.0)
        if not self.has_counter:  # the power field averages the last second (Ampere and newer)
            self.dating_lag_s += POWER_AVERAGE_S
        self._last_change = self._last_t = clock()
        self._channel = Channel(key or f"gpu{board.gpu or self.index}", "gpu-board",
                                self.source_label, True, self.device_name)  # fmt: skip

    @property
    def other_pods(self) -> list[str]:
        """Pods that share this board besides the one measured."""
        return self.pods[1:]

    # ---- the collection interval ------------------------------------------------------

    def _measure_interval(self, board: Board, timeout_s: float) -> float:
        period = self.source.history_period_s(board)
        if period:
            self._period_how = "measured: median gap between changes in Prometheus's samples"
            return period
        known = self.source.measured  # another board of the same exporter polled for it
        if known:
            self._period_how, period = known
            return period
        times: list[float] = []
        last, start, prev = self._value(self._board()), self.clock(), self.clock()
        while len(times) < 3 and self.clock() - start < timeout_s:
            self.sleep(0.005)
            now, value = self.clock(), self._value(self._board())
            if value != last:
                times.append(0.5 * (prev + now))
                last = value
            prev = now
        gaps = [b - a for a, b in zip(times, times[1:])]
        if not gaps:
            raise MeterUnavailable(
                f"{self.source.where}: {self._field()} of {self.uuid or self.key[1]} did not "
                f"change twice in {timeout_s:g} s; the exporter is stale or its collection "
                f"interval ({EXPORTER_INTERVAL_FLAG}, ms) is longer than {timeout_s / 2:g} s"
            )
        period = base_period(gaps)
        self._period_how = f"measured: polled {len(times)} changes of the published value"
        self.source.measured = (self._period_how, period)
        return period

    def _field(self) -> str:
        return ENERGY if self.has_counter else POWER

    def _value(self, b: Board) -> float | None:
        return b.energy_mj if self.has_counter else b.power_w

    def _board(self) -> Board:
        for b in self.source.fetch():
            if b.key == self.key:
                return b
        raise MeterError(f"{self.source.where} no longer publishes board {self.uuid} "
                         f"({self.host or 'its node'})")  # fmt: skip

    # ---- reads ------------------------------------------------------------------------

    @property
    def channels(self) -> tuple[Channel, ...]:
        return (self._channel,)

    def update_period_s(self) -> float | None:
        # both fields move once a collection: the counter, and the power taken to hold over
        # the interval that ends at its change (a counter of its own, attributed the same way)
        return self.interval_s

    def read_joules(self) -> dict[str, float]:
        # One lock over the fetch and its use: the sampler thread and a mark on the main
        # thread must not apply an older page after a newer one (that would look like a reset).
        with self._lock:
            b = self._board()
            now = self.clock()
            value = self._value(b)
            if value is None:
                raise MeterError(f"{self.source.where} stopped publishing {self._field()} for "
                                 f"{self.uuid}")  # fmt: skip
            self._check_fresh(value, now)
            if self.has_counter:
                return {self._channel.key: self._counter_j(value)}
            return {self._channel.key: self._integrate(value, now)}

    def _check_fresh(self, value: float, now: float) -> None:
        """A value unchanged for STALE_PERIODS intervals (and 2 s) is a hung exporter: a
        working board's counter and power move at every collection."""
        if value != (self._last_raw if self.has_counter else self._last_p):
            self._last_change = now
        elif now - self._last_change > STALE_PERIODS * self.interval_s + 2.0:
            raise MeterError(f"{self.source.where}: {self._field()} of {self.uuid} has not "
                             f"changed for {now - self._last_change:.0f} s (its interval is "
                             f"{self.interval_s:g} s): the exporter is stale")  # fmt: skip

    def _counter_j(self, raw: float) -> float:
        if raw < 0.5 * self._last_raw:  # a reloaded driver restarts near zero: bridge it
            self.reloads += 1
            self._offset += self._last_raw
        elif raw < self._last_raw:  # a value that steps back a little is no reset: hold it
            raw = self._last_raw
        self._last_raw = raw
        return (raw + self._offset - self._raw0) / 1000.0

    def _integrate(self, power_w: float, now: float) -> float:
        """A new power value covers the interval since the last one (DCGM's field is the
        board's recent average): added once, when it appears, like a counter's update."""
        if power_w != self._last_p:
            self._integrated += power_w * (now - self._last_t)
            self._last_t, self._last_p = now, power_w
        return self._integrated

    def read_power_w(self) -> dict[str, float] | None:
        return None  # an averaged field: integrating it as instant power would be wrong

    # ---- checks and metadata ------------------------------------------------------------

    def min_window_s(self) -> float:
        """The shortest window this meter measures: MIN_WINDOW_PERIODS intervals."""
        return MIN_WINDOW_PERIODS * self.interval_s

    def check_window(self, seconds: float, what: str, flag: str) -> None:
        """A window shorter than MIN_WINDOW_PERIODS intervals is refused, with the fix."""
        need = self.min_window_s()
        if 0 < seconds < need:
            raise MeterUnavailable(
                f"{what} {seconds:g} s is shorter than {MIN_WINDOW_PERIODS} collection "
                f"intervals of {self.source.where} ({self.interval_s:g} s each): give "
                f"{flag} {math.ceil(need)} or more, or shorten the exporter's interval "
                f"({EXPORTER_INTERVAL_FLAG} in ms, e.g. -c 1000)")  # fmt: skip

    def driver_version(self) -> str:
        """The driver's version where the exporter labels it (dcgm-exporter 3.3 and later)."""
        return self.labels.get("DCGM_FI_DRIVER_VERSION", "")

    def edge_state(self) -> dict[str, Any]:
        # clocks and temperature are other fields of the page; none is read at the edges
        return {"gpu": self.index, "power_limit_w": self.power_limit_w}

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(self.source.describe())
        d.update(meter_host=self.host, uuid=self.uuid, gpu=self.labels.get("gpu"),
                 device_name=self.device_name, source=self.source_label,
                 update_period_s=self.interval_s, update_period_source=self._period_how,
                 dating_lag_s=self.dating_lag_s, pods=self.pods,
                 pod=self.pods[0] if self.pods else None,
                 namespace=self.labels.get("namespace"),
                 container=self.containers.get(self.pods[0]) if self.pods else None,
                 driver_reloads=self.reloads,
                 other_processes=[])  # fmt: skip
        return d

    def close(self) -> None:
        closer = getattr(self.source, "close", None)
        if closer is not None:
            closer()


def base_period(gaps: list[float]) -> float:
    """The collection interval from gaps between seen changes, a missed change (the exporter
    publishing DCGM's same sample twice) making one gap a multiple of it."""
    base = min(gaps)
    return statistics.median(g / max(round(g / base), 1) for g in gaps)


def open_remote(meter: str, urls: list[str], selector: str | None, sel: Selection,
                **kw: Any) -> list[Meter]:  # fmt: skip
    """One RemoteBoardMeter per selected board: `dcgm` reads each exporter URL (one per node),
    `prometheus` the Prometheus server at urls[0] with `selector`."""
    meters: list[Meter] = []
    try:
        if meter == "prometheus":
            probe = PrometheusSource(urls[0], selector or "{}")
            try:
                boards = select(_first_fetch(probe), sel, probe.where)
            finally:
                probe.close()
            several = len({b.host for b in boards}) > 1  # gpu labels repeat across nodes
            for b in boards:  # a source each: every meter reads its own field and board
                source = PrometheusSource(urls[0], selector or "{}")
                key = f"{b.host}/gpu{b.gpu}" if several else None
                meters.append(RemoteBoardMeter(source, b, name="prometheus", pod=sel.pod,
                                               key=key, **kw))  # fmt: skip
            return meters
        chosen: list[tuple[ExporterSource, Board]] = []
        sources = [ExporterSource(url) for url in dict.fromkeys(urls)]  # each node once
        try:
            for source in sources:  # one source per node: its boards share its page
                got = _first_fetch(source)
                chosen += [(source, b) for b in select(got, sel, source.where, every=False)]
            check_named([b for _, b in chosen], sel, ", ".join(s.where for s in sources))
        except BaseException:
            for source in sources:
                source.close()
            raise
        several = len({b.host for _, b in chosen}) > 1  # gpu labels repeat across nodes
        for source, b in chosen:
            key = f"{b.host}/gpu{b.gpu}" if several else None
            meters.append(RemoteBoardMeter(source, b, pod=sel.pod, key=key, **kw))
        return meters
    except MeterUnavailable:
        for m in meters:
            m.close()
        raise
    except MeterError as e:  # a page that failed while opening: the user's to check
        for m in meters:
            m.close()
        raise MeterUnavailable(str(e)) from None
    except BaseException:
        for m in meters:
            m.close()
        raise


def _key(labels: dict[str, str]) -> tuple[str, str]:
    """A series' board, as Board.key names it (an empty label is an absent one)."""
    return Board({k: v for k, v in labels.items() if v != ""}).key


def _first_fetch(source: Any) -> list[Board]:
    """The first read, where a failure is the user's to fix (nothing has run yet)."""
    try:
        return source.fetch()
    except MeterUnavailable:
        raise
    except MeterError as e:
        what = "Prometheus runs there" if isinstance(source, PrometheusSource) else \
            "dcgm-exporter runs there (default port 9400)"  # fmt: skip
        raise MeterUnavailable(f"{e}; check the URL and that {what}") from None
