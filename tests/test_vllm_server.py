"""Engine openai against a real vLLM OpenAI-compatible server on 127.0.0.1, started and stopped
by `--launch`, serving the tiny preset's exported weights (marked vllm: run in the vLLM
environment, `pytest -m vllm`; one server start for the module)."""

from __future__ import annotations

import json
import socket

import pandas as pd
import pytest

from tests.served import free_port, tiny_checkpoint, vllm_launch

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """One launched run (whole-run and steady-state rows) plus a transformers run in OUT."""
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    tmp = tmp_path_factory.mktemp("served")
    port, out = free_port(), tmp / "out"
    launch = vllm_launch(tiny_checkpoint(tmp), port, max_num_seqs=4)
    common = ["--batch-size", "4", "--prompt-tokens", "16", "--new-tokens", "24",
              "--repeats", "2", "--min-seconds", "0", "--idle-seconds", "0.5",
              "--warmup", "1", "--meter", "estimate"]  # fmt: skip
    run = CliRunner().invoke(cli, ["run", "--engine", "openai", "--url",
                                   f"http://127.0.0.1:{port}/v1", "--launch", launch,
                                   "--requests", "16", "--precision", "fp32", *common,
                                   "--out", str(out)], catch_exceptions=False)  # fmt: skip
    base = CliRunner().invoke(cli, ["run", "--model", "preset:tiny-llama", "--precision", "fp32",
                                    "--device", "cpu", "--no-fidelity", *common,
                                    "--out", str(out)], catch_exceptions=False)  # fmt: skip
    return run, base, out, port


def test_launched_server_writes_both_windows_and_stops(served):
    run, _, out, port = served
    assert run.exit_code == 0, run.output
    rows = pd.read_csv(out / "results.csv")
    rows = rows[rows["engine"] == "openai"]
    assert list(rows["window"]) == ["whole-run", "steady-state"] * 2
    assert set(rows["status"]) == {"ok"}
    whole = rows[rows["window"] == "whole-run"]
    assert set(whole["tokens_generated"]) == {16 * 24}  # vLLM's streamed usage, ignore_eos
    assert (rows["total_j_per_token"] > 0).all() and (rows["ttft_s_median"] > 0).all()
    assert rows["engine_version"].astype(str).str.match(r"^\d+\.\d+").all()
    record = json.loads((out / "run.json").read_text())["runs"][0]
    assert record["server"]["launched"] and record["server"]["ignore_eos"] is True
    assert list(out.glob("server-*.log"))  # the server's own log, kept
    with socket.socket() as s:  # stopped: nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", port)) != 0


def test_compare_and_report_put_the_engines_side_by_side(served):
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    _, base, out, _ = served
    assert base.exit_code == 0, base.output
    r = CliRunner().invoke(cli, ["compare", str(out), "--baseline", "engine=transformers"])
    assert r.exit_code == 0, r.output
    assert "openai" in r.output
    r = CliRunner().invoke(cli, ["report", str(out)])
    assert r.exit_code == 0, r.output
    text = (out / "report.md").read_text()
    assert "engine=transformers" in text and "steady-state" in text
