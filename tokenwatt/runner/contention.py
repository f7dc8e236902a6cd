"""What other processes did to the machine while a trial ran, and whether that is material.

A shared machine must not publish: another program's work slows the decode (so every J/token
that contains static power or time grows), and on RAPL or a GPU board its energy is counted as
ours. Every trial records, over its own window:

- `other_cpu_cores`: CPU seconds the machine spent outside this process tree (system busy time
  minus this tree's, steal excluded) per wall second: how many cores other work kept busy;
- `other_runnable`: mean runnable threads (state R: running or waiting for a CPU) of processes
  outside this tree and the server's, sampled from /proc: the instantaneous form of "load
  average minus our own threads", which sees a process that waits even when it gets little
  CPU (beside a served model whose threads spin on every core);
- `cpu_steal_pct`: share of CPU time the hypervisor gave to other guests;
- `gpu_other_processes`: other processes on the measured NVIDIA boards;

and, for a served model, the server's own load in its own columns (`server_cpu_cores`,
`server_gpu_pids`: the processes engines/server_processes.py names), never as contention:
contention is what is left. And `contended` = any of the others past its threshold
(CONTENDED_*), with `contention_reason` saying which. The readings are injectable
(`Readings`), so a test can drive them.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from tokenwatt._util.proctree import MachineCpu, ProcessTree, RunnableElsewhere, machine_cpu

# Thresholds of "material". Half a core of other work is a quarter of this project's 2-core
# machines and enough to shift a CPU run's speed by several percent; one runnable thread
# beyond ours means something waits for a CPU all the time; a few % of steal is the noisy-
# neighbour level cloud providers document as degrading; any other process on a measured GPU
# is counted in the board's energy. The runnable threshold needs no CPU time beside it: two busy
# processes beside a vLLM CPU server got 0.1 core between them, waiting all the time.
CONTENDED_CORES = 0.5
CONTENDED_RUNNABLE = 1.0
CONTENDED_STEAL_PCT = 5.0
SAMPLE_S = 0.5
COLUMNS = ("other_cpu_cores", "other_runnable", "cpu_steal_pct", "gpu_other_processes",
           "server_cpu_cores", "server_gpu_pids", "contended", "contention_reason")  # fmt: skip


@dataclass
class Readings:
    """Where the load comes from: the OS by default (looked up when made, so a test can patch
    this module's functions), or whatever a test passes."""

    machine: Callable[[], MachineCpu] | None = None
    tree_cpu_s: Callable[[], float] | None = None
    tree_pids: Callable[[], set[int]] | None = None
    other_runnable: Callable[[set[int]], int | None] | None = None  # runnable threads but these
    gpu_other_pids: Callable[[], list[int]] = list
    clock: Callable[[], float] = time.monotonic
    server: ServerLoad | None = None  # the served model's processes, when they are known

    def __post_init__(self) -> None:
        self.machine = self.machine or machine_cpu
        self.other_runnable = self.other_runnable or RunnableElsewhere()
        if self.tree_cpu_s is None or self.tree_pids is None:
            tree = ProcessTree()
            self.tree_cpu_s = self.tree_cpu_s or tree.cpu_seconds
            self.tree_pids = self.tree_pids or tree.pids


class ServerLoad(Protocol):
    """The server's processes (a ProcessForest): what they use is reported apart."""

    def pids(self) -> set[int]: ...
    def cpu_seconds(self) -> float: ...


def gpu_pids_of(meters: list[Any]) -> Callable[[], list[int]]:
    """Other processes on every NVML board among `meters` (NvmlMeter.other_pids)."""
    boards = [m for m in meters if hasattr(m, "other_pids")]

    def read() -> list[int]:
        pids: set[int] = set()
        for m in boards:
            pids.update(m.other_pids())
        return sorted(pids)

    return read


@dataclass
class ContentionMonitor:
    """Start at a trial's start, `stop()` at its end: the trial's contention columns."""

    readings: Readings = field(default_factory=Readings)
    sample_s: float = SAMPLE_S
    server_inside: bool = False  # the server is in this process tree (launched): not subtracted
    _runnable: list[float] = field(default_factory=list)
    _gpu_pids: set[int] = field(default_factory=set)
    _server_gpu_pids: set[int] = field(default_factory=set)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> ContentionMonitor:
        r = self.readings
        self._t0, self._m0, self._tree0 = r.clock(), r.machine(), r.tree_cpu_s()
        self._server0 = r.server.cpu_seconds() if r.server else math.nan
        self._sample()
        self._thread = threading.Thread(target=self._loop, name="tokenwatt-contention",
                                        daemon=True)  # fmt: skip
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_s):
            self._sample()

    def _sample(self) -> None:
        r = self.readings
        ours = r.tree_pids() | (r.server.pids() if r.server else set())
        if (others := r.other_runnable(ours)) is not None:
            self._runnable.append(others)
        try:
            on_boards = set(r.gpu_other_pids())
        except Exception:  # a board NVML cannot ask is no reason to lose the trial
            return
        mine = r.server.pids() & on_boards if r.server else set()
        self._server_gpu_pids |= mine
        self._gpu_pids |= on_boards - mine

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2 * self.sample_s + 1)
        self._sample()
        r = self.readings
        dt = r.clock() - self._t0
        m1, tree1 = r.machine(), r.tree_cpu_s()
        server_s = (r.server.cpu_seconds() - self._server0) if r.server else math.nan
        ours = tree1 - self._tree0 + (0.0 if self.server_inside or not r.server else server_s)
        row = assess(self._m0, m1, ours, dt, self._runnable, len(self._gpu_pids))
        row["server_cpu_cores"] = server_s / dt if dt > 0 else math.nan
        row["server_gpu_pids"] = " ".join(map(str, sorted(self._server_gpu_pids)))
        return row


