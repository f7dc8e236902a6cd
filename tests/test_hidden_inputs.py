"""Inputs of a new kind: YAML bombs, bounds, strict types, damaged checkpoints and prompts,
a region file with a negative intensity. Each is refused in one line with exit 2 and nothing
written, within a time limit (they used to hang, grow until memory ran out, or run for
minutes before failing)."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import FAST
from tests.test_bad_input import assert_one_line, cli_run, rejected, snapshot, work, write

__all__ = ["work"]  # the fixture, imported for the tests here
LIMIT_S = 30  # each used to take minutes or never end; refusing takes well under a second


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def expired(*_: object) -> None:
        raise TimeoutError(f"took more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _bomb(levels: int = 9, leaf: str = "lol") -> str:
    """A billion laughs: 9 aliases of 9 aliases of ... (9^9 values once expanded)."""
    lines = [f"a0: &a0 [{leaf}, {leaf}, {leaf}, {leaf}, {leaf}, {leaf}, {leaf}, {leaf}, {leaf}]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


YAML_CASES = {
    "list bomb as a string field": (_bomb() + "name: *a8\n", ("aliases expand",)),
    "mapping bomb under workload": (
        "m0: &m0 {a: 1, b: 1, c: 1, d: 1, e: 1, f: 1, g: 1, h: 1}\n"
        + "".join(
            f"m{i}: &m{i} {{a: *m{i - 1}, b: *m{i - 1}, c: *m{i - 1}, d: *m{i - 1}, "
            f"e: *m{i - 1}, f: *m{i - 1}, g: *m{i - 1}, h: *m{i - 1}}}\n"
            for i in range(1, 9)
        )
        + "workload: *m8\n",
        ("aliases expand",),
    ),  # fmt: skip
    "an alias that refers to itself": ("workload: &w {seed: 1, x: *w}\n", ("refers to itself",)),
    "duplicate keys": ("precision: fp32\nprecision: bf16\n", ("duplicate key 'precision'",)),
    "batch_size: true": ("workload: {batch_size: true}\n", ("workload.batch_size", "integer")),
    "compile: 'yes'": ("compile: 'yes'\n", ("compile", "boolean")),
    "a NUL byte in a name": ('name: "ru\\0n"\n', ("name", "NUL")),
    "an empty !!int": ("workload: {seed: !!int ''}\n", ("malformed YAML",)),
    "an empty !!timestamp": ("name: !!timestamp ''\n", ("malformed YAML",)),
    "seed beyond 64 bits": (f"workload: {{seed: {2**70}}}\n", ("workload.seed",)),
    "seed of 1000 digits": ("workload: {seed: 1" + "0" * 1000 + "}\n", ("an integer of",)),
    "seed of 5000 digits": ("workload: {seed: " + "9" * 5000 + "}\n", ("malformed YAML",)),
}


@pytest.mark.parametrize("case", list(YAML_CASES))
def test_config_file_inputs(work, case):
    text, needles = YAML_CASES[case]
    with time_limit(LIMIT_S):
        err = rejected(work, write(work, "c.yaml", text), needles=needles)
    assert len(err) < 400  # no value printed whole


def test_a_huge_config_file_is_refused_unread(work):
    p = Path(write(work, "big.yaml", ""))
    with open(p, "w") as f:  # 50 MB of a valid YAML list
        f.write("cases:\n")
        f.write("  - {precision: bf16}\n" * 2_500_000)
    with time_limit(LIMIT_S):
        rejected(work, str(p), needles=("larger than 256 KiB",))


def test_seed_flag_beyond_64_bits(work):
    rejected(work, *FAST, "--seed", str(2**64), needles=("workload.seed", "less than or equal"))


def test_a_nul_byte_in_out(work):
    cfg = write(work, "nul.yaml", 'out: "res\\0ults"\n')
    before = snapshot(work)
    for args in ((cfg,), ("--out", f"{work}/res\x00ults")):
        assert_one_line(cli_run("run", *args, *FAST, "-q"), "out", "NUL")
    assert snapshot(work) == before


def test_empty_out_is_refused(work):
    before = snapshot(work)
    r = cli_run("run", *FAST, "--out", "", "-q")
    assert_one_line(r, "out", "empty")
    assert snapshot(work) == before


def test_an_empty_config_file_says_all_defaults(tmp_path):
    from tokenwatt.config import read_yaml

    p = tmp_path / "empty.yaml"
    for text in ("", "# only a comment\n"):
        p.write_text(text)
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            assert read_yaml(p) == {}
        assert "is empty: every field takes its default" in err.getvalue()


# ---- sweeps: grid size, agent turns -------------------------------------------------------


def _sweep(work: Path, text: str, *flags: str):
    cfg = write(work, "sweep.yaml", text + f"out: {work / 'sweep-out'}\n")
    before = snapshot(work)
    with time_limit(LIMIT_S):
        r = cli_run("sweep", cfg, "--dry-run", *flags)
    return r, before


def test_a_million_case_grid_is_refused_up_front(work):
    grid = "workload: {batch_size: [" + ", ".join(map(str, range(1, 101))) + "], "
    grid += "prompt_tokens: [" + ", ".join(map(str, range(1, 101))) + "], "
    grid += "new_tokens: [" + ", ".join(map(str, range(2, 102))) + "]}\n"
    r, before = _sweep(work, grid)
    assert_one_line(r, "1,000,000 cases", "--max-cases")
    assert snapshot(work) == before


def test_max_cases_overrides_the_cap(work):
    grid = "precision: [fp32, bf16]\nworkload: {batch_size: [1, 2]}\n"
    r, _ = _sweep(work, grid, "--max-cases", "3")
    assert_one_line(r, "4 cases", "limit of 3")
    r, _ = _sweep(work, grid, "--max-cases", "4")
    assert r.exit_code == 0 and "4 cases, 4 to run" in r.output, r.output


@pytest.mark.parametrize(
    "turns,needle",
    [("1000000000", "agent.turns must be from 1 to 1000"), ("1e9", "integer turns"),
     ("true", "integer turns")],
)  # fmt: skip
def test_agent_turns_are_bounded(work, turns, needle):
    agent = f"agent: {{turns: {turns}, system_tokens: 8, user_tokens: 4, reply_tokens: 4}}\n"
    r, before = _sweep(work, agent)
    assert_one_line(r, needle)
    assert snapshot(work) == before


def test_sweep_out_empty_is_refused(work):
    cfg = write(work, "s.yaml", "precision: [fp32, bf16]\n")
    assert_one_line(cli_run("sweep", cfg, "--out", "", "--dry-run"), "out", "empty")


# ---- models and prompts -------------------------------------------------------------------


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """tiny-llama saved as a checkpoint, with a word-level tokenizer whose ids go to 9000
    while the model's vocabulary has 4096."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from tokenwatt.models.presets import preset_config

    d = tmp_path_factory.mktemp("ckpt") / "tiny"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(preset_config("tiny-llama")).save_pretrained(d)
    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "hello": 1, "world": 2, "far": 9000},
                                     unk_token="[UNK]"))  # fmt: skip
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(d)
    return d


