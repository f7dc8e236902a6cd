"""Start a server command (server.launch), wait for it to be healthy, stop it afterwards.

The command runs without a shell in its own process group, so stop() reaches the workers a
server forks (vLLM's engine core) as well. A process that leaves the group (setsid: vLLM's
data-parallel API servers, a daemonising wrapper) is out of the group's reach, and once its
parent dies it is nobody's descendant that could be found: so the tree is recorded while the
server runs, and stop() signals every recorded process still running too. Its stdout and
stderr go to a log file that the errors quote. Only loopback URLs may be launched: tokenwatt
measures a server it started on this machine, and a launched server reached elsewhere would be
some other server.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import IO, Any

import psutil

from tokenwatt.engines.openai_stream import Endpoint, endpoint, http_get, one_line
from tokenwatt.errors import UserError

POLL_S = 0.2
STOP_GRACE_S = 30.0
KILL_WAIT_S = 10.0  # SIGKILL cannot be refused; this only bounds a process stuck in the kernel
WATCH_S = 0.5  # how often the running server's process tree is recorded


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class LaunchedServer:
    """`with LaunchedServer(cmd, url, log, timeout_s) as s:` starts the command and returns
    once it answers GET /health (or GET <url>/models) with 200; leaving stops it.
    Or call start() and stop() yourself; stop() is idempotent."""

    def __init__(self, command: str, url: str, log_path: Path, timeout_s: float) -> None:
        self.command, self.url, self.log_path = command, url, Path(log_path)
        self.timeout_s = timeout_s
        self.ep: Endpoint = endpoint(url)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._tree: set[psutil.Process] = set()  # every descendant seen while it ran
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None
        if not is_loopback(self.ep.host):
            raise UserError(f"server.url: host {self.ep.host!r} is not a loopback address; a "
                            "launched server (server.launch) must be reached at 127.0.0.1 or "
                            "localhost: fix --url or drop --launch")  # fmt: skip
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise UserError(
                f"server.launch: cannot split the command ({e}); fix its quoting"
            ) from None
        if not self.argv:
            raise UserError("server.launch: the command is empty; give the server's command")

    def __enter__(self) -> LaunchedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> LaunchedServer:
        if self._listening():  # else its health would pass while our command fails to bind
            raise UserError(
                f"server.url: something already listens at {self.ep.root}; stop "
                "it, or drop --launch to measure it, or launch on another port"
            )
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as e:
            self._close_log()
            raise UserError(f"server.launch: cannot run {self.argv[0]!r} ({e.strerror}); "
                            "give a command on PATH or its full path") from None  # fmt: skip
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="launched-server-tree",
                                         daemon=True)  # fmt: skip
        self._watcher.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        assert self.proc is not None
        while True:
            code = self.proc.poll()
            if code is None and self._healthy():
                self._remember()  # a healthy server has started its workers: record them now
                return
            if code is not None:
                raise UserError(f"server.launch: the command exited with code {code} before "
                                f"its server answered; last log line: {self.last_log_line()!r} "
                                f"(log: {self.log_path})")  # fmt: skip
            if time.monotonic() >= deadline:
                raise UserError(f"server.launch: no healthy server at {self.ep.root} after "
                                f"{self.timeout_s:g} s; raise server.launch_timeout_s or fix "
                                f"the command; last log line: {self.last_log_line()!r} "
                                f"(log: {self.log_path})")  # fmt: skip
            time.sleep(POLL_S)

    def _healthy(self) -> bool:
        for path in ("/health", self.ep.base_path + "/models"):
            try:
                status, _ = http_get(self.ep, path, timeout_s=2.0)
            except (OSError, http.client.HTTPException):
                return False  # not listening yet
            if status == 200:
                return True
        return False

    def _listening(self) -> bool:
        try:
            socket.create_connection((self.ep.host, self.ep.port), timeout=2.0).close()
        except OSError:
            return False
        return True

    def last_log_line(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
                lines = [ln for ln in f.read().decode("utf-8", "replace").splitlines()
                         if ln.strip()]  # fmt: skip
        except OSError:
            return ""
        return one_line(lines[-1], 200) if lines else ""

    def stop(self) -> None:
        """SIGTERM the process group and every recorded process, wait up to 30 s, then SIGKILL
        what is left and wait for it to go."""
        self._stopping.set()
        self._remember()  # the tree as it stands, while the leader (if alive) still links it
        proc, self.proc = self.proc, None
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None
        if proc is not None:
            self._end(proc)
        self._close_log()

    def _end(self, proc: subprocess.Popen[bytes]) -> None:
        self._signal_tree(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            pass
        while self._tree_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the leader is gone; the rest may still be ending
        self._signal_tree(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + KILL_WAIT_S
        while self._tree_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # stop() returns once nothing of the server runs any more

    def _watch(self) -> None:
        while not self._stopping.wait(WATCH_S):
            self._remember()

    def _remember(self) -> None:
        """Add the leader's descendants now running to the recorded tree."""
        proc = self.proc
        # poll() reaps a dead leader; until then its pid cannot name another process.
        if proc is None or proc.poll() is not None:
            return
        try:
            found = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            return
        with self._lock:
            self._tree.update(found)  # a Process hashes by pid and start time: no reuse mix-up

    def _survivors(self) -> list[psutil.Process]:
        """Recorded processes still running, and the ones they started since."""
        with self._lock:
            known = list(self._tree)
        found: set[psutil.Process] = set()
        for p in known:
            try:
                if p.is_running():
                    found.update([p, *p.children(recursive=True)])
            except psutil.Error:
                continue
        return [p for p in found if _running(p)]

    def _signal_tree(self, pgid: int, sig: int) -> None:
        _signal_group(pgid, sig)
        for p in self._survivors():
            try:
                p.send_signal(sig)  # psutil refuses a pid that another process reuses now
            except psutil.Error:
                pass

    def _tree_alive(self, pgid: int) -> bool:
        return _group_alive(pgid) or bool(self._survivors())

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group has ended


def _group_alive(pgid: int) -> bool:
    """Whether a process of the group runs. killpg(pgid, 0) succeeds while the group holds any
    process, a zombie included: an orphan's zombie waits for init to reap it, and an init that
    does not (a bare container) would hold stop() for its whole grace period."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return any(_in_group(p, pgid) for p in psutil.process_iter())


def _in_group(p: psutil.Process, pgid: int) -> bool:
    try:
        return os.getpgid(p.pid) == pgid and _running(p)
    except (OSError, psutil.Error):
        return False


def _running(p: psutil.Process) -> bool:
    """Running and not a zombie (a zombie holds no memory, port or device: it is gone)."""
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
