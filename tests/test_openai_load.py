"""Engine openai's load shapes (engines/load_shape.py): open-loop arrivals at a rate (Poisson,
gamma) checked at the server with a Kolmogorov-Smirnov test, batch_size as the cap of requests
in flight, trace replay with per-request lengths, requests.jsonl, per-request inter-token
latency, and bad load-shape input refused in one line before anything runs."""

from __future__ import annotations

import json
import math
import re
import shlex
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tokenwatt.config import RunConfig, Workload, case_id, validate
from tokenwatt.engines.base import RequestTiming
from tokenwatt.engines.load_shape import LoadShape, gamma_arrivals, read_trace
from tokenwatt.engines.openai import OpenAIEngine
from tokenwatt.engines.openai_stream import run_requests
from tokenwatt.engines.serving import quantile, window_stats, windows
from tokenwatt.errors import UserError
from tokenwatt.runner.serving import REQUESTS_JSONL, append_requests

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

M = "fake-model"
README = Path(__file__).resolve().parents[1] / "README.md"
# Accept the asked distribution unless the evidence against it is strong: a seeded schedule
# fails this only when the arrivals are not what was asked (the broken-code checks did).
P_MIN = 1e-3


Arrived = tuple[list[float], list[RequestTiming], FakeOpenAI]


def _arrive(rate: float, burstiness: float, n: int, cap: int = 64,
            delay_s: float = 0.0) -> Arrived:  # fmt: skip
    """Send n one-token-prompt requests at the shape's arrivals; the server's arrival times."""
    w = Workload(request_rate=rate, burstiness=burstiness, requests=n, batch_size=cap, seed=7)
    offsets = LoadShape(w).offsets(0)
    with FakeOpenAI(delay_s=delay_s) as fake:
        rs = run_requests(fake.url, M, [[1]] * n, 2, cap, 5.0, arrivals=offsets)
    return offsets, rs, fake


# -- arrivals at a rate ---------------------------------------------------------------------


def test_poisson_arrivals_at_the_server_are_exponential_at_the_rate():
    rate, n = 20.0, 120
    offsets, rs, fake = _arrive(rate, 1.0, n)
    assert all(r.ok for r in rs) and len(fake.arrivals) == n
    gaps = np.diff(sorted(fake.arrivals))
    p = stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue
    print(f"KS exponential({rate}/s) on {n - 1} server gaps: p = {p:.3f}")
    assert p > P_MIN
    assert stats.kstest(gaps, "expon", args=(0, 1 / (2 * rate))).pvalue < P_MIN  # it can fail
    # each request is due at its drawn time (exactly) and never sent before it
    due = [r.scheduled_t - rs[0].scheduled_t for r in rs]  # type: ignore[attr-defined]
    assert due == pytest.approx(offsets, abs=1e-9)
    assert all(r.sent_t >= r.scheduled_t for r in rs)  # type: ignore[attr-defined]
    assert sorted(fake.arrivals)[0] >= rs[0].scheduled_t  # type: ignore[attr-defined]
    assert not any(r.delayed for r in rs)  # type: ignore[attr-defined]  # far below the cap


def test_gamma_arrivals_at_the_server_have_the_asked_shape_and_mean():
    rate, shape, n = 20.0, 4.0, 120  # shape 4: far more regular than Poisson
    _, _, fake = _arrive(rate, shape, n)
    gaps = np.diff(sorted(fake.arrivals))
    p = stats.kstest(gaps, "gamma", args=(shape, 0, 1 / (rate * shape))).pvalue
    print(f"KS gamma(shape {shape}, {rate}/s) on {n - 1} server gaps: p = {p:.3f}")
    assert p > P_MIN
    assert stats.kstest(gaps, "expon", args=(0, 1 / rate)).pvalue < P_MIN  # not Poisson


