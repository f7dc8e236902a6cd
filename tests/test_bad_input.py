"""Every bad input: exit code 2, one line on stderr naming the field and the fix, no traceback,
and the results folder exactly as it was (not even an empty folder created)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import FAST


@pytest.fixture(scope="module")
def nofid(tmp_path_factory) -> str:
    """A config without the fidelity check, for the tests that get as far as loading a model."""
    p = tmp_path_factory.mktemp("cfg") / "nofid.yaml"
    p.write_text("fidelity: {enabled: false}\n")
    return str(p)


def snapshot(root: Path) -> dict[str, tuple[bool, int, int]]:
    """Every path under root with (is_dir, size, mtime_ns): any write shows up as a change."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (p.is_dir(), st.st_size, st.st_mtime_ns)
    return out


def cli_run(*args: str):
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def assert_one_line(result, *needles: str) -> str:
    err = result.stderr.strip()
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert err.startswith("Error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, (n, err)
    return err


@pytest.fixture
def work(tmp_path: Path) -> Path:
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "results.csv").write_text("run_id,trial,schema_version\nold,0,1\n")
    return tmp_path


def rejected(work: Path, *args: str, needles: tuple[str, ...] = (), out: str = "o") -> str:
    """Run with a fresh OUT and with an existing results folder: both must stay untouched."""
    before = snapshot(work)
    for target in (work / out, work / "existing"):
        r = cli_run("run", *args, "--out", str(target), "-q")
        err = assert_one_line(r, *needles)
    assert snapshot(work) == before
    assert not (work / out).exists()
    return err


def write(work: Path, name: str, text: str) -> str:
    p = work.parent / f"{work.name}-{name}"  # outside the snapshotted folder
    p.write_text(text)
    return str(p)


# ---- the config file ---------------------------------------------------------------------


def test_malformed_yaml(work):
    cfg = write(work, "bad.yaml", "workload: {batch_size: 2\nmeasure: [\n")
    err = rejected(work, cfg, needles=("malformed YAML", "line"))
    assert "fix the syntax" in err


def test_config_that_is_not_a_mapping(work):
    rejected(work, write(work, "list.yaml", "- 1\n- 2\n"), needles=("mapping",))


def test_missing_config_file(work):
    rejected(work, str(work.parent / "nope.yaml"), needles=("does not exist",))


@pytest.mark.parametrize(
    "text,field,hint",
    [
        ("worklaod: {batch_size: 2}\n", "worklaod", "did you mean 'workload'"),
        ("measure: {repeat: 3}\n", "measure.repeat", "did you mean 'repeats'"),
        ("workload: {batch: 3}\n", "workload.batch", "did you mean 'batch_size'"),
        ("precison: fp32\n", "precison", "did you mean 'precision'"),
    ],
)
def test_unknown_key_suggests_nearest(work, text, field, hint):
    err = rejected(work, write(work, "k.yaml", text), needles=(field, hint))
    assert "remove it or fix its spelling" in err


@pytest.mark.parametrize(
    "text,field",
    [
        ("workload: {batch_size: many}\n", "workload.batch_size"),
        ("measure: {repeats: [1, 2]}\n", "measure.repeats"),
        ("compile: maybe\n", "compile"),
        ("workload: 5\n", "workload"),
        ("carbon: {pue: high}\n", "carbon.pue"),
    ],
)
def test_wrong_type_in_yaml(work, text, field):
    rejected(work, write(work, "t.yaml", text), needles=(field,))


def test_wrong_type_on_command_line(work):
    err = rejected(work, "--batch-size", "abc", needles=("--batch-size", "abc"))
    assert "run --help" in err


@pytest.mark.parametrize(
    "flag,value,field",
    [
        ("--batch-size", "0", "workload.batch_size"),
        ("--prompt-tokens", "-4", "workload.prompt_tokens"),
        ("--new-tokens", "-1", "workload.new_tokens"),
        ("--repeats", "0", "measure.repeats"),
        ("--min-seconds", "-1", "measure.min_seconds"),
        ("--pue", "0.5", "carbon.pue"),
    ],
)
def test_out_of_range_flag(work, flag, value, field):
    err = rejected(work, flag, value, needles=(field, f"got {value}"))
    assert "greater than" in err


@pytest.mark.parametrize(
    "text,field",
    [
        ("workload: {batch_size: 0}\n", "workload.batch_size"),
        ("workload: {new_tokens: -8}\n", "workload.new_tokens"),
        ("measure: {repeats: 0}\n", "measure.repeats"),
    ],
)
def test_out_of_range_in_yaml(work, text, field):
    rejected(work, write(work, "r.yaml", text), needles=(field,))


@pytest.mark.parametrize(
    "args,needles",
    [
        (("--precision", "int3"), ("precision", "'int3'", "choose one of")),
        (("--meter", "wattmeter"), ("measure.meter", "'wattmeter'", "choose one of")),
        (("--model", "preset:tiny-lama"), ("unknown preset", "did you mean 'tiny-llama'")),
        (("--device", "gpu"), ("device", "use auto, cpu, cuda")),
    ],
)
def test_unknown_names(work, args, needles):
    rejected(work, *FAST, *args, needles=needles)


