"""This process tree's CPU time and runnable threads, and the machine's, from the OS.

Used by the CPU estimate (which covers this process tree only) and by the contention record of
every trial (what other processes did meanwhile). Linux reads /proc for runnable threads;
elsewhere those readings are None and CPU times come from psutil.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

CHILDREN_REFRESH_S = 1.0  # scanning for descendants reads every pid in /proc: not each read


class ProcessTree:
    """This process and its descendants: CPU seconds (live and reaped children) and threads.

    A child that exits is counted through its parent's `children_user/system` once reaped, so
    the total never goes backwards; a child started between two scans is picked up within
    CHILDREN_REFRESH_S with all its CPU time so far (late, never lost).
    """

    def __init__(self, pid: int | None = None) -> None:
        self.pid = pid or os.getpid()
        self.root = psutil.Process(self.pid)
        self._children: list[psutil.Process] = []
        self._scanned = -float("inf")

    def children(self) -> list[psutil.Process]:
        now = time.monotonic()
        if now - self._scanned >= CHILDREN_REFRESH_S:
            try:
                self._children = self.root.children(recursive=True)
            except psutil.Error:
                self._children = []
            self._scanned = now
        return self._children

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the tree since each process started."""
        if self.pid == os.getpid():
            t = os.times()  # no /proc read for the process itself
            total = t.user + t.system + t.children_user + t.children_system
        else:
            total = _cpu(self.root) or 0.0
        for child in self.children():
            total += _cpu(child) or 0.0
        return total

    def runnable_threads(self) -> int | None:
        """Threads of the tree in state R right now (Linux); None where /proc has no tasks."""
        count, seen = 0, False
        for pid in [self.pid, *(c.pid for c in self.children())]:
            for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
                try:
                    text = stat.read_text()
                except OSError:
                    continue
                seen = True
                count += _state(text) == "R"
        return count if seen else None


def _cpu(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


def _state(stat: str) -> str:
    """The state letter of a /proc/<pid>/task/<tid>/stat line (after the parenthesised name)."""
    return stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else ""


@dataclass(frozen=True)
class MachineCpu:
    """System-wide CPU seconds so far, summed over CPUs (psutil.cpu_times())."""

    busy_s: float  # user + nice + system + irq + softirq (guest is inside user)
    steal_s: float  # given by the hypervisor to other guests
    total_s: float


def machine_cpu() -> MachineCpu:
    t = psutil.cpu_times()
    fields = t._asdict()
    guest = fields.get("guest", 0.0) + fields.get("guest_nice", 0.0)
    total = sum(fields.values()) - guest  # Linux counts guest time inside user time too
    steal = fields.get("steal", 0.0)
    idle = fields.get("idle", 0.0) + fields.get("iowait", 0.0)
    return MachineCpu(busy_s=total - idle - steal, steal_s=steal, total_s=total)


def system_runnable() -> int | None:
    """Runnable threads on the machine right now (/proc/loadavg's running count), Linux only."""
    try:
        return int(Path("/proc/loadavg").read_text().split()[3].split("/")[0])
    except (OSError, IndexError, ValueError):
        return None


def load_average_1m() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):
        return None


def listening_pids(port: int) -> tuple[set[int], bool]:
    """PIDs of the processes listening on TCP `port` on this machine, and whether a listener's
    pid was hidden (a process of another user, which psutil may not name without root)."""
    try:
        conns = psutil.net_connections(kind="inet")
    except psutil.AccessDenied:
        return set(), True
    pids, hidden = set(), False
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
            if c.pid is None:
                hidden = True
            else:
                pids.add(c.pid)
    return pids, hidden


class ProcessForest:
    """Some processes and all their descendants (a server's: its API process, workers, engine
    core): CPU seconds, runnable threads and pids, like ProcessTree for several roots. A root
    that ended keeps the CPU time last read, so the total never goes backwards."""

    def __init__(self, roots: set[int]) -> None:
        self.trees: list[ProcessTree] = []
        for pid in sorted(_topmost(roots)):
            try:
                self.trees.append(ProcessTree(pid))
            except psutil.Error:
                continue  # ended meanwhile
        self._last: dict[int, float] = {}

    @property
    def roots(self) -> list[int]:
        return [t.pid for t in self.trees]

    def pids(self) -> set[int]:
        return {p for t in self.trees for p in (t.pid, *(c.pid for c in t.children()))}

    def cpu_seconds(self) -> float:
        for t in self.trees:
            try:
                self._last[t.pid] = max(self._last.get(t.pid, 0.0), t.cpu_seconds())
            except psutil.Error:
                pass
        return sum(self._last.values())

    def runnable_threads(self) -> int | None:
        counts = [n for t in self.trees if (n := t.runnable_threads()) is not None]
        return sum(counts) if counts else None

    def descends_from(self, pid: int) -> bool:
        """Whether every root is `pid` or one of its descendants (e.g. a server it launched)."""
        return bool(self.trees) and all(_descends(t.pid, pid) for t in self.trees)


def _topmost(pids: set[int]) -> set[int]:
    """The pids none of whose ancestors is among them (uvicorn's workers share the socket of
    the process that forked them: that one is the root)."""
    return {p for p in pids if not any(_descends(p, q) for q in pids - {p})}


def _descends(pid: int, ancestor: int) -> bool:
    try:
        return pid == ancestor or any(a.pid == ancestor for a in psutil.Process(pid).parents())
    except psutil.Error:
        return False


@dataclass
class ServerProcesses:
    """A served model's processes on this machine (engines/server_processes.py decides which),
    or none, with how they were found in words (the rows' `server_processes`)."""

    forest: ProcessForest | None
    how: str

    @property
    def inside_this_tree(self) -> bool:
        """Launched by this process: its CPU time is already in this process tree's."""
        return self.forest is not None and self.forest.descends_from(os.getpid())