def test_arrivals_are_seeded_reproducible_and_fresh_per_pass():
    a = gamma_arrivals(4.0, 0.5, 500, seed=3, call=0)
    assert a == gamma_arrivals(4.0, 0.5, 500, seed=3, call=0) and a[0] == 0.0
    assert a != gamma_arrivals(4.0, 0.5, 500, seed=3, call=1)
    assert a != gamma_arrivals(4.0, 0.5, 500, seed=4, call=0)
    assert gamma_arrivals(4.0, 1.0, 5, seed=-1, call=0)[0] == 0.0  # a negative seed works
    gaps = np.diff(a)  # the draws themselves, without any timing: gamma(0.5) at 4/s
    assert stats.kstest(gaps, "gamma", args=(0.5, 0, 1 / 2.0)).pvalue > P_MIN
    assert np.mean(gaps) == pytest.approx(0.25, rel=0.2)


def test_batch_size_caps_the_requests_in_flight_and_counts_those_held_back():
    # 30 arrivals within 30 ms, each streaming 2 tokens 20 ms apart: the cap of 3 fills
    offsets, rs, fake = _arrive(1000.0, 1.0, 30, cap=3, delay_s=0.02)
    assert fake.max_in_flight == 3 and all(r.ok for r in rs)
    assert sum(r.delayed for r in rs) > 0  # type: ignore[attr-defined]
    held = [r for r in rs if r.delayed]  # type: ignore[attr-defined]
    assert all(r.sent_t >= r.scheduled_t for r in held)  # type: ignore[attr-defined]


# -- traces ---------------------------------------------------------------------------------


def _trace(tmp_path: Path, lines: list[object]) -> str:
    p = tmp_path / "trace.jsonl"
    p.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return str(p)


TRACE = [{"timestamp": 0, "input_length": 5, "output_length": 3, "hash_ids": [1]},
         {"timestamp": 150, "input_length": 9, "output_length": 6},
         {"timestamp": 150, "input_tokens": 2, "output_tokens": 2},  # Mooncake's aliases
         {"timestamp": 400, "input_length": 4, "output_length": 5}]  # fmt: skip


def test_trace_replays_at_its_timestamps_with_its_lengths(tmp_path):
    trace = _trace(tmp_path, ["", *TRACE])  # a blank line is skipped
    with FakeOpenAI() as fake:
        cfg = validate({"engine": "openai", "server": {"url": fake.url},
                        "workload": {"batch_size": 4, "trace": trace}})  # fmt: skip
        eng = OpenAIEngine(cfg, out_dir=tmp_path)
        eng.prepare(lambda *a: None)
        n_probe = len(fake.bodies)
        batch = eng.generate()
        eng.close()
    bodies = fake.bodies[n_probe:]
    arrived = fake.arrivals[n_probe:]
    assert len(bodies) == 4 and [len(b["prompt"]) for b in bodies] in (
        [5, 9, 2, 4],
        [5, 2, 9, 4],
    )  # two lines share a timestamp: either may arrive first
    by_prompt = {len(b["prompt"]): b["max_tokens"] for b in bodies}
    assert by_prompt == {5: 3, 9: 6, 2: 2, 4: 5}  # max_tokens = the line's output_length
    rs = batch.requests
    due = [r.scheduled_t - rs[0].scheduled_t for r in rs]  # type: ignore[attr-defined]
    assert due == pytest.approx([0.0, 0.15, 0.15, 0.4], abs=1e-9)  # ms in the file
    assert all(a >= r.scheduled_t for a, r in zip(sorted(arrived), rs))  # type: ignore[attr-defined]
    assert [r.output_tokens for r in rs] == [3, 6, 2, 5] and batch.tokens_generated == 16
    cols = eng.shape.columns()
    assert cols["load_shape"] == "trace" and cols["new_tokens"] == 4 and cols["prompt_tokens"] == 5
    assert cols["request_rate"] == pytest.approx(3 / 0.4)


def test_trace_seconds_field_and_sorted_order(tmp_path):
    got = read_trace(_trace(tmp_path, [{"timestamp_s": 0.5, "input_length": 1,
                                        "output_length": 2}]))  # fmt: skip
    assert got[0].t_s == 0.5 and got[0].output_length == 2


