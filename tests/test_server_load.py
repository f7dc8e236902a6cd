"""The server under test is not contention (issue 24): its processes on this machine (the ones
tokenwatt launched, else those listening on the URL's port, with their children) are named
once per run (`server_processes`), their load is reported as `server_cpu_cores` and
`server_gpu_pids`, and `contended` is what is left."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.served import free_port
from tests.test_contention import Clock, FakeMachine
from tokenwatt._util.proctree import ProcessForest
from tokenwatt.engines.server_processes import is_this_machine, listening
from tokenwatt.runner.contention import ContentionMonitor, Readings

HERE = Path(__file__).parent


class FakeServer:
    """A server's processes that keep `cores` busy, for injected readings."""

    def __init__(self, clock: Clock, cores: float, pids: set[int]) -> None:
        self.clock, self.cores, self._pids = clock, cores, pids

    def pids(self) -> set[int]:
        return self._pids

    def cpu_seconds(self) -> float:
        return self.cores * self.clock()


def _trial(server_cores: float, others: float, inside: bool, gpu: list[int]) -> dict:
    clock = Clock()
    # the machine's busy time holds ours (1 core), the server's and the others'
    fake = FakeMachine(clock, others + server_cores)
    tree = (lambda: (1.0 + server_cores) * clock()) if inside else fake.tree
    server = FakeServer(clock, server_cores, {4242})
    readings = Readings(machine=fake.machine, tree_cpu_s=tree, clock=clock, server=server,
                        tree_pids=lambda: {1}, other_runnable=lambda ours: 0,
                        gpu_other_pids=lambda: gpu)  # fmt: skip
    mon = ContentionMonitor(readings, sample_s=60, server_inside=inside).start()
    clock.t += 5.0
    return mon.stop()


@pytest.mark.parametrize("inside", [False, True], ids=["beside", "launched"])
def test_the_servers_load_is_its_own_column_not_contention(inside):
    cols = _trial(server_cores=1.8, others=0.05, inside=inside, gpu=[4242])
    assert cols["server_cpu_cores"] == pytest.approx(1.8)
    assert cols["other_cpu_cores"] == pytest.approx(0.05)
    assert cols["server_gpu_pids"] == "4242" and cols["gpu_other_processes"] == 0
    assert cols["contended"] is False, cols["contention_reason"]


def test_what_is_left_beside_the_server_is_still_contention():
    cols = _trial(server_cores=1.8, others=0.9, inside=False, gpu=[4242, 999])
    assert cols["other_cpu_cores"] == pytest.approx(0.9)
    assert cols["gpu_other_processes"] == 1 and cols["server_gpu_pids"] == "4242"
    assert cols["contended"] is True
    assert "0.90 CPU cores" in cols["contention_reason"]
    assert "1 other processes on the measured GPUs" in cols["contention_reason"]


def _start_server(port: int, delay_s: float = 0.002) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            sys.executable,
            str(HERE / "busy_openai.py"),
            "--port",
            str(port),
            "--delay-s",
            str(delay_s),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and "listening" in proc.stdout.readline()
    return proc


@pytest.fixture
def busy_server():
    port = free_port()
    proc = _start_server(port)
    yield port, proc
    proc.kill()
    proc.wait()


def test_the_process_listening_on_the_port_is_the_server(busy_server):
    port, proc = busy_server
    found = listening("127.0.0.1", port)
    assert found.forest is not None and found.forest.roots == [proc.pid]
    assert found.how == f"listening on port {port}: pid {proc.pid} and its children"
    assert found.inside_this_tree  # this test process started it: its time is in this tree
    nobody = listening("127.0.0.1", free_port())
    assert nobody.forest is None and "no process listens there" in nobody.how
    elsewhere = listening("192.0.2.1", port)  # TEST-NET-1: never this machine
    assert elsewhere.forest is None and "not on this machine" in elsewhere.how
    assert is_this_machine("localhost") and not is_this_machine("192.0.2.1")


