"""The engine settings: schema, one-line refusals, flags, case ids, sweeps over engines, and the
engine columns every transformers row carries."""

import json

import pandas as pd
import pytest

from tokenwatt.config import ConfigError, RunConfig, case_id, config_to_dict, validate
from tokenwatt.sweep.plan import expand

URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("data, needle", [
    ({"engine": "vlm"}, "unknown engine 'vlm' (did you mean 'vllm'?)"),
    ({"engine": "openai"}, "engine openai needs server.url"),
    ({"engine": "openai", "server": {"url": "ftp://x/v1"}}, "is not an http(s) URL"),
    ({"engine": "openai", "server": {"url": "http://127.0.0.1:99999/v1"}}, "invalid port"),
    ({"server": {"url": URL}}, "server.url is for engine openai"),
    ({"server": {"launch": "python -m x"}}, "server.launch is for engine openai"),
    ({"workload": {"requests": 4}}, "workload.requests is for engine openai"),
    ({"engine": "openai", "server": {"url": URL}, "workload": {"batch_size": 8, "requests": 4}},
     "fewer than batch_size"),
    ({"engine": "openai", "server": {"url": URL}, "compile": True}, "drop --compile"),
])  # fmt: skip
def test_bad_engine_settings_are_one_line(data, needle):
    with pytest.raises(ConfigError) as e:
        validate(data)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_requests_default_to_four_batches():
    cfg = validate({"engine": "openai", "server": {"url": URL + "/"},
                    "workload": {"batch_size": 3}})  # fmt: skip
    assert cfg.workload.request_count() == 12
    assert cfg.server.url == URL  # trailing slash dropped


def test_default_engine_keeps_earlier_case_ids():
    cfg = RunConfig()
    d = config_to_dict(cfg)
    for key in ("out", "name", "gpus", "engine", "server"):
        d.pop(key)
    for key in ("requests", "request_rate", "burstiness", "trace"):  # openai's, added later
        d["workload"].pop(key)
    import hashlib

    before = hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]
    assert case_id(cfg) == before
    assert case_id(cfg.model_copy(update={"engine": "vllm"})) != before


def test_a_sweep_lists_engines():
    cases = expand({"engine": ["transformers", "vllm"], "workload": {"batch_size": [1, 8]}})
    assert sorted((c["engine"], c["workload"]["batch_size"]) for c in cases) == [
        ("transformers", 1),
        ("transformers", 8),
        ("vllm", 1),
        ("vllm", 8),
    ]


def test_transformers_rows_name_their_engine(tmp_path, invoke, fast_args):
    out = tmp_path / "r"
    assert invoke("run", *fast_args, "--out", str(out)).exit_code == 0
    rows = pd.read_csv(out / "results.csv")
    assert set(rows["engine"]) == {"transformers"} and set(rows["window"]) == {"whole-run"}
    assert rows["engine_version"].astype(str).str.match(r"^\d+\.\d+").all()
    assert json.loads(rows["engine_settings"][0]) == {"compile": False, "experts": "tokenwatt"}
    run = json.loads((out / "run.json").read_text())["runs"][0]
    assert run["engine"]["engine"] == "transformers"


def test_vllm_missing_is_refused_before_anything_is_written(tmp_path, invoke, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    out = tmp_path / "r"
    r = invoke("run", "--engine", "vllm", "--out", str(out))
    assert r.exit_code == 2 and "vLLM is not installed" in r.output and not out.exists()


def test_whole_window_metrics_compare_whole_window_speed():
    """total_j_per_token pairs a served engine with an in-process one; the speed ratio is then
    tokens over each one's whole window, not decode-only against window tokens/s."""
    from tokenwatt.analysis.compare import compare, ok_trials

    common = {"model": "m", "precision": "bf16", "batch_size": 8, "status": "ok",
              "energy_scope": "cpu-package", "window": "whole-run"}  # fmt: skip
    rows = [{**common, "engine": "transformers", "run_id": "a", "tokens_generated": 100,
             "prefill_s": 0.5, "decode_s": 0.5, "decode_tokens_per_s": 190.0,
             "total_j_per_token": 1.0 + i / 100} for i in range(3)]  # fmt: skip
    rows += [{**common, "engine": "openai", "run_id": "b", "tokens_generated": 100,
              "window_s": 2.0, "decode_tokens_per_s": 50.0,
              "total_j_per_token": 2.0 + i / 100} for i in range(3)]  # fmt: skip
    table = compare(ok_trials(pd.DataFrame(rows)), "engine", "transformers", "total_j_per_token")
    assert table["ratio"].iloc[0] == pytest.approx(2.01 / 1.01)
    assert table["tokens_per_s_ratio"].iloc[0] == pytest.approx(50.0 / 100.0)
