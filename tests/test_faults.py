"""Faults mid-run: the simulated NVML raising its error codes, a RAPL file that stops reading,
and out of memory at one batch size. Finished results stay, no file is half-written."""

from __future__ import annotations

import json
import weakref
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.errors import CaseOutOfMemory, RunStopped
from tokenwatt.results.folder import unparseable_files as unparseable
from tokenwatt.runner.faults import MAX_CONSECUTIVE_DEGRADED, is_oom

BASE = {
    "model": "preset:tiny-llama",
    "precision": "fp32",
    "device": "cpu",
    "workload": {"batch_size": 1, "prompt_tokens": 8, "new_tokens": 6},
    "measure": {"meter": "estimate", "warmup": 0, "repeats": 4, "min_seconds": 0,
                "idle_seconds": 0},
    "fidelity": {"enabled": False},
}  # fmt: skip


def config(out: Path, **measure):
    from tokenwatt.config import validate

    return validate({**BASE, "measure": {**BASE["measure"], **measure}, "out": str(out)})


def break_trials(monkeypatch, broken: set[int], state: dict) -> None:
    """state["broken"] is True while the runner measures a trial index in `broken`."""
    import tokenwatt.runner.run as runner

    real = runner.run_trial

    def run_trial(session, index):
        state["broken"] = index in broken
        try:
            return real(session, index)
        finally:
            state["broken"] = False

    monkeypatch.setattr(runner, "run_trial", run_trial)


def fail_counter_while(monkeypatch, sim, state: dict, code: int) -> None:
    real = sim.nvmlDeviceGetTotalEnergyConsumption

    def counter(handle):
        if state.get("broken"):
            raise sim.NVMLError(code)
        return real(handle)

    monkeypatch.setattr(sim, "nvmlDeviceGetTotalEnergyConsumption", counter)


@pytest.mark.parametrize(
    "code_name,text",
    [
        ("NVML_ERROR_GPU_IS_LOST", "GPU is lost"),
        ("NVML_ERROR_NOT_SUPPORTED", "Not Supported"),
        ("NVML_ERROR_UNKNOWN", "Unknown Error"),
    ],
)
def test_nvml_error_mid_run_marks_trial_degraded(tmp_path, monkeypatch, sim_board, code_name, text):
    from tokenwatt.runner.run import run_config

    state: dict = {}
    fail_counter_while(monkeypatch, sim_board, state, getattr(sim_board, code_name))
    break_trials(monkeypatch, {1}, state)
    outcome = run_config(config(tmp_path / "o"))
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(df["status"]) == ["ok", "degraded", "ok", "ok"]
    bad = df[df["status"] == "degraded"].iloc[0]
    assert "MeterError" in bad["status_reason"] and text.lower() in bad["status_reason"].lower()
    assert pd.isna(bad["decode_j_per_token"])
    assert (df.loc[df["status"] == "ok", "decode_j_per_token"] > 0).all()
    assert set(df["energy_source"]) == {"simulated-nvml-energy-counter"}
    summary = pd.read_csv(tmp_path / "o" / "summary.csv").iloc[0]
    assert summary["n_trials"] == 3 and summary["n_degraded"] == 1
    assert "degraded" in summary["summary_flags"]
    assert any(w.startswith("degraded") for w in outcome.warnings)
    runs = json.loads((tmp_path / "o" / "run.json").read_text())["runs"]
    assert runs[0]["trials"][1]["status"] == "degraded"
    assert unparseable(tmp_path / "o") == []


