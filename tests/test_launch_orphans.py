"""A launched server leaves nothing running (issue: vLLM's engine core orphaned when its API
server was killed): stop() reaches the workers that left the process group too, and a run
whose server dies mid-run stops it all before tokenwatt exits."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.served import free_port, tiny_checkpoint, vllm_launch
from tokenwatt.engines.launch import LaunchedServer

TREE = Path(__file__).parent / "fake_tree_server.py"


def _running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init, which may never reap it)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def tree(tmp_path: Path) -> Iterator[tuple[str, str, Path]]:
    """(launch command, url, pids file) of the fake tree server; afterwards, whatever of its
    tree still runs is killed, so a failing test leaves no orphan either."""
    port, pids = free_port(), tmp_path / "pids.json"
    cmd = f"{sys.executable} {TREE} --port {port} --pids {pids}"
    yield cmd, f"http://127.0.0.1:{port}/v1", pids
    for pid in json.loads(pids.read_text()).values() if pids.exists() else []:
        if _running(pid):
            os.kill(pid, signal.SIGKILL)


def test_stop_after_the_leader_was_killed_reaches_the_worker_that_left_the_group(tree, tmp_path):
    cmd, url, pids_file = tree
    srv = LaunchedServer(cmd, url, tmp_path / "server.log", 20.0).start()
    pids = json.loads(pids_file.read_text())
    assert os.getpgid(pids["left_group"]) != os.getpgid(pids["leader"])  # out of killpg's reach
    os.kill(pids["leader"], signal.SIGKILL)  # the API server dies; its workers do not
    srv.stop()
    assert [name for name, pid in pids.items() if _running(pid)] == []


def test_stop_of_a_running_server_reaches_the_worker_that_left_the_group(tree, tmp_path):
    cmd, url, pids_file = tree
    with LaunchedServer(cmd, url, tmp_path / "server.log", 20.0):
        pids = json.loads(pids_file.read_text())
    assert [name for name, pid in pids.items() if _running(pid)] == []


def test_a_server_killed_mid_run_leaves_no_process(tree, tmp_path, invoke):
    cmd, url, pids_file = tree
    # Request 6 is trial 2's first (the probe, then trial 1's four): the leader SIGKILLs itself.
    r = invoke("run", "--engine", "openai", "--url", url, "--launch", f"{cmd} --die-at 6",
               "--requests", "4", "--batch-size", "1", "--prompt-tokens", "8", "--new-tokens",
               "4", "--repeats", "5", "--warmup", "0", "--min-seconds", "0", "--idle-seconds",
               "0", "--meter", "estimate", "--out", str(tmp_path / "out"))  # fmt: skip
    pids = json.loads(pids_file.read_text())
    assert not _running(pids["leader"])
    # the run saw its server die and stopped, in the server's words, counting trials
    line = next(ln for ln in r.output.splitlines() if ln.startswith("Error: stopped"))
    assert line.startswith(f"Error: stopped: the server at {url} failed 3 trial(s) in a row")
    assert "; 1 finished trial(s) are saved in " in line and "meter" not in line
    assert [name for name, pid in pids.items() if _running(pid)] == []


@pytest.mark.vllm
def test_vllm_api_server_killed_mid_run_leaves_no_engine_core(tmp_path):
    """The real vLLM CPU server (pytest -m vllm in its environment): SIGKILL the API server
    after trial 1; once the run ends, nothing it started (the engine core) runs."""
    from tokenwatt.config import load_config
    from tokenwatt.errors import RunStopped
    from tokenwatt.runner.run import run_config

    port = free_port()
    launch = vllm_launch(tiny_checkpoint(tmp_path), port, max_num_seqs=2)
    cfg = load_config(None, engine="openai", url=f"http://127.0.0.1:{port}/v1", launch=launch,
                      requests=2, batch_size=2, prompt_tokens=8, new_tokens=8, repeats=5,
                      warmup=0, min_seconds=0, idle_seconds=0, meter="estimate",
                      precision="fp32", out=str(tmp_path / "out"))  # fmt: skip
    tree: list[psutil.Process] = []

    def kill_api_server(done: int, total: int) -> None:
        if done == 1:
            server = next(p for p in psutil.Process().children()
                          if "vllm.entrypoints" in " ".join(p.cmdline()))  # fmt: skip
            tree.extend([server, *server.children(recursive=True)])
            server.kill()

    with pytest.raises(RunStopped) as stop:  # trials 2.. fail: three in a row stop the run
        run_config(cfg, on_trial=kill_api_server)
    line = str(stop.value)
    assert line.startswith(f"stopped: the server at {cfg.server.url} failed 3 trial(s) in a row")
    assert "; 1 finished trial(s) are saved in " in line and "meter" not in line
    assert len(tree) >= 2  # the API server and its engine core
    assert [p.pid for p in tree if _running(p.pid) and p.is_running()] == []