def assess(m0: MachineCpu, m1: MachineCpu, tree_cpu_s: float, wall_s: float,
           runnable: list[float], gpu_others: int) -> dict[str, Any]:  # fmt: skip
    """The contention columns of one window."""
    cores = max((m1.busy_s - m0.busy_s) - tree_cpu_s, 0.0) / wall_s if wall_s > 0 else math.nan
    total = m1.total_s - m0.total_s
    steal = 100.0 * (m1.steal_s - m0.steal_s) / total if total > 0 else math.nan
    others = sum(runnable) / len(runnable) if runnable else math.nan
    reasons = []
    if cores >= CONTENDED_CORES:
        reasons.append(f"other processes kept {cores:.2f} CPU cores busy")
    if others >= CONTENDED_RUNNABLE:
        reasons.append(f"{others:.1f} runnable threads of other processes on average")
    if steal >= CONTENDED_STEAL_PCT:
        reasons.append(f"{steal:.1f}% CPU steal")
    if gpu_others:
        reasons.append(f"{gpu_others} other processes on the measured GPUs")
    return {
        "other_cpu_cores": cores,
        "other_runnable": others,
        "cpu_steal_pct": steal,
        "gpu_other_processes": gpu_others,
        "contended": bool(reasons),
        "contention_reason": "; ".join(reasons),
    }


def summarise_contention(trials: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """The summary's contention columns and its warning, from the trials' columns."""
    flagged = [t for t in trials if str(t.get("contended")) in ("True", "true", "1")]
    cores = [float(t["other_cpu_cores"]) for t in trials
             if _finite(t.get("other_cpu_cores"))]  # fmt: skip
    out = {
        "contended": bool(flagged),
        "n_contended": len(flagged),
        "other_cpu_cores_max": max(cores) if cores else math.nan,
    }
    if not flagged:
        return out, []
    why = flagged[-1].get("contention_reason") or "other load"
    return out, [
        f"contended: other processes loaded the machine in {len(flagged)} of {len(trials)} "
        f"trials ({why}); these figures are not publishable: rerun on a quiet machine"
    ]


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False
