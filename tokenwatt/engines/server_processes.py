"""Which processes on this machine are the server under test (engine openai), decided once per
run by the engine: the process tree tokenwatt launched (--launch), else the processes
listening on the URL's port and their children (a vLLM API server and its engine core),
else none (the server runs on another machine, or its processes cannot be named here).

The contention record of every trial reports their load in its own columns
(`server_cpu_cores`, `server_gpu_pids`) instead of counting it as other processes': the
server's work is the work being measured, and contention is what is left.
"""

from __future__ import annotations

import socket

import psutil

from tokenwatt._util.proctree import ProcessForest, ServerProcesses, listening_pids
from tokenwatt.engines.launch import is_loopback


def launched(pid: int) -> ServerProcesses:
    forest = ProcessForest({pid})
    return ServerProcesses(forest, f"launched by tokenwatt: pid {pid} and its children")


def listening(host: str, port: int) -> ServerProcesses:
    """The server behind host:port when that is this machine."""
    if not is_this_machine(host):
        return ServerProcesses(None, f"not on this machine ({host}): its load is not here")
    pids, hidden = listening_pids(port)
    if not pids:
        why = ("its process belongs to another user; run tokenwatt as that user or root to "
               "tell it apart") if hidden else "no process listens there"  # fmt: skip
        return ServerProcesses(None, f"not identified on port {port} ({why}): its load "
                               "counts as other processes'")  # fmt: skip
    forest = ProcessForest(pids)
    roots = ", ".join(map(str, forest.roots))
    return ServerProcesses(forest, f"listening on port {port}: pid {roots} and its children")


def is_this_machine(host: str) -> bool:
    """Loopback, or an address of one of this machine's interfaces (or its own name)."""
    if is_loopback(host) or host in ("0.0.0.0", "::", socket.gethostname()):
        return True
    try:
        addrs = {a[4][0] for a in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    mine = {a.address.split("%")[0] for nic in psutil.net_if_addrs().values() for a in nic}
    return bool(addrs & mine)