def test_a_forest_counts_children_and_keeps_the_time_of_a_root_that_ended():
    code = (
        "import subprocess, sys, time\n"
        "c = subprocess.Popen([sys.executable, '-c', 'import time\\nt=time.time()\\n"
        "while time.time()-t<30: pass'])\nprint(c.pid, flush=True)\ntime.sleep(30)"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        forest = ProcessForest({parent.pid, child})  # the child's root is its parent
        assert forest.roots == [parent.pid] and forest.pids() >= {parent.pid, child}
        first = forest.cpu_seconds()
        time.sleep(1.5)
        busy = forest.cpu_seconds()
        assert busy - first > 0.5  # the spinning child's time is the forest's
        parent.kill()
        parent.wait()
        assert forest.cpu_seconds() >= busy  # never backwards when a root ends
    finally:
        parent.kill()
        os.system("pkill -f 'while time.time\\(\\)-t<30' >/dev/null 2>&1")


RUN = [
    "run",
    "--engine",
    "openai",
    "--batch-size",
    "2",
    "--requests",
    "8",
    "--prompt-tokens",
    "8",
    "--new-tokens",
    "32",
    "--meter",
    "estimate",
    "--repeats",
    "2",
    "--warmup",
    "0",
    "--min-seconds",
    "1",
    "--idle-seconds",
    "0",
]


def _wait_quiet(limit_s: float = 60.0) -> None:
    """Let other work on the machine (a previous test's processes) end before a run whose
    point is that a quiet machine reads as quiet."""
    import psutil

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        busy = psutil.cpu_percent(interval=1.0) / 100 * (psutil.cpu_count() or 1)
        if busy < 0.3:
            return


def _run(url: str, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tokenwatt", *RUN, "--url", url, "--out", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_a_run_beside_a_busy_server_reports_its_load_and_is_not_contended(busy_server, tmp_path):
    """The server spins a core while it streams: before, every such row was `contended`."""
    port, proc = busy_server
    _wait_quiet()
    p = _run(f"http://127.0.0.1:{port}/v1", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert (rows["server_processes"] == f"listening on port {port}: pid {proc.pid} and its "
            "children").all()  # fmt: skip
    assert (rows["server_cpu_cores"] > 0.3).all(), rows["server_cpu_cores"]
    assert not rows["contended"].any(), rows["contention_reason"].tolist()
    assert (rows["other_cpu_cores"] < 0.5).all()


def test_an_unrelated_hog_beside_the_server_is_contention(busy_server, tmp_path):
    port, _ = busy_server
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        p = _run(f"http://127.0.0.1:{port}/v1", tmp_path / "o")
    finally:
        hog.kill()
        hog.wait()
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert rows["contended"].all() and (rows["other_cpu_cores"] >= 0.5).all()
    assert (rows["server_cpu_cores"] > 0.3).all()
    assert "contended:" in p.stderr


def test_a_launched_server_is_named_as_launched(tmp_path):
    port = free_port()
    launch = f"{sys.executable} {HERE / 'busy_openai.py'} --port {port} --delay-s 0.002"
    cmd = [sys.executable, "-m", "tokenwatt", *RUN, "--url", f"http://127.0.0.1:{port}/v1",
           "--launch", launch, "--out", str(tmp_path / "o")]  # fmt: skip
    _wait_quiet()
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    rows = pd.read_csv(tmp_path / "o" / "results.csv")
    assert rows["server_processes"].str.startswith("launched by tokenwatt: pid ").all()
    assert (rows["server_cpu_cores"] > 0.3).all()
    assert not rows["contended"].any(), rows["contention_reason"].tolist()


def test_a_server_killed_mid_run_stops_the_run_in_its_own_words(tmp_path, invoke):
    """One trial finishes (two rows: its windows), then the server dies: three trials fail in
    a row, the line names the server and counts one finished trial, not the meter."""
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.002, kill_after=1 + 8) as fake:  # the probe and trial 0's 8
        r = invoke(*RUN[:-8], "--repeats", "5", "--warmup", "0", "--min-seconds", "0",
                   "--idle-seconds", "0", "--request-timeout-s", "2", "--url", fake.url,
                   "--out", str(out))  # fmt: skip
    assert r.exit_code == 1, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("Error")][0]
    assert line.startswith(f"Error: stopped: the server at {fake.url} failed 3 trial(s) in a row")
    assert "; 1 finished trial(s) are saved in " in line
    assert "check that the server is running" in line and "meter" not in line
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "degraded").sum() == 3 and len(rows[rows["status"] == "ok"]) == 2


SERVED_SWEEP = """name: served
engine: openai
server: {url: URL, request_timeout_s: 2}
workload: {batch_size: 2, requests: 8, prompt_tokens: 8, new_tokens: 32}
measure: {meter: estimate, repeats: 5, warmup: 0, min_seconds: 0, idle_seconds: 0}
fidelity: {enabled: false}
out: OUT
"""