@pytest.mark.parametrize("lines,needle", [
    (["{not json"], "line 1 is not JSON"),
    ([{"timestamp": -5, "input_length": 1, "output_length": 1}], "timestamp is -5"),
    ([{"timestamp": 0, "input_length": 1}], "no output_length"),
    ([{"input_length": 1, "output_length": 1}], "exactly one of timestamp"),
    ([{"timestamp": 0, "timestamp_s": 0, "input_length": 1, "output_length": 1}],
     "exactly one of timestamp"),
    ([{"timestamp": 0, "input_length": 0, "output_length": 1}], "input_length is 0"),
    ([{"timestamp": 9, "input_length": 1, "output_length": 1},
      {"timestamp": 1, "input_length": 1, "output_length": 1}], "line 2: arrives at 0.001 s"),
    ([[1, 2]], "not a JSON object"),
    ([], "is empty"),
])  # fmt: skip
def test_bad_trace_lines_are_one_line_errors(tmp_path, lines, needle):
    with pytest.raises(UserError, match=re.escape(needle)) as e:
        read_trace(_trace(tmp_path, lines))
    assert "\n" not in str(e.value) and str(e.value).startswith("workload.trace:")


# -- windows and per-request latency --------------------------------------------------------


def _req(sent: float, first: float, end: float, tokens: int) -> RequestTiming:
    times = list(np.linspace(first, end, tokens))
    return RequestTiming(sent_t=sent, first_token_t=first, end_t=end, token_times=times,
                         output_tokens=tokens)  # fmt: skip


def test_per_request_itl_beside_the_pooled_one():
    a = _req(0.0, 1.0, 4.0, 4)  # 3 gaps of 1 s: its mean ITL is 1 s
    b = _req(0.0, 2.0, 3.0, 11)  # 10 gaps of 0.1 s
    late = _req(0.0, 9.0, 10.0, 3)  # its first token is outside the window
    s = window_stats([a, b, late], 0.0, 5.0)
    assert s["itl_per_request_s_mean"] == pytest.approx(0.55)  # (1 + 0.1) / 2 requests
    assert s["itl_per_request_s_median"] == pytest.approx(0.55)
    assert s["itl_per_request_s_p90"] == pytest.approx(0.91)
    assert s["itl_s_median"] == pytest.approx(0.1)  # pooled: b's ten gaps outweigh a's three
    one = _req(0.0, 1.0, 1.0, 1)  # a single token has no inter-token latency
    assert window_stats([one], 0, 5)["itl_per_request_s_mean"] is None


def test_open_loop_steady_state_is_first_finish_to_last_send():
    rs = [_req(0.0, 0.5, 3.0, 2), _req(1.0, 1.5, 4.0, 2), _req(2.5, 3.0, 6.0, 2)]
    assert windows(rs, 8, open_loop=True)["steady"] is None  # the 1st finish after the last send
    rs.append(_req(5.0, 5.5, 7.0, 2))
    assert windows(rs, 8, open_loop=True) == {"whole": (0.0, 7.0), "steady": (3.0, 5.0)}
    assert windows(rs, 8)["steady"] is None  # the closed-loop rule needs 8 first tokens


# -- config and bad input -------------------------------------------------------------------


def test_new_fields_at_their_defaults_keep_case_ids():
    cfg = RunConfig()
    d = cfg.model_dump(mode="json")
    assert case_id(cfg) == case_id(validate({**d, "workload": {**d["workload"],
                                                               "burstiness": 1.0}}))  # fmt: skip
    rate = validate({**d, "engine": "openai", "server": {"url": "http://127.0.0.1:1/v1"},
                     "workload": {"requests": 8, "request_rate": 2.0}})  # fmt: skip
    assert case_id(rate) != case_id(rate.model_copy(update={"workload": Workload(
        requests=8, request_rate=3.0)}))  # fmt: skip


def _one_line_exit_2(result) -> str:
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert err.startswith("Error: ") and "\n" not in err and "Traceback" not in result.output
    return err


