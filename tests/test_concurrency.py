"""Processes writing one results folder at once: every row arrives whole, nothing is lost."""

from __future__ import annotations

import json
import multiprocessing as mp
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.results.folder import unparseable_files


def _writer(out: str, who: int, n: int) -> None:
    from tokenwatt.results.columns import RUN_JSON
    from tokenwatt.results.store import append_rows, locked, update_json

    p = Path(out)
    for i in range(n):
        # Some writers bring a new column mid-way, which makes the header widen (a rewrite).
        row = {"writer": who, "i": i, "text": 'a,b "quoted"\nline' * (i % 3)}
        if who % 2 and i == n // 2:
            row[f"extra_{who}"] = i
        with locked(p):
            append_rows(p / "results.csv", [row])
            if i % 10 == 0:
                update_json(p / RUN_JSON, "runs", {"writer": who, "i": i})


def test_processes_appending_to_one_folder(tmp_path):
    writers, n = 4, 40
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), w, n)) for w in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    df = pd.read_csv(tmp_path / "results.csv")
    assert len(df) == writers * n
    for w in range(writers):  # each writer's rows all there, in its own order
        assert list(df.loc[df["writer"] == w, "i"]) == list(range(n))
    assert {"extra_1", "extra_3"} <= set(df.columns)
    assert (df["text"].fillna("") == ['a,b "quoted"\nline' * (i % 3) for i in df["i"]]).all()
    runs = json.loads((tmp_path / "run.json").read_text())["runs"]
    assert len(runs) == writers * (n // 10)
    assert unparseable_files(tmp_path) == []


CONFIG = """\
model: preset:tiny-llama
precision: fp32
device: cpu
workload: {batch_size: 1, prompt_tokens: 8, new_tokens: 6}
measure: {meter: estimate, warmup: 0, repeats: 6, min_seconds: 0, idle_seconds: 0}
fidelity: {enabled: false}
"""


@pytest.mark.slow
def test_two_runs_into_one_folder(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / "shared"
    cmd = [sys.executable, "-m", "tokenwatt.cli", "run", str(cfg), "--out", str(out), "-q"]
    procs = [
        subprocess.Popen([*cmd, "--seed", str(s)], stderr=subprocess.PIPE, text=True)
        for s in (1, 2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 12 and df["run_id"].nunique() == 2
    for _, g in df.groupby("run_id"):
        assert sorted(g["trial"]) == list(range(6))
    assert len(pd.read_csv(out / "summary.csv")) == 2
    assert len(json.loads((out / "run.json").read_text())["runs"]) == 2
    assert unparseable_files(out) == []
