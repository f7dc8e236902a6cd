"""Start a server command (server.launch), wait for it to be healthy, stop it afterwards.

The command runs without a shell in its own process group, so stop() reaches the workers a
server forks (vLLM's engine core) as well; its stdout and stderr go to a log file that the
errors quote. Only loopback URLs may be launched: tokenwatt measures a server it started on
this machine, and a launched server reached elsewhere would be some other server.
"""

from __future__ import annotations

import http.client
import ipaddress
import os
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any

from tokenwatt.engines.openai_stream import Endpoint, endpoint, http_get, one_line
from tokenwatt.errors import UserError

POLL_S = 0.2
STOP_GRACE_S = 30.0


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
        if not is_loopback(self.ep.host):
            raise UserError(f"server.url: host {self.ep.host!r} is not a loopback address; a "
                            "launched server (server.launch) must be reached at 127.0.0.1 or "
                            "localhost: fix --url or drop --launch")  # fmt: skip
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise UserError(f"server.launch: cannot split the command ({e}); fix its "
                            "quoting") from None
        if not self.argv:
            raise UserError("server.launch: the command is empty; give the server's command")

    def __enter__(self) -> LaunchedServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> LaunchedServer:
        if self._listening():  # else its health would pass while our command fails to bind
            raise UserError(f"server.url: something already listens at {self.ep.root}; stop "
                            "it, or drop --launch to measure it, or launch on another port")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self._log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as e:
            self._close_log()
            raise UserError(f"server.launch: cannot run {self.argv[0]!r} ({e.strerror}); "
                            "give a command on PATH or its full path") from None  # fmt: skip
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
        """SIGTERM the process group, wait up to 30 s, then SIGKILL what is left."""
        proc, self.proc = self.proc, None
        if proc is not None:
            _signal_group(proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + STOP_GRACE_S
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                pass
            while _group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)  # the leader is gone; its children may still be ending
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
        self._close_log()

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
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
