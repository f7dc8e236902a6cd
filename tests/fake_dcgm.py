"""A fake dcgm-exporter: tokenwatt's simulated boards (tokenwatt.sim.nvml) served over HTTP on
loopback in the exporter's text format, with its real field and label names.

Like the real exporter, it collects on its own schedule (`interval_s`, the exporter's `-c`)
and serves the values of its last collection to every request in between; each collection
publishes DCGM's last sample of the board, taken `lag_fraction` of an interval earlier (DCGM
watches the fields on its own schedule), of what its NVML reported then (the energy counter as
of its last 100 ms sensor update, the 1 s average power). Faults on demand: `energy=False` (an
exporter configured without the energy field), `reset()` (a reloaded driver: the counter
restarts near zero), `stall()` (a hung exporter that keeps serving its last page), `fail = True`
(HTTP 500).
"""

from __future__ import annotations

import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tokenwatt.sim import nvml as sim

DEFAULT_HOST = "gpu-node-1"  # its boards publish the simulated boards' own UUIDs

HEAD = {
    "DCGM_FI_DEV_SM_CLOCK": ("gauge", "SM clock frequency (in MHz)."),
    "DCGM_FI_DEV_POWER_USAGE": ("gauge", "Power draw (in W)."),
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": (
        "counter",
        "Total energy consumption since boot (in mJ).",
    ),
    "DCGM_FI_DEV_GPU_UTIL": ("gauge", "GPU utilization (in %)."),
}


class FakeExporter:
    def __init__(self, interval_s: float = 1.0, host: str = DEFAULT_HOST, energy: bool = True,
                 pods: dict[int, Any] | None = None, port: int = 0,
                 lag_fraction: float = 0.6) -> None:  # fmt: skip
        self.interval_s, self.host, self.energy = interval_s, host, energy
        # DCGM samples the board on its own schedule; the exporter publishes the last sample
        self.lag_s = lag_fraction * interval_s
        # board index -> (pod, container) holding it, or a list of them (a shared board)
        self.pods = pods or {}
        self.fail = False
        self.collections = 0
        self._page = ""
        self._stalled = False
        self._reset_at: list[float | None] = [None] * len(sim.STATE.gpus)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if owner.fail or self.path.split("?")[0] != "/metrics":
                    body, code = b"collector error\n", 500 if owner.fail else 404
                else:
                    with owner._lock:
                        body, code = owner._page.encode(), 200
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/metrics"
        self._collect()
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                         threading.Thread(target=self._loop, daemon=True)]  # fmt: skip

    # -- what the exporter publishes ----------------------------------------------------

    def uuid_of(self, index: int) -> str:
        """The UUID this node publishes for board `index`: the simulated board's own on the
        default node; elsewhere one of its own (a UUID names one board in the world, so two
        nodes serving the same simulated boards must not share them)."""
        uuid = sim.STATE.gpus[index].uuid
        if self.host == DEFAULT_HOST:
            return uuid
        return f"{uuid[:-12]}{zlib.crc32(self.host.encode()) % 10**12:012d}"

    def _labels(self, gpu: Any) -> list[str]:
        """One label set per pod holding the board (a shared board is one series per pod)."""
        labels = {"gpu": str(gpu.index), "UUID": self.uuid_of(gpu.index),
                  "pci_bus_id": gpu.pci_bus_id,
                  "device": f"nvidia{gpu.index}", "modelName": gpu.name,
                  "Hostname": self.host}  # fmt: skip
        held = self.pods.get(gpu.index, [])
        held = [held] if isinstance(held, tuple) else held
        sets = [{**labels, "container": c, "namespace": "default", "pod": p} for p, c in held]
        return [",".join(f'{k}="{v}"' for k, v in x.items()) for x in sets or [labels]]

    def render(self) -> str:
        t = max(sim.now() - self.lag_s, 0.0)
        values: dict[str, list[str]] = {name: [] for name in HEAD}
        for i, gpu in enumerate(sim.STATE.gpus):
            # a real board's reported power moves in its last digits at every collection
            # (sensor noise); a simulated level held for seconds would not
            power = gpu.window_mw(t, gpu.average_window_s) / 1000.0 + \
                0.001 * (self.collections % 2)  # fmt: skip
            mj = gpu.counter_mj(t)
            at = self._reset_at[i]
            if at is not None and t >= at:  # the reloaded driver's counter: from zero at `at`
                mj -= gpu.counter_mj(at)
            for lab in self._labels(gpu):
                values["DCGM_FI_DEV_SM_CLOCK"].append(f"DCGM_FI_DEV_SM_CLOCK{{{lab}}} 1980")
                values["DCGM_FI_DEV_POWER_USAGE"].append(
                    f"DCGM_FI_DEV_POWER_USAGE{{{lab}}} {power:.6f}"
                )
                values["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"].append(
                    f"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{{{lab}}} {mj}"
                )
                values["DCGM_FI_DEV_GPU_UTIL"].append(f"DCGM_FI_DEV_GPU_UTIL{{{lab}}} 87")
        if not self.energy:
            del values["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"]
        out = []
        for name, lines in values.items():
            kind, text = HEAD[name]
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *lines]
        return "\n".join(out) + "\n"

    def _collect(self) -> None:
        page = self.render()
        with self._lock:
            if not self._stalled:
                self._page = page
                self.collections += 1

    def _loop(self) -> None:
        nxt = time.perf_counter() + self.interval_s
        while not self._stop.wait(max(nxt - time.perf_counter(), 0.0)):
            self._collect()
            nxt += self.interval_s

    # -- faults -------------------------------------------------------------------------

    def reset(self, index: int = 0) -> None:
        """The driver reloads now: its counter restarts from zero (DCGM's samples from now on
        show it, the first a collection or so later)."""
        self._reset_at[index] = sim.now()

    def stall(self) -> None:
        """The exporter hangs: it keeps serving its last page."""
        with self._lock:
            self._stalled = True

    # -- context --------------------------------------------------------------------------

    def __enter__(self) -> FakeExporter:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
