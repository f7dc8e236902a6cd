"""A real Prometheus server for tests (Debian's `prometheus` package): started as a subprocess on
loopback, scraping the given targets (fake dcgm-exporters) every second, always stopped.

    with PromServer([ex.url], tmp_path) as prom:   # prom.url == "http://127.0.0.1:PORT"
        prom.wait_for_changes('DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{gpu="0"}', 3)

A missing binary skips the test with the fix, or fails it under TOKENWATT_REQUIRE_PROMETHEUS=1
(CI's Prometheus block, where a skip would hide that nothing was tested).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

SCRAPE_S = 1
START_TIMEOUT_S = 60.0


def prometheus_binary() -> str:
    """The prometheus executable; skips (or fails, when CI requires it) without one."""
    path = shutil.which("prometheus")
    if path:
        return path
    why = "no prometheus binary on PATH; install it: apt-get install prometheus"
    if os.environ.get("TOKENWATT_REQUIRE_PROMETHEUS") == "1":
        pytest.fail(f"TOKENWATT_REQUIRE_PROMETHEUS=1: {why}")
    pytest.skip(why)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _target(url: str) -> tuple[str, str]:
    """(host:port, metrics path) of an exporter URL."""
    u = urllib.parse.urlsplit(url)
    return f"{u.hostname}:{u.port}", u.path or "/metrics"


def config_text(targets: list[str]) -> str:
    """prometheus.yml: one job per exporter URL (each its own metrics path), scraped each second."""
    lines = ["global:", f"  scrape_interval: {SCRAPE_S}s", f"  scrape_timeout: {SCRAPE_S}s",
             "scrape_configs:"]  # fmt: skip
    for i, url in enumerate(targets):
        hostport, path = _target(url)
        lines += [f"  - job_name: dcgm{i}", f"    metrics_path: {path}",
                  "    static_configs:", f"      - targets: ['{hostport}']"]  # fmt: skip
    return "\n".join(lines) + "\n"


class PromServer:
    """Prometheus on 127.0.0.1:<free port> with its TSDB and config under `workdir`."""

    def __init__(self, targets: list[str], workdir: Path) -> None:
        self.binary = prometheus_binary()
        self.workdir = Path(workdir)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.targets = targets

    def __enter__(self) -> PromServer:
        self.workdir.mkdir(parents=True, exist_ok=True)
        cfg = self.workdir / "prometheus.yml"
        cfg.write_text(config_text(self.targets))
        self.log = self.workdir / "prometheus.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [self.binary, f"--config.file={cfg}",
                 f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.workdir)  # fmt: skip
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def _tail(self) -> str:
        return self.log.read_text(errors="replace")[-1500:] if self.log.exists() else ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode} at start:\n{self._tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        pytest.fail(f"prometheus not ready in {START_TIMEOUT_S:g} s:\n{self._tail()}")

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result list (a range selector gives each series' raw samples)."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as r:
            data = json.load(r)
        assert data["status"] == "success", data
        return list(data["data"]["result"])

    def changes(self, series: str, seconds: int = 900) -> list[int]:
        """Per matching series, how many times its stored value changed in the last `seconds`."""
        out = []
        for s in self.query(f"{series}[{seconds}s]"):
            vals = [v for _, v in s["values"]]
            out.append(sum(a != b for a, b in zip(vals, vals[1:])))
        return out

    def wait_for_changes(self, series: str, n: int, timeout_s: float = 60.0) -> None:
        """Until every series `series` selects has changed value at least n times in storage."""
        deadline = time.monotonic() + timeout_s
        got: list[int] = []
        while time.monotonic() < deadline:
            got = self.changes(series)
            if got and min(got) >= n:
                return
            time.sleep(0.5)
        pytest.fail(f"prometheus stored {got} changes of {series} in {timeout_s:g} s, not {n}; "
                    f"its targets' health: {self.target_health()}")  # fmt: skip

    def target_health(self) -> list[tuple[str, str, str]]:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as r:
            data = json.load(r)
        return [(t["scrapeUrl"], t["health"], t.get("lastError", ""))
                for t in data["data"]["activeTargets"]]  # fmt: skip