def test_unknown_region(work):
    rejected(work, *FAST, "--region", "Atlantis", needles=("carbon.region", "'Atlantis'"))


def test_unknown_region_in_yaml(work):
    cfg = write(work, "reg.yaml", "carbon: {region: NOWHERE-9}\n")
    rejected(work, cfg, *FAST, needles=("carbon.region", "NOWHERE-9"))


# ---- the model -----------------------------------------------------------------------------


def test_model_path_does_not_exist(work):
    missing = str(work.parent / "no-such-ckpt")
    rejected(work, *FAST, "--model", missing, needles=("does not exist",))


def test_directory_without_config(work, tmp_path_factory):
    d = tmp_path_factory.mktemp("noconfig")
    (d / "model.safetensors").write_bytes(b"")
    rejected(work, *FAST, "--model", str(d), needles=("no config.json",))


def test_model_path_is_a_file(work):
    f = write(work, "weights.safetensors", "x")
    rejected(work, *FAST, "--model", f, needles=("is a file",))


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> dict[str, Path]:
    """Tiny checkpoints saved here: a BERT, a T5, a Llama with pickle weights only."""
    import torch
    from transformers import (
        BertConfig,
        BertForMaskedLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    from tokenwatt.models.load import load_model

    root = tmp_path_factory.mktemp("ckpts")
    small = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)
    BertForMaskedLM(BertConfig(intermediate_size=32, **small)).save_pretrained(root / "bert")
    t5 = T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=1, num_heads=2, vocab_size=64)
    T5ForConditionalGeneration(t5).save_pretrained(root / "t5")
    llama = load_model("preset:tiny-llama", "cpu", torch.float32).model
    llama.config.save_pretrained(root / "pickle")
    torch.save(llama.state_dict(), root / "pickle" / "pytorch_model.bin")
    return {"bert": root / "bert", "t5": root / "t5", "pickle": root / "pickle"}


@pytest.mark.parametrize("kind,arch", [("bert", "'bert'"), ("t5", "'t5'")])
def test_checkpoint_that_is_not_a_causal_lm(work, ckpts, kind, arch):
    assert any(ckpts[kind].glob("*.safetensors"))
    rejected(work, *FAST, "--model", str(ckpts[kind]), needles=(arch, "not a causal"))


