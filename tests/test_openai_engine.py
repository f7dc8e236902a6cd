"""Engine openai: the streaming client, the serving windows, the launcher and the engine,
against tests/fake_openai.py (a local threaded server; nothing leaves 127.0.0.1)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest

from tests.served import free_port
from tokenwatt.config import validate
from tokenwatt.engines.base import RequestTiming
from tokenwatt.engines.launch import LaunchedServer
from tokenwatt.engines.openai import PROMPT_ID_RANGE, OpenAIEngine
from tokenwatt.engines.openai_stream import http_get, run_requests
from tokenwatt.engines.serving import (
    chunk_tokens,
    latency_stats,
    phase_marks,
    tokens_between,
    window_stats,
    windows,
)
from tokenwatt.errors import UserError

sys.path.insert(0, str(Path(__file__).parent))
from fake_openai import FakeOpenAI  # noqa: E402

FAKE = Path(__file__).parent / "fake_openai.py"
M = "fake-model"


def _cfg(url: str, **server: object) -> object:
    return validate({"engine": "openai", "server": {"url": url, **server},
                     "workload": {"batch_size": 2, "prompt_tokens": 5, "new_tokens": 4,
                                  "requests": 6}})  # fmt: skip


def _engine(url: str, tmp_path: Path, **server: object) -> OpenAIEngine:
    return OpenAIEngine(_cfg(url, **server), out_dir=tmp_path)


def _phases() -> tuple[list[tuple[str, str]], object]:
    seen: list[tuple[str, str]] = []
    return seen, lambda event, text: seen.append((event, text))


# -- the streaming client ------------------------------------------------------------------


def test_stream_counts_tokens_from_usage_and_sends_the_request_fields():
    prompts = [[1, 2, 3], [4, 5], "a text prompt"]
    with FakeOpenAI() as fake:
        rs = run_requests(fake.url, M, prompts, 5, 2, 5.0, extra_body={"ignore_eos": True})
    assert [r.output_tokens for r in rs] == [5, 5, 5]
    assert [r.prompt_tokens for r in rs] == [3, 2, 3]  # in prompt order
    for r in rs:
        assert r.ok and r.counted_from == "usage" and len(r.token_times) == 5
        assert r.sent_t <= r.first_token_t == r.token_times[0] <= r.token_times[-1] <= r.end_t
    body = fake.bodies[0]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0 and body["max_tokens"] == 5 and body["ignore_eos"] is True
    assert sorted(map(str, (b["prompt"] for b in fake.bodies))) == sorted(map(str, prompts))


def test_no_usage_counts_chunks_and_says_so():
    with FakeOpenAI(mode="no_usage") as fake:
        rs = run_requests(fake.url, M, [[1]] * 2, 4, 1, 5.0)
    assert all(r.ok and r.output_tokens == 4 and r.counted_from == "chunks" for r in rs)


def test_exactly_concurrency_requests_in_flight():
    with FakeOpenAI(delay_s=0.002) as fake:
        rs = run_requests(fake.url, M, [[1, 2]] * 12, 6, 3, 5.0)
    assert all(r.ok for r in rs) and len(fake.bodies) == 12
    assert fake.max_in_flight == 3


def test_server_errors_are_per_request_lines():
    with FakeOpenAI(mode="error500") as fake:
        rs = run_requests(fake.url, M, [[1]] * 3, 4, 2, 5.0)
    assert [r.error for r in rs] == ["HTTP 500: fake engine crashed"] * 3
    assert not any(r.ok for r in rs)


def test_refused_connection_is_a_request_error():
    with FakeOpenAI(mode="refuse") as fake:
        rs = run_requests(fake.url, M, [[1]] * 2, 4, 2, 5.0)
    assert all("ConnectionRefusedError" in r.error and "\n" not in r.error for r in rs)


def test_silent_stream_times_out():
    with FakeOpenAI(mode="stall", after=2) as fake:
        rs = run_requests(fake.url, M, [[1]], 8, 1, 0.3)
    assert rs[0].error.startswith("no data for 0.3 s") and len(rs[0].token_times) == 2


def test_stream_cut_without_done_is_an_error():
    with FakeOpenAI(mode="die", after=3) as fake:
        rs = run_requests(fake.url, M, [[1]] * 2, 8, 1, 5.0)
    assert all("after 3 chunks" in r.error for r in rs), [r.error for r in rs]


def test_server_killed_mid_trial_keeps_finished_requests():
    with FakeOpenAI(delay_s=0.002, kill_after=3) as fake:
        rs = run_requests(fake.url, M, [[1]] * 8, 12, 2, 5.0)
    ok = [r for r in rs if r.ok]
    # the 3rd finish kills it; the one request in flight beside it may just have finished too
    assert 3 <= len(ok) <= 4 and all(r.output_tokens == 12 for r in ok)
    assert all(r.error and r.end_t is not None for r in rs if not r.ok)


# -- windows and figures (hand-made timings) -----------------------------------------------


def _req(sent: float, first: float, end: float, times: list[float] | None = None,
         tokens: int = 0) -> RequestTiming:  # fmt: skip
    times = times if times is not None else [first]
    return RequestTiming(sent_t=sent, first_token_t=first, end_t=end, token_times=times,
                         output_tokens=tokens or len(times))  # fmt: skip


def test_steady_state_rule_n8_concurrency2():
    # pairs sent at 0, 10, 20, 30; first tokens 1 s later; each ends 10 s after it is sent
    rs = [_req(s, s + 1 + 0.5 * (i % 2), s + 10) for i, s in enumerate([0, 0, 10, 10, 20, 20,
                                                                       30, 30])]  # fmt: skip
    w = windows(rs, 2)
    assert w["whole"] == (0, 40)
    assert w["steady"] == (1.5, 30)  # 2nd first token .. 6th (= 8 - 2) finish
    assert phase_marks(rs, 2) == [("ramp-up", 0), ("steady", 1.5), ("ramp-down", 30),
                                  ("end", 40)]  # fmt: skip


def test_steady_state_small_and_empty_cases():
    rs = [_req(0, 1, 5), _req(0, 3, 8), _req(5, 6, 12)]
    assert windows(rs, 2)["steady"] == (3, 5)  # N=3, c=2: 2nd first token .. 1st finish
    assert windows(rs[:2], 2) == {"whole": (0, 8), "steady": None}  # N <= concurrency
    assert phase_marks(rs[:2], 2) == [("ramp-up", 0), ("end", 8)]
    early = [_req(0, 1, 2), _req(0, 3, 8), _req(2, 4, 9)]  # 1st finish before 2nd first token
    assert windows(early, 2)["steady"] is None
    assert windows([], 2) == {"whole": None, "steady": None} and phase_marks([], 2) == []


def test_chunk_tokens_spread_usage_exactly():
    r = _req(0, 1, 5, [1, 2, 3, 4], tokens=10)
    assert chunk_tokens(r) == [2, 3, 2, 3] and sum(chunk_tokens(r)) == 10


def test_window_stats_tokens_ttft_itl():
    a = _req(0.0, 1.0, 4.0, [1.0, 2.0, 3.0, 4.0], tokens=8)  # 2 tokens a chunk, gaps of 1 s
    b = _req(2.0, 2.5, 3.0, [2.5, 2.75, 3.0])  # 1 token a chunk, gaps of 0.25 s
    failed = RequestTiming(sent_t=0, first_token_t=1.5, end_t=2.0, token_times=[1.5],
                           output_tokens=1, error="HTTP 500: x")  # fmt: skip
    s = window_stats([a, b, failed], 1.5, 3.5)
    assert s["tokens"] == 2 + 2 + 3  # a's chunks at 2 and 3; all of b; nothing of `failed`
    assert s["seconds"] == 2.0 and s["tokens_per_s"] == 3.5 and s["requests_finished"] == 1
    assert s["ttft_s_median"] == s["ttft_s_p90"] == 0.5  # only b's first token is inside
    # a: one gap (2->3) of 1 s over 2 tokens = 0.5 s twice; b: 0.25 s twice
    assert s["itl_s_median"] == pytest.approx(0.375)
    assert s["itl_s_p90"] == pytest.approx(0.5)
    empty = window_stats([a], 10, 11)
    assert empty["tokens"] == 0 and empty["ttft_s_median"] is None and empty["itl_s_p90"] is None
    assert tokens_between([a, b, failed], 1.5, 3.5) == 7
    pooled = latency_stats([([a], 0.0, 4.0), ([b], 2.0, 3.0)])  # two passes' windows
    assert pooled["ttft_s_median"] == 0.75  # 1.0 (a) and 0.5 (b)
    assert pooled["itl_s_median"] == 0.5  # a: 0.5 x 6 (3 gaps, 2 tokens each); b: 0.25 x 2
    assert math.isnan(latency_stats([([a], 10, 11)])["itl_s_median"])


def test_ttft_and_itl_on_known_delays():
    with FakeOpenAI(delay_s=0.01, first_delay_s=0.05) as fake:
        rs = run_requests(fake.url, M, [[1]] * 4, 6, 2, 5.0)
    w = windows(rs, 2)["whole"]
    s = window_stats(rs, *w)
    assert s["tokens"] == 24 and s["requests_finished"] == 4
    assert s["ttft_s_median"] >= 0.05  # the server sleeps that long before the first token
    assert s["itl_s_median"] >= 0.009  # ... and 10 ms between tokens


# -- the engine ----------------------------------------------------------------------------


def test_engine_prepare_generate_describe(tmp_path):
    seen, on_phase = _phases()
    with FakeOpenAI(models=("m-a", "m-b")) as fake:
        eng = _engine(fake.url, tmp_path)
        prep = eng.prepare(on_phase)
        b1, b2 = eng.generate(), eng.generate()
        assert b2.tokens_generated == b1.tokens_generated
        eng.close()
    assert eng.model == "m-a" and prep.meta["server"]["models"] == ["m-a", "m-b"]
    assert prep.constants["precision_backend"] == "server" and prep.constants["emulated"] is False
    assert prep.meta["server"]["ignore_eos"] is True and prep.meta["server"]["launched"] is None
    assert b1.tokens_generated == 6 * 4 and b1.decode_tokens == 6 * 4 - 6
    assert b1.batch_size == 2 and b1.prompt_tokens == 5 and len(b1.requests) == 6
    assert [m[0] for m in b1.marks] == ["ramp-up", "steady", "ramp-down", "end"]
    prompts = [b["prompt"] for b in fake.bodies[1:]]  # [0] is the probe
    assert all(len(p) == 5 and all(0 <= t < PROMPT_ID_RANGE for t in p) for p in prompts)
    assert not {str(p) for p in prompts[:6]} & {str(p) for p in prompts[6:]}  # fresh ids
    d = eng.describe()
    assert d["engine"] == "openai" and d["engine_version"] == "0.0.1-fake"
    assert d["engine_settings"]["concurrency"] == 2 and d["engine_settings"]["requests"] == 6
    assert not [e for e, _ in seen if e == "warning"]


def test_engine_prompts_are_seeded(tmp_path):
    with FakeOpenAI() as fake:
        for _ in range(2):
            eng = _engine(fake.url, tmp_path)
            eng.prepare(lambda e, t: None)
            eng.generate()
    runs = [str(b["prompt"]) for b in fake.bodies]  # probe, 6 requests (arrival order), twice
    assert runs[0] == runs[7] and sorted(runs[1:7]) == sorted(runs[8:])


def test_engine_named_model_must_be_served(tmp_path):
    with FakeOpenAI() as fake:
        with pytest.raises(UserError, match=r"server\.model: 'other'.*'fake-model'"):
            _engine(fake.url, tmp_path, model="other").prepare(lambda e, t: None)


def test_engine_unreachable_url(tmp_path):
    with FakeOpenAI(mode="refuse") as fake:
        with pytest.raises(UserError, match=r"^server\.url: cannot reach .*refused"):
            _engine(fake.url, tmp_path).prepare(lambda e, t: None)


def test_engine_wrong_path_404(tmp_path):
    with FakeOpenAI() as fake:
        with pytest.raises(UserError, match=r"server\.url: .*/nope/models answered 404"):
            _engine(fake.url.replace("/v1", "/nope"), tmp_path).prepare(lambda e, t: None)


def test_engine_drops_ignore_eos_when_refused(tmp_path):
    seen, on_phase = _phases()
    with FakeOpenAI(mode="reject_ignore_eos") as fake:
        eng = _engine(fake.url, tmp_path)
        prep = eng.prepare(on_phase)
        batch = eng.generate()
    assert prep.meta["server"]["ignore_eos"] is False
    assert eng.describe()["engine_settings"]["ignore_eos"] is False
    assert batch.tokens_generated == 24 and not any("ignore_eos" in b for b in fake.bodies)
    assert any(e == "warning" and "ignore_eos" in t for e, t in seen)


def test_engine_all_failed_raises_some_failed_kept(tmp_path):
    with FakeOpenAI() as fake:
        eng = _engine(fake.url, tmp_path)
        eng.prepare(lambda e, t: None)
        fake.mode = "error500"
        with pytest.raises(RuntimeError, match="all 6 requests .* HTTP 500: fake engine crashed"):
            eng.generate()
    with FakeOpenAI(delay_s=0.002, kill_after=4) as fake:  # the probe is the 1st finish
        eng = _engine(fake.url, tmp_path)
        eng.prepare(lambda e, t: None)
        batch = eng.generate()
    ok = [r for r in batch.requests if r.ok]
    assert len(batch.requests) == 6 and 3 <= len(ok) <= 4
    assert batch.tokens_generated == 4 * len(ok)


def test_engine_prompts_file_lines_as_text(tmp_path):
    f = tmp_path / "prompts.txt"
    f.write_text("one two\n\nthree four five six\n")
    cfg = validate({"engine": "openai", "server": {"url": "http://127.0.0.1:1/v1"},
                    "workload": {"batch_size": 1, "requests": 3, "new_tokens": 2,
                                 "prompts_file": str(f)}})  # fmt: skip
    with FakeOpenAI() as fake:
        cfg.server.url = fake.url
        eng = OpenAIEngine(cfg, out_dir=tmp_path)
        eng.prepare(lambda e, t: None)
        batch = eng.generate()
    assert [b["prompt"] for b in fake.bodies[1:]] == ["one two", "three four five six", "one two"]
    assert batch.prompt_tokens == round((2 + 4 + 2) / 3)  # the server's mean prompt length


# -- launching a server --------------------------------------------------------------------


def test_launch_waits_for_health_and_stop_leaves_no_process(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log = tmp_path / "out" / "server.log"  # its folder does not exist yet
    with LaunchedServer(f"{sys.executable} {FAKE} --port {port}", url, log, 20.0) as srv:
        pid = srv.proc.pid
        assert http_get(srv.ep, "/health", 2.0)[0] == 200
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # the whole group is gone
    assert "listening" in log.read_text()
    srv.stop()  # idempotent


def test_engine_launches_and_closes(tmp_path):
    port = free_port()
    eng = _engine(f"http://127.0.0.1:{port}/v1", tmp_path,
                  launch=f"{sys.executable} {FAKE} --port {port}")  # fmt: skip
    prep = eng.prepare(lambda e, t: None)
    pid = eng.server.proc.pid
    assert eng.generate().tokens_generated == 24
    assert prep.meta["server"]["launched"].endswith(f"--port {port}")
    eng.close()
    eng.close()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert (tmp_path / "server.log").exists()


def test_launch_command_that_exits_at_once(tmp_path):
    cmd = f"{sys.executable} -c \"print('boom: no GPU'); raise SystemExit(3)\""
    url = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(UserError, match=r"^server\.launch: .*code 3.*'boom: no GPU'"):
        LaunchedServer(cmd, url, tmp_path / "s.log", 20.0).start()


def test_launch_refuses_non_loopback_and_missing_command(tmp_path):
    with pytest.raises(UserError, match=r"^server\.url: host '10\.1\.2\.3' is not a loopback"):
        LaunchedServer("true", "http://10.1.2.3:8000/v1", tmp_path / "s.log", 5.0)
    with pytest.raises(UserError, match=r"^server\.launch: cannot run 'no-such-server-cmd'"):
        LaunchedServer("no-such-server-cmd --x", "http://127.0.0.1:9/v1", tmp_path / "s.log",
                       5.0).start()  # fmt: skip


def test_launch_refuses_a_port_already_in_use(tmp_path):
    with FakeOpenAI() as fake:
        with pytest.raises(UserError, match=r"^server\.url: something already listens"):
            LaunchedServer("true", fake.url, tmp_path / "s.log", 5.0).start()


def test_engine_non_json_models_answer(tmp_path):
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "models").write_text("<html>a web page</html>")
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as httpd:
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        try:
            with pytest.raises(UserError, match=r"^server\.url: .* is not an OpenAI model list"):
                _engine(url, tmp_path).prepare(lambda e, t: None)
        finally:
            httpd.shutdown()