def test_a_sweep_does_not_count_a_stopped_served_case_complete(tmp_path):
    """Its finished trial is kept, the case is failed with the stop line, and a rerun with
    --retry-failed measures it again."""
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    cfg = tmp_path / "s.yaml"
    with FakeOpenAI(delay_s=0.002, kill_after=1 + 8) as fake:
        cfg.write_text(SERVED_SWEEP.replace("URL", fake.url).replace("OUT", str(out)))
        p = subprocess.run([sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "-q"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 1, p.stderr
    assert "0 complete" in p.stdout and "1 failed" in p.stdout, p.stdout
    assert "1 of 1 cases failed: 1 x RunStopped: stopped: the server at" in p.stderr, p.stderr
    rows = pd.read_csv(out / "results.csv")
    assert (rows["status"] == "ok").sum() == 2 and (rows["status"] == "failed").sum() == 1
    summary = pd.read_csv(out / "summary.csv")  # the stopped run's windows, flagged so
    assert summary["summary_flags"].str.contains("stopped").all()
    assert not summary["publishable"].any()
    with FakeOpenAI(delay_s=0.002, port=int(fake.url.split(":")[2].split("/")[0])):
        p = subprocess.run([sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "-q",
                            "--retry-failed"], capture_output=True, text=True,
                           timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "1 complete" in p.stdout, p.stdout


def test_the_servers_own_metrics_check_every_trial(tmp_path, invoke):
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.002) as fake:
        r = invoke(*RUN, "--url", fake.url, "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    assert (rows["server_metrics"] == "vllm /metrics").all()
    assert (rows["server_check"] == "agrees").all(), rows["server_check"].tolist()
    whole = rows[rows["window"] == "whole-run"]
    # the server's count over the trial is every token of the trial's requests
    assert (whole["server_generated_tokens"] == whole["tokens_generated"]).all()
    assert (rows["server_prompt_tokens"] % 8 == 0).all()
    assert (rows["server_ttft_s_mean"] > 0).all() and (rows["server_itl_s_mean"] > 0).all()


def test_a_server_whose_word_disagrees_is_flagged(tmp_path, invoke):
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.002, metrics_skew=1.5) as fake:  # counts half as many again
        r = invoke(*RUN, "--url", fake.url, "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    assert rows["server_check"].str.startswith("tokens ").all()
    assert "server-disagrees:" in r.output


def test_a_server_without_metrics_leaves_the_columns_empty(tmp_path, invoke):
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.002, metrics=False) as fake:
        r = invoke(*RUN, "--url", fake.url, "--out", str(out))
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    assert rows["server_metrics"].isna().all() and rows["server_check"].isna().all()


def test_latency_disagreement_needs_both_the_factor_and_the_slack():
    from tokenwatt.engines.server_metrics import disagreement

    theirs = {"server_generated_tokens": 100.0, "server_ttft_s_mean": 0.100,
              "server_itl_s_mean": 0.001}  # fmt: skip
    assert disagreement(theirs, 100, 0.140, 0.0012) == "agrees"  # within 1.5x
    assert disagreement(theirs, 100, 0.100, 0.004) == "agrees"  # 4x, but 3 ms: HTTP's share
    # a client's TTFT includes the server's front end: only a shorter one disagrees
    assert disagreement(theirs, 100, 0.400, 0.001) == "agrees"
    assert disagreement(theirs, 100, 0.050, 0.001) == "mean TTFT 50.00 ms here vs 100.00 ms " \
        "by the server"  # fmt: skip
    assert disagreement(theirs, 100, 0.100, 0.010) == "mean ITL 10.00 ms here vs 1.00 ms by " \
        "the server"  # fmt: skip
    assert disagreement(theirs, 101, None, None) == "agrees"  # 1% of tokens
    assert disagreement(theirs, 102, None, None).startswith("tokens 102 here vs 100")


def test_a_sweep_keeps_every_served_cases_request_records(tmp_path):
    """requests.jsonl is measured in a case's staging folder and merged with its rows."""
    import json

    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    cfg = tmp_path / "s.yaml"
    with FakeOpenAI(delay_s=0.001) as fake:
        text = SERVED_SWEEP.replace("URL", fake.url).replace("OUT", str(out))
        cfg.write_text(text.replace("repeats: 5", "repeats: 2").replace(
            "batch_size: 2", "batch_size: [1, 2]"))  # fmt: skip
        p = subprocess.run([sys.executable, "-m", "tokenwatt", "sweep", str(cfg), "-q"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    lines = [json.loads(ln) for ln in (out / "requests.jsonl").read_text().splitlines()]
    rows = pd.read_csv(out / "results.csv")
    assert {ln["case_id"] for ln in lines} == set(rows["case_id"])
    assert len(set(rows["case_id"])) == 2
    assert len(lines) == 2 * 2 * 8  # two cases, two trials, eight requests each


def test_an_open_loop_held_back_by_its_cap_says_so(tmp_path, invoke):
    from tests.fake_openai import FakeOpenAI

    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.002) as fake:  # 50 arrivals/s, one in flight, 32 tokens each
        r = invoke(*RUN, "--request-rate", "50", "--batch-size", "1", "--url", fake.url,
                   "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    assert (rows[rows["window"] == "whole-run"]["requests_delayed"] > 0).all()
    assert "load-capped:" in r.output and "raise --batch-size" in r.output