def test_pickle_weights_refused_unless_allowed(work, ckpts, nofid):
    rejected(work, *FAST, "--model", str(ckpts["pickle"]), needles=("pickle", "--allow-pickle"))
    out = work.parent / f"{work.name}-pickle-out"
    r = cli_run("run", nofid, *FAST, "--model", str(ckpts["pickle"]), "--allow-pickle",
                "--precision", "fp32", "--repeats", "1", "--out", str(out), "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    assert (out / "results.csv").is_file()


def test_remote_code_is_not_run_unless_trusted(work, tmp_path_factory):
    """A checkpoint whose config points at its own Python: without the flag it never runs."""
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("remote")
    marker = d / "code-ran"
    (d / "config.json").write_text(json.dumps({
        "model_type": "evilnet", "architectures": ["EvilForCausalLM"],
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"},
    }))  # fmt: skip
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    (d / "configuration_evil.py").write_text(code)
    (d / "modeling_evil.py").write_text(code)
    import torch

    save_file({"w": torch.zeros(1)}, str(d / "model.safetensors"))
    from tokenwatt.config import load_config

    assert load_config(None).trust_remote_code is False
    rejected(work, *FAST, "--model", str(d), needles=("model:",))
    assert not marker.exists()


# ---- the results folder ------------------------------------------------------------------


def test_results_folder_is_a_file(work):
    f = work / "results-file"
    f.write_text("not a folder")
    before = snapshot(work)
    err = assert_one_line(cli_run("run", *FAST, "--out", str(f), "-q"), "is a file")
    assert "give a directory" in err
    assert snapshot(work) == before


def test_results_folder_under_a_file(work):
    f = work / "plain-file"
    f.write_text("x")
    before = snapshot(work)
    r = cli_run("run", *FAST, "--out", str(f / "sub" / "dir"), "-q")
    assert_one_line(r, "is a file", "cannot be created")
    assert snapshot(work) == before


def test_results_folder_not_writable(work, monkeypatch):
    """Root ignores permission bits, so the access check itself is made to say no."""
    import tokenwatt.results.store as results

    real = os.access
    monkeypatch.setattr(
        results.os, "access", lambda p, mode: False if mode & os.W_OK else real(p, mode)
    )
    before = snapshot(work)
    for target in (work / "existing", work / "new" / "deeper"):
        r = cli_run("run", *FAST, "--out", str(target), "-q")
        assert_one_line(r, "not writable", "choose another folder")
    assert snapshot(work) == before


def _root_obeying_permissions() -> list[str] | None:
    """A command prefix under which root obeys permission bits (CAP_DAC_OVERRIDE dropped)."""
    import shutil
    import subprocess

    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    prefix = [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"]
    works = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    return prefix if works else None


def test_results_folder_read_only_for_real(work):
    """A folder nobody may write. Root writes through permission bits, so as root the run is a
    child process without the capability that lets it."""
    import subprocess
    import sys

    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        before = snapshot(work)
        args = ["run", *FAST, "--out", str(ro), "-q"]
        if os.geteuid() != 0:
            assert_one_line(cli_run(*args), "not writable")
        else:
            prefix = _root_obeying_permissions()
            if prefix is None:
                pytest.skip("root writes through permission bits, and setpriv cannot drop that")
            cmd = [*prefix, sys.executable, "-m", "tokenwatt.cli", *args]
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            err = p.stderr.strip()
            assert p.returncode == 2, (p.returncode, p.stderr)
            assert err.startswith("Error: ") and "\n" not in err and "not writable" in err, err
        assert snapshot(work) == before
    finally:
        ro.chmod(0o755)


@pytest.fixture(scope="module")
def measured(tmp_path_factory, nofid) -> Path:
    out = tmp_path_factory.mktemp("measured") / "a"
    args = [nofid, *FAST, "--precision", "fp32", "--repeats", "1"]
    r = cli_run("run", *args, "--out", str(out), "-q")
    assert r.exit_code == 0, r.output
    return out


def test_rows_carry_schema_version(measured):
    import pandas as pd

    from tokenwatt.results.columns import SCHEMA_VERSION
    from tokenwatt.results.load import load_results, load_summary

    for df in (pd.read_csv(measured / "results.csv"), pd.read_csv(measured / "summary.csv")):
        assert (df["schema_version"] == SCHEMA_VERSION).all()
    assert len(load_results(measured, measured)) == 2
    assert len(load_summary(measured)) == 1


def _with_version(src: Path, dst: Path, version: int) -> Path:
    import pandas as pd

    dst.mkdir()
    for name in ("results.csv", "summary.csv"):
        df = pd.read_csv(src / name)
        df["schema_version"] = version
        df.to_csv(dst / name, index=False)
    return dst


def test_results_with_mismatched_schemas_are_not_combined(measured, tmp_path):
    from tokenwatt.errors import UserError
    from tokenwatt.results.load import load_results, load_summary

    other = _with_version(measured, tmp_path / "b", 2)
    before = snapshot(measured), snapshot(other)
    for load in (load_results, load_summary):
        with pytest.raises(UserError) as e:
            load(measured, other)
        msg = str(e.value)
        assert "schema_version 1" in msg and "has 2" in msg and "\n" not in msg
        assert "separately" in msg
    with pytest.raises(UserError, match="newer than this tokenwatt"):
        load_results(other)
    assert (snapshot(measured), snapshot(other)) == before


def test_compare_refuses_mismatched_schemas_in_one_line(measured, tmp_path):
    other = _with_version(measured, tmp_path / "b", 2)
    before = snapshot(measured), snapshot(other)
    r = cli_run("compare", str(measured), str(other), "--baseline", "precision=fp32")
    assert_one_line(r, "schema_version", "separately")
    assert (snapshot(measured), snapshot(other)) == before


def test_meter_unavailable_leaves_folder_untouched(work, nofid):
    """An explicitly chosen meter this machine lacks: one line, nothing written."""
    from tokenwatt.energy.meters.rapl import readable

    if readable():
        pytest.skip("this machine can read RAPL")
    rejected(work, nofid, *FAST, "--meter", "rapl", needles=("measure.meter",))


# ---- the network ---------------------------------------------------------------------------

NO_NETWORK = """\
import json, socket, sys
calls = []
def deny(*a, **k):
    calls.append(repr(a)[:120])
    raise OSError("network disabled by the test")
socket.socket.connect = socket.socket.connect_ex = deny
socket.getaddrinfo = socket.create_connection = deny
from tokenwatt.cli import cli
codes = [cli.main(json.loads(a), standalone_mode=False) for a in sys.argv[1:]]
print(json.dumps({"codes": codes, "calls": calls}))
"""


@pytest.mark.slow
def test_preset_and_local_runs_make_no_network_call(tmp_path, nofid):
    """Without HF_HUB_OFFLINE: a preset and a local checkpoint run, any socket use recorded."""
    import subprocess
    import sys

    import torch

    from tokenwatt.models.load import load_model

    ckpt = tmp_path / "ckpt"
    load_model("preset:tiny-llama", "cpu", torch.float32).model.save_pretrained(ckpt)
    base = ["run", nofid, *FAST, "--precision", "fp32", "--repeats", "1", "-q"]
    runs = [
        [*base, "--region", "DEU", "--out", str(tmp_path / "a")],
        [*base, "--model", str(ckpt), "--out", str(tmp_path / "b")],
    ]
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    p = subprocess.run([sys.executable, "-c", NO_NETWORK, *map(json.dumps, runs)], env=env,
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout.strip().splitlines()[-1])
    assert result["codes"] == [None, None], p.stderr
    assert result["calls"] == []
    assert (tmp_path / "a" / "results.csv").is_file() and (tmp_path / "b" / "results.csv").is_file()