def test_gpu_lost_for_good_stops_cleanly(tmp_path, monkeypatch, sim_board):
    """Trial 0 finishes, then the board is gone: three degraded trials, then a clean stop."""
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    state: dict = {}
    fail_counter_while(monkeypatch, sim_board, state, sim_board.NVML_ERROR_GPU_IS_LOST)
    break_trials(monkeypatch, set(range(1, 100)), state)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps({**BASE, "measure": {**BASE["measure"], "repeats": 8}}))
    r = CliRunner().invoke(cli, ["run", str(cfg), "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == RunStopped.exit_code == 1, r.output
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.output
    assert "stopped" in err and "GPU is lost" in err and "rerun" in err
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(df["status"]) == ["ok"] + ["degraded"] * MAX_CONSECUTIVE_DEGRADED
    summary = pd.read_csv(tmp_path / "o" / "summary.csv")
    assert len(summary) == 1 and summary["n_trials"].iloc[0] == 1
    assert unparseable(tmp_path / "o") == []


def test_rapl_file_unreadable_mid_run(tmp_path, monkeypatch):
    """A real RaplMeter over a powercap tree whose energy_uj vanishes during trial 1."""
    from tokenwatt.energy.meters.rapl import RaplMeter
    from tokenwatt.runner.run import run_config
    from tokenwatt.sim.powercap import add_energy, build_tree

    tree = build_tree(tmp_path / "powercap", packages=1, dram=False, psys=False)
    counter = tree / "intel-rapl:0" / "energy_uj"
    monkeypatch.setattr(
        "tokenwatt.energy.meters.select.open_meters", lambda *a, **k: [RaplMeter(tree)]
    )
    import tokenwatt.runner.run as runner

    real = runner.run_trial

    def run_trial(session, index):
        add_energy(tree, "intel-rapl:0", 5.0)
        saved = counter.read_text()
        if index == 1:
            counter.unlink()
        try:
            return real(session, index)
        finally:
            if not counter.exists():  # back as it was, so no wrap is counted afterwards
                counter.write_text(saved)

    monkeypatch.setattr(runner, "run_trial", run_trial)
    run_config(config(tmp_path / "o"))
    df = pd.read_csv(tmp_path / "o" / "results.csv")
    assert list(df["status"]) == ["ok", "degraded", "ok", "ok"]
    assert "RAPL" in df["status_reason"].iloc[1]
    assert set(df["energy_source"]) == {"rapl"}
    assert unparseable(tmp_path / "o") == []


# ---- out of memory -------------------------------------------------------------------------


@pytest.fixture
def oom_at_batch(monkeypatch):
    """LlamaForCausalLM.forward raises the real torch OOM at batch size 4 after `after` calls."""
    import torch
    from transformers import LlamaForCausalLM

    real = LlamaForCausalLM.forward
    seen = {"calls": 0, "model": None}

    def forward(self, input_ids=None, *args, **kwargs):
        if input_ids is not None and input_ids.shape[0] == 4:
            seen["model"] = weakref.ref(self)
            seen["calls"] += 1
            if seen["calls"] > seen.get("after", 0):
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, input_ids, *args, **kwargs)

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return seen


def test_oom_is_one_line_keeps_finished_trials_and_frees_the_model(tmp_path, oom_at_batch):
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    oom_at_batch["after"] = 6 + 2  # trial 0 (6 forward calls) finishes, trial 1 runs out
    cfg = tmp_path / "c.yaml"
    cfg.write_text(json.dumps(BASE))
    out = tmp_path / "o"
    r = CliRunner().invoke(cli, ["run", str(cfg), "--batch-size", "4", "--out", str(out), "-q"])
    assert r.exit_code == CaseOutOfMemory.exit_code == 1, r.output
    err = r.stderr.strip()
    assert "\n" not in err and "Traceback" not in r.output
    assert "out of memory" in err and "batch_size=4" in err and "--batch-size" in err
    import gc

    gc.collect()
    assert oom_at_batch["model"]() is None  # nothing holds the model after the error
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 1 and df["status"].iloc[0] == "ok"
    assert not (out / "summary.csv").exists()
    assert unparseable(out) == []
    # the next case runs, into the same folder
    r = CliRunner().invoke(cli, ["run", str(cfg), "--batch-size", "1", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.output
    df = pd.read_csv(out / "results.csv")
    assert list(df["batch_size"]) == [4, 1, 1, 1, 1]
    assert len(pd.read_csv(out / "summary.csv")) == 1
    assert unparseable(out) == []


def test_oom_before_any_trial_writes_nothing(tmp_path, oom_at_batch):
    from tokenwatt.runner.run import run_config

    cfg = config(tmp_path / "o", warmup=1)
    cfg.workload.batch_size = 4
    with pytest.raises(CaseOutOfMemory) as e:
        run_config(cfg)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o" / "results.csv").exists()


def test_is_oom_recognises_the_forms():
    import torch

    assert is_oom(torch.OutOfMemoryError("x"))
    assert is_oom(torch.cuda.OutOfMemoryError("x"))
    assert is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_oom(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 1 TB"))
    assert is_oom(MemoryError())
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(ValueError("out of memory"))


def test_unparseable_files_sees_a_torn_row(tmp_path):
    (tmp_path / "results.csv").write_text("a,b,c\n1,2,3\n4,5\n")
    (tmp_path / "summary.csv").write_text("a,b\n1,2\n")
    (tmp_path / "run.json").write_text('{"runs": [')
    assert unparseable(tmp_path) == ["results.csv", "run.json"]


def test_append_after_a_torn_tail_drops_only_the_torn_row(tmp_path):
    from tokenwatt.results.store import append_rows

    p = tmp_path / "results.csv"
    append_rows(p, [{"a": 1, "b": 2}])
    with open(p, "a") as f:
        f.write("1,9")  # a power cut inside a row: no newline
    append_rows(p, [{"a": 3, "b": 4}])
    df = pd.read_csv(p)
    assert list(df["a"]) == [1, 3] and unparseable(tmp_path) == []
