"""Progress over every phase of a run, with elapsed times and an ETA over trials; a warning
before a run that will be very slow."""

import pytest

from tokenwatt.config import load_config
from tokenwatt.engines.slow import approx_params, slow_reason

FAST = dict(model="preset:tiny-llama", precision="fp32", device="cpu", meter="estimate",
            prompt_tokens=8, new_tokens=4, repeats=2, warmup=1, min_seconds=0,
            idle_seconds=0.05)  # fmt: skip


def test_run_reports_each_phase_in_order(tmp_path):
    from tokenwatt.runner.run import PHASES, run_config

    events, trials = [], []
    cfg = load_config(None, **FAST, out=str(tmp_path / "o"))
    run_config(cfg, on_trial=lambda d, t: trials.append((d, t)),
               on_phase=lambda e, text: events.append((e, text)))  # fmt: skip
    assert [e for e, _ in events] == list(PHASES)
    text = dict(events)
    assert text["load"] == "building preset:tiny-llama" and text["precision"] == "applying fp32"
    assert "fp32" in text["fidelity"] and "idle baseline" in text["idle"]
    assert trials == [(1, 2), (2, 2)]


def test_phases_without_fidelity_warmup_or_idle(tmp_path):
    from tokenwatt.runner.run import run_config

    events = []
    cfg = load_config(None, **{**FAST, "warmup": 0, "idle_seconds": 0}, fidelity=False,
                      out=str(tmp_path / "o"))  # fmt: skip
    run_config(cfg, on_phase=lambda e, text: events.append(e))
    assert events == ["meters", "load", "precision", "trials"]


def test_cli_shows_every_phase_with_its_time(tmp_path, invoke, fast_args):
    r = invoke("run", *fast_args, "--precision", "fp32", "--device", "cpu", "--meter",
               "estimate", "--out", str(tmp_path / "o"))  # fmt: skip
    assert r.exit_code == 0, r.output
    for phase in ("building preset:tiny-llama", "applying fp32", "fidelity reference",
                  "opening meters", "idle baseline", "trials"):  # fmt: skip
        line = next((ln for ln in r.output.splitlines() if phase in ln), None)
        assert line is not None, phase
        assert line.rstrip().endswith(" s"), line  # its elapsed time, e.g. "0.4 s"
    trials = next(ln for ln in r.output.splitlines() if "trials" in ln and "2/2" in ln)
    assert "━" in trials


def test_eta_counts_from_the_trials_done():
    from rich.console import Console
    from rich.progress import Progress

    from tokenwatt.cli.console import RunProgress, _progress_columns

    with Progress(*_progress_columns(), console=Console(width=120, record=True),
                  auto_refresh=False) as progress:  # fmt: skip
        tracker = RunProgress(progress, "q", repeats=4)
        tracker.on_phase("trials", "trials")
        tracker.trials_started -= 10.0  # one trial took 10 s
        tracker.on_trial(1, 4)
        task = progress.tasks[tracker.task]
        assert task.fields["trial_s"] == pytest.approx(10.0, abs=0.5)
        eta = progress.columns[-1].render(task).plain
    assert eta.startswith("ETA 0:00:") and 28 <= int(eta[-2:]) <= 30  # 3 trials x 10 s


def test_approx_params_of_presets_match_their_real_sizes():
    assert approx_params("preset:llama-3.1-8b") == pytest.approx(8.03e9, rel=0.05)
    assert approx_params("preset:llama-3.2-1b") == pytest.approx(1.24e9, rel=0.05)
    assert approx_params("preset:qwen2.5-0.5b") == pytest.approx(0.49e9, rel=0.05)
    assert approx_params("preset:mixtral-8x7b") == pytest.approx(46.7e9, rel=0.05)
    assert approx_params("preset:qwen3-moe-30b-a3b") == pytest.approx(30.5e9, rel=0.05)
    assert approx_params("org/some-hub-model") is None


@pytest.mark.parametrize(
    "model, precision, device, slow",
    [
        ("preset:qwen2.5-0.5b", "mxfp4-emulated", "cpu", "emulates FP4"),
        ("preset:qwen2.5-0.5b", "nvfp4-emulated", "cpu", "emulates FP4"),
        ("org/hub-model", "mxfp4-emulated", "cpu", "emulates FP4"),  # size unknown: warned
        ("preset:qwen2.5-0.5b", "mxfp4-emulated", "cuda", None),
        ("preset:tiny-llama", "mxfp4-emulated", "cpu", None),  # ~5M parameters: fine
        ("preset:llama-3.1-8b", "fp32", "cpu", "32 GB of weights"),
        ("preset:llama-3.1-8b", "fp32", "cuda:0", None),
        ("preset:qwen2.5-0.5b", "fp32", "cpu", None),
    ],
)
def test_slow_reason(model, precision, device, slow, monkeypatch):
    monkeypatch.setattr("tokenwatt.engines.slow.free_bytes", lambda device: 64 * 2**30)  # fits
    reason = slow_reason(load_config(None, model=model, precision=precision), device)
    assert (reason is None) if slow is None else (slow in reason and "\n" not in reason)


def test_no_slow_warning_for_weights_that_cannot_load(monkeypatch):
    monkeypatch.setattr("tokenwatt.engines.slow.free_bytes", lambda device: 16 * 2**30)
    cfg = load_config(None, model="preset:llama-3.1-8b", precision="fp32")
    assert slow_reason(cfg, "cpu") is None  # 32 GB > 16 GiB: the load refuses it in one line


def test_slow_warning_is_printed_before_the_work(tmp_path, invoke, fast_args, monkeypatch):
    import tokenwatt.engines.slow as slow
    import tokenwatt.runner.run as runner
    from tokenwatt.errors import UserError

    def no_work(*args, **kwargs):  # the model would load here: the warning is out already
        raise UserError("stopped before loading")

    monkeypatch.setattr(slow, "EMULATED_CPU_PARAMS", 1.0)  # make the tiny preset "slow"
    monkeypatch.setattr(runner, "_prepare_and_measure", no_work)
    r = invoke("run", *fast_args, "--precision", "mxfp4-emulated", "--device", "cpu",
               "--out", str(tmp_path / "o"), "-q")  # fmt: skip
    text = " ".join(r.output.split())
    assert "warning slow run: mxfp4-emulated on CPU emulates FP4" in text
    assert text.index("warning slow run") < text.index("stopped before loading")


def test_api_says_a_slow_run_as_a_warning_before_the_work(tmp_path, monkeypatch):
    import warnings

    import tokenwatt
    import tokenwatt.engines.slow as slow
    import tokenwatt.runner.run as runner
    from tokenwatt.errors import UserError

    def no_work(*args, **kwargs):
        raise UserError("stopped before loading")

    monkeypatch.setattr(slow, "EMULATED_CPU_PARAMS", 1.0)
    monkeypatch.setattr(runner, "_prepare_and_measure", no_work)
    with warnings.catch_warnings(record=True) as caught, pytest.raises(UserError):
        warnings.simplefilter("always")
        tokenwatt.run(precision="nvfp4-emulated", device="cpu", out=str(tmp_path / "o"))
    assert any("slow run: nvfp4-emulated on CPU" in str(w.message) for w in caught)