@pytest.mark.parametrize("args,needle", [
    (["--trace", "nope.jsonl"], "workload.trace: 'nope.jsonl' does not exist"),
    (["--trace", "BAD"], "line 2: timestamp is -1;"),
    (["--request-rate", "4"], "needs workload.requests"),
    (["--request-rate", "0", "--requests", "4"], "workload.request_rate"),
    (["--burstiness", "2"], "workload.burstiness shapes request_rate"),
    (["--request-rate", "4", "--requests", "4", "--trace", "BAD"], "two load shapes"),
    (["--trace", "BAD", "--requests", "4"], "a trace sends one request per line"),
])  # fmt: skip
def test_bad_load_shape_input_exits_2_in_one_line_before_anything(tmp_path, args, needle):
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    bad = _trace(tmp_path, [{"timestamp": 0, "input_length": 1, "output_length": 1},
                            {"timestamp": -1, "input_length": 1, "output_length": 1}])  # fmt: skip
    args = [bad if a == "BAD" else a for a in args]
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["run", "--engine", "openai", "--url", "http://127.0.0.1:9/v1",
                                 "--meter", "estimate", *args, "--out", str(out)],
                           catch_exceptions=False)  # fmt: skip
    assert needle in _one_line_exit_2(r) and not out.exists()


def test_load_shapes_are_for_engine_openai(invoke):
    r = invoke("run", "--request-rate", "4", "--requests", "8", "--out", "/nonexistent/x")
    assert "workload.request_rate is for engine openai" in _one_line_exit_2(r)
    r = invoke("run", "--trace", "t.jsonl", "--out", "/nonexistent/x")
    assert "workload.trace is for engine openai; drop --trace" in _one_line_exit_2(r)


# -- requests.jsonl -------------------------------------------------------------------------


def test_requests_jsonl_cuts_a_torn_line_before_appending(tmp_path):
    (tmp_path / REQUESTS_JSONL).write_text('{"trial": 0}\n{"trial": 1, "sen')
    detail = {"trial": 2, "requests": [{
        "pass": 0, "request": 0, "scheduled_t_s": None, "sent_t_s": 10.0,
        "first_token_t_s": 10.5, "end_t_s": 11.0, "output_tokens": 3, "prompt_tokens": 4,
        "delayed": False, "steady_state": False, "error": ""}]}  # fmt: skip
    append_requests(tmp_path, {"run_id": "r", "case_id": "c"}, detail)
    lines = [json.loads(x) for x in (tmp_path / REQUESTS_JSONL).read_text().splitlines()]
    assert [x["trial"] for x in lines] == [0, 2]
    assert lines[1]["sent_s"] == 0.0 and lines[1]["first_token_s"] == 0.5
    assert lines[1]["trial_start_clock_s"] == 10.0 and lines[1]["error"] is None


def _readme_command() -> list[str]:
    """The README's open-loop example, as a user copies it (continuation lines joined)."""
    text = README.read_text(encoding="utf-8")
    commands = re.findall(r"^tokenwatt run --engine openai (?:[^\n]*\\\n)*[^\n]*$", text, re.M)
    found = [c for c in commands if "--request-rate" in c]
    assert len(found) == 1, "the README's openai section has one --request-rate example"
    return shlex.split(found[0].replace("\\\n", " "))


@pytest.fixture
def sim_gpu(monkeypatch):
    from tokenwatt.sim import nvml as sim
    from tokenwatt.sim.profiles import steps

    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    sim.configure(1, steps(seed=11))