def _variant(ckpt: Path, tmp_path: Path, change) -> str:
    d = tmp_path / "variant"
    shutil.copytree(ckpt, d)
    change(d)
    return str(d)


def _config(d: Path, **kv) -> None:
    c = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({**c, **kv}))


def _truncate(d: Path) -> None:
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


CHECKPOINTS = {
    "truncated safetensors": (_truncate, ("cannot load the weights", "damaged")),
    "empty safetensors": (
        lambda d: (d / "model.safetensors").write_bytes(b""),
        ("cannot load the weights",),
    ),  # fmt: skip
    "negative hidden_size": (lambda d: _config(d, hidden_size=-256), ("hidden_size=-256",)),
    "hidden_size -1": (lambda d: _config(d, hidden_size=-1), ("config.json", "hidden size")),
    "weights of another shape": (
        lambda d: _config(d, hidden_size=128),
        ("other shapes than its config.json",),
    ),  # fmt: skip
    "a 100,000-layer model": (
        lambda d: _config(d, num_hidden_layers=100_000),
        ("needs at least", "GiB", "free"),
    ),  # fmt: skip
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_damaged_checkpoints(work, ckpt, tmp_path, case):
    change, needles = CHECKPOINTS[case]
    model = _variant(ckpt, tmp_path, change)
    with time_limit(LIMIT_S * 2):
        rejected(work, *FAST, "--no-fidelity", "--model", model, needles=needles)


def test_a_binary_prompts_file(work, ckpt, tmp_path):
    prompts = tmp_path / "prompts.bin"
    prompts.write_bytes(bytes(range(256)) * 10)
    rejected(work, *FAST, "--no-fidelity", "--model", str(ckpt), "--prompts-file", str(prompts),
             needles=("workload.prompts_file", "binary"))  # fmt: skip


def test_token_ids_beyond_the_vocabulary(work, ckpt, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("hello world far\n")
    rejected(work, *FAST, "--no-fidelity", "--model", str(ckpt), "--prompts-file", str(prompts),
             needles=("token id 9000", "vocabulary of 4096"))  # fmt: skip


def test_a_prompt_longer_than_the_context(work):
    rejected(work, *FAST, "--no-fidelity", "--prompt-tokens", "5000",
             needles=("context of 4096", "--prompt-tokens"))  # fmt: skip


def test_a_preset_too_big_for_the_device_is_refused_before_building(monkeypatch):
    from tokenwatt.errors import UserError
    from tokenwatt.models import memory
    from tokenwatt.models.load import load_model

    monkeypatch.setattr(memory, "free_bytes", lambda device: 2**30)  # a 1 GiB machine
    import torch

    with time_limit(LIMIT_S), pytest.raises(UserError, match=r"needs at least \d+\.\d GiB"):
        load_model("preset:llama-3.1-8b", "cpu", torch.bfloat16)


def test_weight_count_is_a_lower_bound():
    import torch

    from tokenwatt.models.load import load_model
    from tokenwatt.models.memory import weight_count
    from tokenwatt.models.presets import preset_config

    for name in ("tiny-llama", "tiny-moe"):
        real = sum(p.numel() for p in load_model(f"preset:{name}", "cpu", torch.float32)
                   .model.parameters())  # fmt: skip
        assert 0.5 * real < weight_count(preset_config(name).get_text_config()) <= real


# ---- a user's region file -----------------------------------------------------------------


def test_a_negative_carbon_intensity_in_a_region_file(work, monkeypatch):
    from tokenwatt.analysis import carbon

    regions = write(work, "regions.yaml", "regions:\n  moon:\n    grid: {g_per_kwh: -50}\n"
                    "    sources: {grid: made up}\n")  # fmt: skip
    monkeypatch.setenv("TOKENWATT_REGIONS", regions)
    carbon._load_profiles.cache_clear()
    rejected(work, *FAST, "--region", "moon", needles=("g_per_kwh", "from 0"))
    carbon._load_profiles.cache_clear()
