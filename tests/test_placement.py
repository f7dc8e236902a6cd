"""Placement, the one owner of "where does this case run": the rule for `auto`, the boards a
case holds under what an executor offers, what a case process is told to see, and the reason
every row records."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tokenwatt.config import RunConfig
from tokenwatt.errors import UserError
from tokenwatt.placement import (
    Offer,
    View,
    hold_for,
    region_placement,
    resolve_device,
    resolve_placement,
    visible_for,
)
from tokenwatt.sim import nvml as sim

GPU_PARTITION = Offer(4, "partition gpu offers gpu:a100:4(S:0-1) (sinfo)")
CPU_PARTITION = Offer(0, "partition cpu offers (null) (sinfo)")


def test_auto_is_a_gpu_only_where_the_process_sees_one():
    sees_two, sees_none = View(2, "torch sees 2 CUDA GPU(s)"), View(0, "torch sees no CUDA GPU")
    assert resolve_device("auto", lambda: sees_two) == ("cuda", "auto: torch sees 2 CUDA GPU(s)")
    assert resolve_device("auto", lambda: sees_none) == ("cpu", "auto: torch sees no CUDA GPU")
    assert resolve_device("cuda:1", lambda: sees_two) == ("cuda:1", "given")
    with pytest.raises(UserError, match="device: 'cuda' asked for but no CUDA GPU is visible"):
        resolve_device("cuda", lambda: sees_none)
    with pytest.raises(UserError, match="'cuda:2' does not exist; this machine has 2"):
        resolve_device("cuda:2", lambda: sees_two)

    def never() -> View:
        raise AssertionError("a given cpu asks nothing")

    assert resolve_device("cpu", never) == ("cpu", "given")


@pytest.mark.parametrize(("config", "offer", "boards", "why"), [
    ({}, GPU_PARTITION, 1, "device auto -> 1 GPU: partition gpu offers gpu:a100:4"),
    ({}, CPU_PARTITION, 0, "device auto -> 0 GPUs: partition cpu offers (null)"),
    ({"device": "cpu"}, GPU_PARTITION, 0, "device cpu"),
    ({"device": "cuda"}, CPU_PARTITION, 1, "device cuda"),
    ({"gpus": 2}, CPU_PARTITION, 2, "gpus: 2"),
    ({"device": "cpu", "gpus": ["0", "1"]}, GPU_PARTITION, 2, "gpus: ['0', '1']"),
])  # fmt: skip
def test_a_case_holds_a_gpu_only_where_one_is_offered(config, offer, boards, why):
    hold = hold_for(RunConfig(**config), offer)
    assert hold.boards == boards and hold.why.startswith(why)


def test_a_served_model_holds_no_gpu_unless_launched_here():
    served = RunConfig(engine="openai", server={"url": "http://127.0.0.1:8000/v1"})
    assert hold_for(served, GPU_PARTITION, model_here=False).boards == 0
    assert hold_for(served, GPU_PARTITION, model_here=True).boards == 1


def test_renumbered_boards_and_what_a_case_process_sees():
    one = hold_for(RunConfig(device="cuda:1"), CPU_PARTITION)
    assert one.device == "cuda" and visible_for(RunConfig(device="cuda:1"), one, "3,5") == "5"
    assert visible_for(RunConfig(device="cuda:1"), one, None) == "1"
    cpu = RunConfig(device="cpu")
    assert visible_for(cpu, hold_for(cpu, GPU_PARTITION), "0,1") == ""  # sees no GPU
    auto = RunConfig()
    assert visible_for(auto, hold_for(auto, GPU_PARTITION), "GPU-aaa,GPU-bbb") == "GPU-aaa"
    assert visible_for(auto, hold_for(auto, CPU_PARTITION), "0") == ""
    two = RunConfig(device="cpu", gpus=2)
    assert visible_for(two, hold_for(two, CPU_PARTITION), None) == "0,1"
    named = RunConfig(gpus=["1", "0"])  # named in this process's numbering: kept as it is
    assert visible_for(named, hold_for(named, CPU_PARTITION, renumbered=False), "4,5") is None


def test_an_allocated_gpu_that_torch_cannot_see_is_named_with_its_cause():
    code = ("import os; os.environ['CUDA_VISIBLE_DEVICES'] = '0'\n"
            "from tokenwatt.config import RunConfig\n"
            "from tokenwatt.placement import resolve_placement\n"
            "p = resolve_placement(RunConfig())\n"
            "print(p.device, '|', p.resolved_from, '|', p.warnings())")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120).stdout  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine's torch sees a GPU")
    assert out.startswith("cpu | auto: a GPU was allocated (CUDA_VISIBLE_DEVICES=0) but torch "
                          "sees none: torch "), out  # fmt: skip
    assert "is a CPU build" in out and "gpu-unused: the model ran on the CPU" in out


def test_a_region_measures_the_boards_this_process_may_use(monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    gpus = sim.configure(3, 300.0)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,0")
    place = region_placement()
    assert place.device == "cuda" and place.measured == (gpus[2].uuid, gpus[0].uuid)
    assert place.resolved_from == "auto: NVML sees 2 board(s) this process may use"
    assert region_placement("cuda:1").measured == (gpus[0].uuid,)
    assert region_placement(gpus=["1"]).measured == (gpus[1].uuid,)  # NVML's numbering
    assert region_placement("cpu").measured == ()
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert region_placement() == region_placement("cpu").__class__(
        "cpu", "auto: NVML sees no board this process may use"
    )


def test_a_run_on_held_boards_records_how_its_device_was_decided(monkeypatch):
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = sim.configure(2, 300.0)
    place = resolve_placement(RunConfig(device="cpu", gpus=1))
    assert place.device == "cpu" and place.resolved_from == "given"
    assert place.boards == place.measured == (gpus[0].uuid,) and place.cuda == ()
    served = resolve_placement(RunConfig(engine="openai", server={"url": "http://h:1/v1"},
                                         measure={"gpus": "1"}), in_process=False)  # fmt: skip
    assert served.device == "cpu" and served.measured == (gpus[1].uuid,)
    assert "server runs the model" in served.resolved_from


def test_every_engine_declares_what_the_runner_asks():
    from tokenwatt.config import ENGINES
    from tokenwatt.engines import engine_class

    served = RunConfig(engine="openai", server={"url": "http://127.0.0.1:8000/v1"})
    for name in ENGINES:
        cls = engine_class(name)
        assert cls.name == name
        assert isinstance(cls.in_process, bool) and isinstance(cls.sets_precision, bool)
    openai = engine_class("openai")
    assert not openai.in_process and not openai.sets_precision and not openai.errors_are_own
    assert not openai.runs_model_here(served)
    assert openai.runs_model_here(served.model_copy(update={"server": served.server.model_copy(
        update={"launch": "python -m server"})}))  # fmt: skip
    assert engine_class("transformers").errors_are_own
    assert not engine_class("vllm").errors_are_own and engine_class("vllm").in_process


def test_mixed_boards_cannot_name_cuda_indexes_but_a_region_still_sees_them(monkeypatch):
    """Under CUDA's default FASTEST_FIRST order, mixed boards have no knowable CUDA order: a
    case naming CUDA indexes is refused with the fix; a region, which needs only the set of
    boards this process may use, still measures all of them."""
    monkeypatch.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    gpus = sim.configure(2, 300.0, boards=[{}, {"name": "NVIDIA L4 (simulated)"}])
    with pytest.raises(UserError, match="CUDA_DEVICE_ORDER=PCI_BUS_ID"):
        resolve_placement(RunConfig(device="cpu", gpus=1))
    assert set(region_placement().measured) == {g.uuid for g in gpus}
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    assert resolve_placement(RunConfig(device="cpu", gpus=1)).boards == (gpus[0].uuid,)
