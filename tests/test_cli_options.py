"""`tokenwatt run`'s flags come from the config schema; the API refuses a wrong keyword in one
line; library warnings are quiet without silencing the user's own."""

import warnings
from types import SimpleNamespace

import pytest

from tokenwatt.cli.options import DeviceType
from tokenwatt.cli.run import run as run_command
from tokenwatt.config import FLAGS, leaf_fields
from tokenwatt.errors import ConfigError


def _options():
    return {o: p for p in run_command.params for o in (*p.opts, *p.secondary_opts)}


def test_every_schema_field_is_in_the_flag_table_and_has_its_flag():
    assert set(FLAGS) == set(leaf_fields()), "a config field without an entry in config.FLAGS"
    options = _options()
    for path, flag in FLAGS.items():
        assert flag is not None, f"{path} has no flag"
        assert f"--{flag}" in options, f"--{flag} ({path}) missing from tokenwatt run"


def test_help_shows_each_path_its_default_and_the_choices(invoke):
    text = " ".join(invoke("run", "--help").output.split())
    for path in FLAGS:
        assert f"[{path}]" in text, path
    # defaults: the quickstart's, which `tokenwatt run` alone runs
    assert "[out] [default: results/quickstart]" in text
    assert "[default: auto]" in text and "[measure.repeats] [default: 5]" in text
    assert "--precision [auto|fp32|bf16|fp16|int8-weight" in text
    assert "--meter [auto|nvml|rapl|estimate|dcgm|prometheus]" in text
    assert "--fidelity-reference [auto|fp32|bf16|fp16]" in text
    assert "--device [auto|cpu|cuda|cuda:N]" in text


def test_device_completion_lists_the_usual_devices():
    names = [c.value for c in DeviceType().shell_complete(None, None, "cu")]
    assert names == ["cuda", "cuda:0", "cuda:1"]


@pytest.fixture
def captured(monkeypatch):
    """Run the command up to run_config, and keep the config it was given."""
    import tokenwatt.runner.run as runner

    seen = {}

    def fake(cfg, on_trial=None, on_phase=None):
        seen["cfg"] = cfg
        return SimpleNamespace(trials=[], out=cfg.out)  # no trial ran, none failed: exit 0

    monkeypatch.setattr(runner, "run_config", fake)
    return seen


def test_flags_the_readme_names_reach_the_config(invoke, captured):
    r = invoke("run", "-q", "--cpu-tdp-w", "95", "--no-fidelity", "--sample-interval-ms", "50",
               "--cooldown-s", "2", "--gpus", "0,1",
               "--set", "measure.random_delay_s=0.5")  # fmt: skip
    assert r.exit_code == 0, r.output
    cfg = captured["cfg"]
    assert cfg.measure.cpu_tdp_w == 95 and cfg.fidelity.enabled is False
    assert cfg.measure.sample_interval_ms == 50 and cfg.measure.cooldown_s == 2
    assert cfg.measure.gpus == ["0", "1"] and cfg.measure.random_delay_s == 0.5
    assert cfg.name == "quickstart" and cfg.precision == "auto"  # left-out flags: the file's


def test_left_out_flags_never_override_the_file(invoke, captured, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\nprecision: fp16\nmeasure: {repeats: 7}\nout: elsewhere\n")
    assert invoke("run", str(path), "-q").exit_code == 0
    cfg = captured["cfg"]
    assert (cfg.name, cfg.precision, cfg.measure.repeats, cfg.out) == ("mine", "fp16", 7,
                                                                       "elsewhere")  # fmt: skip


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--set", "measure.cpu_tdpw=95"], "did you mean 'measure.cpu_tdp_w'"),
        (["--set", "nokey"], "is not KEY=VALUE"),
        (["--precision", "bf61"], "did you mean 'bf16'"),
        (["--set", "measure.cpu_tdp_w=-1"], "measure.cpu_tdp_w"),
    ],
)
def test_bad_flag_or_setting_is_one_line_exit_2(invoke, captured, args, needle):
    r = invoke("run", *args)
    assert r.exit_code == 2 and needle in r.output, r.output
    assert r.output.strip().count("\n") == 0
    assert "cfg" not in captured


def test_api_wrong_keyword_is_one_line_with_the_nearest_name():
    import tokenwatt

    with pytest.raises(ConfigError) as e:
        tokenwatt.run(batchsize=3)
    msg = str(e.value)
    assert "unknown setting 'batchsize'" in msg and "did you mean 'batch_size'" in msg
    assert "\n" not in msg
    assert not isinstance(e.value, KeyError)


def test_quiet_libraries_keeps_the_users_own_warnings():
    from tokenwatt.runner.quiet import quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        quiet_libraries()
        warnings.warn("the user's own warning 7c1f", UserWarning, stacklevel=1)
        warnings.warn_explicit("torchao chatter 7c1f", UserWarning, "quant_api.py", 1,
                               module="torchao.quantization.quant_api")  # fmt: skip
        warnings.warn_explicit("pytree chatter 7c1f", FutureWarning, "_pytree.py", 1,
                               module="torch.utils._pytree")  # fmt: skip
    assert [str(w.message) for w in caught] == ["the user's own warning 7c1f"]


def test_user_warning_shows_after_a_run_through_the_api(tmp_path):
    import tokenwatt

    with warnings.catch_warnings(record=True) as caught:
        tokenwatt.run(model="preset:tiny-llama", precision="fp32", device="cpu",
                      meter="estimate", prompt_tokens=8, new_tokens=4, repeats=1, warmup=0,
                      min_seconds=0, idle_seconds=0, fidelity=False,
                      out=str(tmp_path / "o"))  # fmt: skip
        warnings.warn("after the run 4e2a", UserWarning, stacklevel=1)
    assert "after the run 4e2a" in [str(w.message) for w in caught]


def test_every_flag_the_docs_name_exists():
    """A flag the README or docs promise is an option of some tokenwatt command or of a
    benchmark script (`python benchmarks/gpu_check.py --simulate`)."""
    import re
    from pathlib import Path

    from tokenwatt.cli import cli

    root = Path(__file__).parents[1]
    options = {"--help", "--version"}
    for command in cli.commands.values():
        for p in command.params:
            options.update(p.opts, p.secondary_opts)
    pip_flags = {"--index-url"}
    # sbatch's own options, named where the README explains arrays and the preflight
    pip_flags |= {"--gpus-per-node", "--test-only", "--mail-type"}
    pip_flags |= {"--port"}  # the vLLM server's own, in the README's --launch example
    for script in (root / "benchmarks").glob("*.py"):
        options.update(re.findall(r"add_argument\(\s*\"(--[a-z][a-z0-9-]*)", script.read_text()))
    for doc in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        commands = doc.read_text().replace("\\\n", " ").splitlines()  # continued lines joined
        lines = [ln for ln in commands if not re.search(r"\bpip3? ", ln)]
        named = set(re.findall(r"(?<![\w=-])--[a-z][a-z0-9-]*", "\n".join(lines)))
        assert named - options - pip_flags == set(), doc.name
