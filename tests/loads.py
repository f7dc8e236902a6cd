"""Processes that load this machine, for the contention tests and benchmarks/runnable_count.py:
a busy process (in this process tree, or handed to init so it is not) and a server whose
threads spin on every core, as a vLLM CPU worker's do."""

from __future__ import annotations

import subprocess
import sys


def _busy_code(seconds: float) -> str:
    return f"import time\nt = time.time()\nwhile time.time() - t < {seconds}: pass"


def busy_sibling(seconds: float = 120.0) -> subprocess.Popen:
    """One core of other work: a process that is not part of the measured run's tree."""
    return subprocess.Popen([sys.executable, "-c", _busy_code(seconds)])


def orphan_busy(seconds: float = 120.0) -> int:
    """The pid of a busy process handed to init: not in this (the measuring) process tree."""
    code = (
        "import subprocess as s, sys\nprint(s.Popen([sys.executable, '-c', sys.argv[1]], "
        "stdout=s.DEVNULL, stderr=s.DEVNULL).pid)"
    )  # its pipes would hold run() open
    out = subprocess.run([sys.executable, "-c", code, _busy_code(seconds)], capture_output=True,
                         text=True, check=True, timeout=60)  # fmt: skip
    return int(out.stdout)


def spinning_server() -> subprocess.Popen:
    """A process whose 8 threads spin on this machine's cores, as a vLLM CPU worker's do."""
    code = ("import torch\ntorch.set_num_threads(8)\na = torch.rand(256, 256)\nprint('up', "
            "flush=True)\nwhile True: a @ a")  # fmt: skip
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "up"
    return p