def test_readme_request_rate_run_writes_requests_that_recompute_the_row(tmp_path, invoke,
                                                                         sim_gpu):  # fmt: skip
    cmd = _readme_command()
    assert cmd[:2] == ["tokenwatt", "run"] and "--request-rate" in cmd and "60" in cmd
    out = tmp_path / "o"
    quick = ["--new-tokens", "8", "--prompt-tokens", "8", "--repeats", "1", "--warmup", "0",
             "--min-seconds", "0", "--idle-seconds", "0.2", "--out", str(out)]  # fmt: skip
    with FakeOpenAI(delay_s=0.002) as fake:
        args = [fake.url if a.startswith("http://127.0.0.1:8000") else a for a in cmd[1:]]
        r = invoke(*args, *quick)
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv").set_index("window")
    assert set(rows["load_shape"]) == {"poisson"} and set(rows["request_rate"]) == {4.0}
    assert (rows["requests_delayed"] == 0).all() and (rows["status"] == "ok").all()
    lines = [json.loads(x) for x in (out / REQUESTS_JSONL).read_text().splitlines()]
    n = 60 * int(rows.loc["whole-run", "repetitions"])
    assert len(lines) == n and {x["run_id"] for x in lines} == set(rows["run_id"])
    assert {x["clock"] for x in lines} == {"monotonic"} and not any(x["error"] for x in lines)
    first = [x for x in lines if x["pass"] == 0]
    assert [x["scheduled_s"] for x in first] == pytest.approx(
        gamma_arrivals(4.0, 1.0, 60, seed=0, call=0), abs=1e-9
    )  # the seeded schedule
    for window, keep in (
        ("whole-run", lambda x: True),
        ("steady-state", lambda x: x["steady_state"]),
    ):
        got = [x for x in lines if keep(x)]
        ttft = [x["first_token_s"] - x["sent_s"] for x in got]
        itl = [(x["end_s"] - x["first_token_s"]) / (x["output_tokens"] - 1) for x in got]
        row = rows.loc[window]
        assert row["ttft_s_median"] == pytest.approx(quantile(ttft, 0.5), abs=1e-9)
        assert row["ttft_s_p90"] == pytest.approx(quantile(ttft, 0.9), abs=1e-9)
        assert row["itl_per_request_s_mean"] == pytest.approx(sum(itl) / len(itl), abs=1e-9)
        assert row["itl_per_request_s_p99"] == pytest.approx(quantile(itl, 0.99), abs=1e-9)
    assert 0 < len([x for x in lines if x["steady_state"]]) < n
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["load_shape"]) == {"poisson"}
    assert not math.isnan(summary["itl_per_request_s_p90_mean"].iloc[0])


def test_trace_run_through_the_cli_and_the_fixed_shape_rows(tmp_path, invoke):
    trace = _trace(tmp_path, TRACE)
    out = tmp_path / "o"
    quick = ["--meter", "estimate", "--repeats", "1", "--warmup", "0", "--min-seconds", "0",
             "--idle-seconds", "0.1", "--out", str(out)]  # fmt: skip
    with FakeOpenAI(delay_s=0.001) as fake:
        r = invoke("run", "--engine", "openai", "--url", fake.url, "--batch-size", "4",
                   "--trace", trace, *quick)  # fmt: skip
        assert r.exit_code == 0, r.output
        r = invoke("run", "--engine", "openai", "--url", fake.url, "--batch-size", "2",
                   "--requests", "4", "--new-tokens", "3", *quick)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = pd.read_csv(out / "results.csv")
    traced, fixed = rows[rows["load_shape"] == "trace"], rows[rows["load_shape"] != "trace"]
    assert set(traced["prompt_tokens"]) == {5} and set(traced["new_tokens"]) == {4}
    assert set(traced["tokens_generated"]) >= {16} and set(fixed["load_shape"]) == {
        "fixed-concurrency"} and fixed["request_rate"].isna().all()  # fmt: skip
    lines = [json.loads(x) for x in (out / REQUESTS_JSONL).read_text().splitlines()]
    ran = [x for x in lines if x["run_id"] == traced["run_id"].iloc[0]]
    assert [x["scheduled_s"] for x in ran] == pytest.approx([0, 0.15, 0.15, 0.4], abs=1e-9)
    closed = [x for x in lines if x["run_id"] == fixed["run_id"].iloc[0]]
    assert len(closed) == 4 and all(x["scheduled_s"] is None for x in closed)
    assert min(x["sent_s"] for x in closed) == 0.0
