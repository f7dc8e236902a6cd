"""This process tree's CPU time and pids, the machine's CPU time, and other processes' runnable
threads, from the OS.

Used by the CPU estimate (which covers this process tree only) and by the contention record of
every trial (what other processes did meanwhile). Linux reads /proc for runnable threads;
elsewhere that reading is None and CPU times come from psutil.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

CHILDREN_REFRESH_S = 1.0  # scanning for descendants reads every pid in /proc: not each read


class ProcessTree:
    """This process and its descendants: CPU seconds (live and reaped children) and pids.

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

    def pids(self) -> set[int]:
        return {self.pid, *(c.pid for c in self.children())}


def _cpu(p: psutil.Process) -> float | None:
    try:
        t = p.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system + getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0)


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


class RunnableElsewhere:
    """Threads in state R (running or waiting for a CPU) of every process but some, counted
    directly in /proc (Linux; None elsewhere).

    Counted directly rather than as the machine's running count minus ours: a served model's
    dozens of spinning threads change state while /proc is walked, so that difference swung
    from 0 to 2 with two busy processes beside a vLLM server. psutil is not used because it
    reads several files per process where one (`/proc/PID/stat`: state, CPU ticks, thread count)
    does; a many-threaded process's own threads are read only when its main thread is runnable
    or it used CPU since the last call, which keeps a call to one read per idle process. A
    thread starved of all CPU behind a sleeping main thread is missed; other processes' CPU
    time (`other_cpu_cores`) does not depend on this count.
    """

    def __init__(self, proc: Path = Path("/proc")) -> None:
        self.proc = str(proc)
        self._ticks: dict[str, int] = {}

    def __call__(self, exclude: set[int]) -> int | None:
        try:
            names = os.listdir(self.proc)
        except OSError:
            return None
        skip = {str(p) for p in exclude}
        count, ticks = 0, {}
        for name in names:
            if not name.isdigit() or name in skip:
                continue
            fields = _stat_fields(f"{self.proc}/{name}/stat")
            if fields is None:
                continue  # ended meanwhile
            state, used, threads = fields[0], int(fields[11]) + int(fields[12]), int(fields[17])
            ticks[name] = used
            if threads == 1:
                count += state == b"R"
            elif state == b"R" or used != self._ticks.get(name):
                count += runnable_threads_of(name, self.proc)
        self._ticks = ticks
        return count


def runnable_threads_of(pid: int | str, proc: str = "/proc") -> int:
    """Threads of process `pid` in state R right now (0 when it has ended)."""
    tasks = f"{proc}/{pid}/task"
    try:
        tids = os.listdir(tasks)
    except OSError:
        return 0
    states = (_stat_fields(f"{tasks}/{tid}/stat") for tid in tids)
    return sum(1 for f in states if f is not None and f[0] == b"R")


def _stat_fields(path: str) -> list[bytes] | None:
    """The fields of a /proc stat line after the parenthesised command name (which may hold
    spaces): [0] is the state (field 3 in proc(5)), [11] utime, [12] stime, [17] num_threads.
    os.read: half the time of open() for these one-page files, read once per process a sample."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            text = os.read(fd, 4096)
        finally:
            os.close(fd)
    except OSError:
        return None
    fields = text.rsplit(b")", 1)[-1].split()
    return fields if len(fields) >= 18 else None


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
    core): CPU seconds and pids, like ProcessTree for several roots. A root
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
