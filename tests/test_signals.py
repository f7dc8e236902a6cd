"""A real `tokenwatt run` process interrupted mid-run by SIGINT, SIGTERM and SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.results.folder import unparseable_files

CONFIG = """\
model: preset:tiny-llama
precision: fp32
device: cpu
workload: {batch_size: 1, prompt_tokens: 8, new_tokens: 8}
measure: {meter: estimate, warmup: 0, repeats: 500, min_seconds: 0.05, idle_seconds: 0}
fidelity: {enabled: false}
"""


def data_rows(csv: Path) -> int:
    try:
        return max(len(csv.read_text().splitlines()) - 1, 0)
    except FileNotFoundError:
        return 0


def start(tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    cfg = tmp_path / "run.yaml"
    cfg.write_text(CONFIG)
    out = tmp_path / name
    cmd = [sys.executable, "-m", "tokenwatt.cli", "run", str(cfg), "--out", str(out), "-q"]
    # SIGINT as a terminal gives it: a shell's background job (`ci &`) hands it down ignored,
    # and a Python started so keeps ignoring it
    p = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    return p, out


@pytest.mark.slow
def test_signals_mid_run_keep_finished_trials(tmp_path):
    sigs = {"int": signal.SIGINT, "term": signal.SIGTERM, "kill": signal.SIGKILL}
    procs = {name: start(tmp_path, name) for name in sigs}
    seen: dict[str, int] = {}
    deadline = time.monotonic() + 240
    while len(seen) < len(procs) and time.monotonic() < deadline:
        for name, (p, out) in procs.items():
            n = data_rows(out / "results.csv")
            if name not in seen and n >= 3:
                p.send_signal(sigs[name])
                seen[name] = n
            assert p.poll() is None or name in seen, p.communicate()
        time.sleep(0.02)
    assert len(seen) == len(procs), "runs did not reach three trials in time"
    codes = {"int": 130, "term": 143, "kill": -signal.SIGKILL}
    for name, (p, out) in procs.items():
        _, err = p.communicate(timeout=60)
        assert p.returncode == codes[name], (name, p.returncode, err)
        df = pd.read_csv(out / "results.csv")
        assert len(df) >= seen[name]  # every trial seen finished is still there
        assert list(df["trial"]) == list(range(len(df)))  # complete rows, none twice
        assert (df["status"] == "ok").all() and df["decode_j_per_token"].notna().all()
        assert unparseable_files(out) == []
        assert not (out / "summary.csv").exists()  # the run did not finish
        if name != "kill":
            lines = err.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in err, err
            assert "finished trials are saved" in lines[0] and "rerun" in lines[0]
