"""engine vllm through the command line, for real (marked `vllm`: run with -m vllm in the
vLLM environment). Two vLLM starts in all: one `tokenwatt run`, one sweep case."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vllm

B, N, REPEATS = 8, 32, 2
QUICK = ["--min-seconds", "0", "--idle-seconds", "0.5", "--warmup", "1"]


def _tokenwatt(args: list[str], cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TOKENWATT_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
           "VLLM_HOST_IP": os.environ.get("VLLM_HOST_IP", "127.0.0.1")}  # fmt: skip
    done = subprocess.run([sys.executable, "-m", "tokenwatt", *args], env=env, text=True,
                          capture_output=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, (
        f"tokenwatt {' '.join(args)}: exit {done.returncode}\n" + (done.stderr[-3000:])
    )
    return done


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory, cache: Path) -> Path:
    out = tmp_path_factory.mktemp("run")
    _tokenwatt(["run", "--engine", "vllm", "--model", "preset:tiny-llama", "--precision", "bf16",
                "--batch-size", str(B), "--new-tokens", str(N), "--repeats", str(REPEATS),
                *QUICK, "--out", str(out)], cache)  # fmt: skip
    return out


def test_run_writes_vllm_rows_with_exact_tokens_and_phase_energy(run_out: Path) -> None:
    import pandas as pd

    rows = pd.read_csv(run_out / "results.csv")
    assert len(rows) == REPEATS and set(rows["status"]) == {"ok"}
    assert set(rows["engine"]) == {"vllm"} and set(rows["precision"]) == {"bf16"}
    assert set(rows["precision_backend"]) == {"vllm-dtype"}
    # each trial is whole batches: tokens counted from vLLM's outputs, decode = all but firsts
    assert (rows["tokens_generated"] % (B * N) == 0).all() and (rows["tokens_generated"] > 0).all()
    assert (rows["decode_tokens"] == rows["tokens_generated"] // N * (N - 1)).all()
    assert (rows["prefill_j"] > 0).all() and (rows["decode_j"] > 0).all()
    assert set(rows["engine_version"].astype(str)) == {__import__("vllm").__version__}


def test_sweep_of_both_engines_then_compare(tmp_path: Path, cache: Path) -> None:
    import pandas as pd

    config = tmp_path / "sweep.yaml"
    config.write_text(
        "name: engines\n"
        "engine: [transformers, vllm]\n"
        "model: preset:tiny-llama\nprecision: bf16\ndevice: cpu\n"
        f"workload: {{batch_size: {B}, prompt_tokens: 16, new_tokens: {N}, seed: 0}}\n"
        "measure: {meter: estimate, warmup: 1, repeats: 2, min_seconds: 0, idle_seconds: 0.5}\n"
        "fidelity: {enabled: false}\n"
        f"out: {tmp_path / 'out'}\n"
    )
    _tokenwatt(["sweep", "-q", str(config)], cache)
    rows = pd.read_csv(tmp_path / "out" / "results.csv")
    ok = rows[rows["status"] == "ok"]
    assert set(ok["engine"]) == {"transformers", "vllm"}, rows.get("error")
    table = tmp_path / "compare.csv"
    done = _tokenwatt(["compare", str(tmp_path / "out"), "--baseline", "engine=transformers",
                       "--csv", str(table)], cache)  # fmt: skip
    assert "engine=transformers" in done.stdout and "vllm" in done.stdout
    ratios = pd.read_csv(table)
    assert list(ratios["engine"]) == ["vllm"]  # vLLM's case, against the transformers one
    assert ratios["baseline"].iloc[0] == "engine=transformers"
    assert ratios["ratio"].iloc[0] > 0 and ratios["baseline_decode_j_per_token"].iloc[0] > 0
