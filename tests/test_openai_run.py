"""`tokenwatt run --engine openai` end to end against tests/fake_openai.py: the boards' energy
of exactly the windows measured (simulated NVML ground truth), rows per window, degraded
trials when the server dies, bad input refused before anything is written, and compare."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.sim import nvml as sim
from tokenwatt.sim.profiles import steps

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

QUICK = ["--batch-size", "4", "--requests", "16", "--new-tokens", "24", "--prompt-tokens", "8",
         "--repeats", "2", "--min-seconds", "0", "--idle-seconds", "0.3",
         "--warmup", "0"]  # fmt: skip


@pytest.fixture
def sim_gpu(monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    prof = steps(seed=11)
    sim.configure(1, prof)
    return prof


# The most the client may see a server event after the server wrote it (or send a request
# before the server has it): scheduling delays on a busy 2-core machine, with the GIL shared by
# the server, the client and the sampler.
LAG_S = 0.1


def _energy(prof, a, b):
    return prof.energy(a - sim.STATE.origin, b - sim.STATE.origin)


def _server_windows(served, concurrency):
    """Each window's edges as the server saw them, widened by the client's lag: ((start_lo,
    start_hi), (end_lo, end_hi)). The whole run opens as the first request is sent (at most
    LAG_S before the server has it) and ends with the last response; the steady state (the
    ML.ENERGY rule) opens at the concurrency-th first token and closes at the
    (N - concurrency)-th finish. Every client time is at or after its own server event (and at
    most LAG_S after), so is each order statistic."""
    arrived = min(s["arrived"] for s in served)
    firsts = sorted(s["first"] for s in served)
    lasts, dones = sorted(s["last"] for s in served), sorted(s["done"] for s in served)
    k = len(served) - concurrency
    first_c = firsts[concurrency - 1]
    return {
        "whole-run": ((arrived - LAG_S, arrived), (lasts[-1], dones[-1] + LAG_S)),
        "steady-state": ((first_c, first_c + LAG_S), (lasts[k - 1], dones[k - 1] + LAG_S)),
    }


def test_gpu_energy_is_that_of_exactly_the_windows_the_server_served(tmp_path, invoke, sim_gpu):
    """The truth is the simulated board's energy between the server's own request times (the
    fake records them), never the marks tokenwatt wrote: a window placed on the wrong request,
    or the two windows swapped, misses by a whole request's energy."""
    out = tmp_path / "o"
    with FakeOpenAI(delay_s=0.02) as fake:  # 24 tokens: ~0.5 s a request, ~2 s a trial
        r = invoke("run", "--engine", "openai", "--url", fake.url, "--gpus", "0", *QUICK,
                   "--out", str(out))  # fmt: skip
        served = list(fake.served)
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    assert list(rows["window"]) == ["whole-run", "steady-state"] * 2
    assert set(rows["engine"]) == {"openai"} and set(rows["status"]) == {"ok"}
    run = json.loads((out / "run.json").read_text())["runs"][0]
    trials = sorted(served, key=lambda s: s["arrived"])[-2 * 16 :]  # after the probe: 2 x 16
    assert len(served) >= 2 * 16 and all(s["done"] is not None for s in trials)
    for trial in run["trials"]:
        assert [m["phase"] for m in trial["marks"]] == ["ramp-up", "steady", "ramp-down", "end"]
        got = rows[rows["trial"] == trial["trial"]].set_index("window")
        requests = trials[16 * trial["trial"] : 16 * (trial["trial"] + 1)]
        for window, ((s_lo, s_hi), (e_lo, e_hi)) in _server_windows(requests, 4).items():
            lo, hi = _energy(sim_gpu, s_hi, e_lo), _energy(sim_gpu, s_lo, e_hi)
            j = got.loc[window, "total_j"]
            print(f"trial {trial['trial']} {window}: {j:.2f} J, server truth {lo:.2f}-{hi:.2f} J")
            assert 0.99 * lo <= j <= 1.01 * hi, (window, j, lo, hi)
            assert got.loc[window, "board0_total_j"] == pytest.approx(j)
    whole = rows[rows["window"] == "whole-run"]
    assert set(whole["tokens_generated"]) == {16 * 24}  # from the streamed usage
    steady = rows[rows["window"] == "steady-state"]
    assert (steady["tokens_generated"] < 16 * 24).all() and (steady["ttft_s_median"] > 0).all()
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["window"]) == ["whole-run", "steady-state"]
    assert set(summary["run_id"]) == {run["run_id"]} and len(run["window_summaries"]) == 2


def test_a_server_dying_mid_run_degrades_trials_and_keeps_finished_ones(tmp_path, invoke,
                                                                         sim_gpu):  # fmt: skip
    out = tmp_path / "o"
    # 1 probe + 16 requests of trial 0 finish; the server dies inside trial 1
    with FakeOpenAI(delay_s=0.002, kill_after=24) as fake:
        r = invoke("run", "--engine", "openai", "--url", fake.url, "--gpus", "0",
                   *QUICK[:-6], "--repeats", "3", "--idle-seconds", "0.2", "--warmup", "0",
                   "--min-seconds", "0", "--request-timeout-s", "2",
                   "--out", str(out))  # fmt: skip
    rows = pd.read_csv(out / "results.csv")
    assert (rows[rows["trial"] == 0]["status"] == "ok").all()
    later = rows[rows["trial"] > 0]
    assert len(later) and (later["status"] == "degraded").all()
    assert later["status_reason"].str.contains("fail").all()
    assert r.exit_code == 1 and "degraded" in r.output  # some trials failed: exit 1
    assert len(pd.read_csv(out / "summary.csv")) == 2  # the finished trial's windows


def test_unreachable_server_is_refused_before_anything_is_written(tmp_path, invoke):
    out = tmp_path / "o"
    with FakeOpenAI() as fake:
        url = fake.url
    r = invoke("run", "--engine", "openai", "--url", url, *QUICK, "--out", str(out))
    assert r.exit_code == 2 and "server.url" in r.output and not out.exists()
    errors = [ln for ln in r.output.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "cannot reach" in errors[0]


def test_compare_and_report_show_engines_side_by_side(tmp_path, invoke, fast_args, sim_gpu):
    out = tmp_path / "o"
    base = ["--idle-seconds", "0.2", "--repeats", "2", "--min-seconds", "0", "--warmup", "0",
            "--batch-size", "2", "--new-tokens", "6", "--prompt-tokens", "8",
            "--meter", "estimate"]  # fmt: skip
    assert invoke("run", "--model", "preset:tiny-llama", "--precision", "fp32", "--device", "cpu",
                  "--no-fidelity", *base, "--out", str(out)).exit_code == 0  # fmt: skip
    with FakeOpenAI(delay_s=0.001, models=("preset:tiny-llama",)) as fake:
        r = invoke("run", "--engine", "openai", "--url", fake.url, "--precision", "fp32",
                   "--requests", "8", *base, "--out", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    r = invoke("compare", str(out), "--baseline", "engine=transformers")
    assert r.exit_code == 0, r.output
    assert "openai" in r.output and "total_j_per_token" in r.output.replace("\n", "")
    r = invoke("report", str(out))
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert "engine=transformers" in text and "openai" in text and "steady-state" in text
    assert "| engine | window |" in text  # the summary tells the engines and windows apart
    from tokenwatt.analysis.compare import ok_trials
    from tokenwatt.results.load import load_results

    trials = ok_trials(load_results(str(out)))
    served = trials[(trials["engine"] == "openai") & (trials["window"] == "whole-run")]
    assert (served["j_per_request"] == served["total_j"] / served["requests"]).all()
