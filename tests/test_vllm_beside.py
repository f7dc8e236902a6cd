"""Engine openai beside a real vLLM CPU server that tokenwatt did not launch (issue 24): the
server's processes are told apart from contention, its own /metrics check every trial, and an
unrelated CPU hog is still contention. Marked vllm (`pytest -m vllm` in the vLLM environment);
one server start for the module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request

import pandas as pd
import pytest

from tests.served import free_port, tiny_checkpoint, vllm_server_argv

pytestmark = pytest.mark.vllm

RUN = ["run", "--engine", "openai", "--batch-size", "4", "--requests", "16", "--prompt-tokens",
       "16", "--new-tokens", "24", "--repeats", "2", "--min-seconds", "0", "--idle-seconds",
       "0.5", "--warmup", "1", "--meter", "estimate"]  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """vLLM's OpenAI server started beside the tests, as a user starts theirs."""
    tmp = tmp_path_factory.mktemp("beside")
    port = free_port()
    log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(vllm_server_argv(tiny_checkpoint(tmp), port, max_num_seqs=4),
                            stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        _wait_healthy(port, proc, tmp / "server.log")
        yield port, proc
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


def _wait_healthy(port: int, proc: subprocess.Popen, log) -> None:
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("vLLM did not become healthy: " + log.read_text()[-2000:])


def _run(port: int, out) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tokenwatt", *RUN, "--url", f"http://127.0.0.1:{port}/v1",
           "--out", str(out)]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def test_the_server_beside_is_its_own_load_not_contention(server, tmp_path):
    port, proc = server
    p = _run(port, tmp_path / "o")
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert (rows["server_processes"] == f"listening on port {port}: pid {proc.pid} and its "
            "children").all()  # fmt: skip
    assert (rows["server_cpu_cores"] > 0.2).all(), rows["server_cpu_cores"].tolist()
    assert not rows["contended"].any(), rows[
        ["other_cpu_cores", "other_runnable", "server_cpu_cores", "contention_reason"]
    ]
    # vLLM's own word on every trial agrees with tokenwatt's
    assert (rows["server_metrics"] == "vllm /metrics").all()
    assert (rows["server_check"] == "agrees").all(), rows["server_check"].tolist()
    whole = rows[rows["window"] == "whole-run"]
    assert (whole["server_generated_tokens"] == whole["tokens_generated"]).all()
    assert (whole["server_prompt_tokens"] == 16 * 16).all()
    print(
        "\nbeside vLLM:",
        rows[
            [
                "window",
                "server_cpu_cores",
                "other_cpu_cores",
                "other_runnable",
                "server_generated_tokens",
                "server_ttft_s_mean",
                "ttft_s_median",
                "server_itl_s_mean",
                "itl_s_median",
            ]
        ].to_string(),
    )


def test_an_unrelated_hog_beside_the_server_is_contention(server, tmp_path):
    """The hog's CPU time is other processes' (not the server's): what tokenwatt reports as
    `other_cpu_cores` is what the hog got, and the hog is contention."""
    import psutil

    port, _ = server
    # two busy processes: the scheduler shares CPUs per thread, and vLLM's CPU worker keeps
    # several threads spinning, so one hog alone gets about 0.1 of this machine's 2 cores
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]

    def cpu() -> float:
        return sum(sum(psutil.Process(h.pid).cpu_times()[:2]) for h in hogs)

    try:
        time.sleep(0.5)
        t0, cpu0 = time.monotonic(), cpu()
        p = _run(port, tmp_path / "o")
        got = (cpu() - cpu0) / (time.monotonic() - t0)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    seen = rows[["other_cpu_cores", "other_runnable", "server_cpu_cores", "contended"]]
    print(f"\nthe hogs got {got:.2f} cores over the run;\n{seen.to_string()}")
    assert rows["contended"].all(), (got, seen)
