"""The GPU glue, on a CPU with a faked `torch.cuda` (issue 26): what only runs on a GPU box is
still exercised by the suite every machine runs. The same functions run on a real board."""

from __future__ import annotations

import pytest
import torch

from tokenwatt._util import devices
from tokenwatt.config import validate
from tokenwatt.errors import UserError
from tokenwatt.models.memory import free_bytes
from tokenwatt.models.placement import check_map, free_on, max_memory
from tokenwatt.runner import trials
from tokenwatt.runner.rows import GPU_COOLDOWN_S, cooldown_s


class FakeCuda:
    """Records what tokenwatt asks of CUDA; answers as a machine with `free` bytes per board."""

    def __init__(self, free: dict[int, int]) -> None:
        self.free, self.synced, self.reset = free, [], []

    def is_available(self) -> bool:
        return True

    def is_initialized(self) -> bool:
        return True

    def synchronize(self, device) -> None:
        self.synced.append(device if isinstance(device, int) else torch.device(device).index)

    def mem_get_info(self, index: int = 0) -> tuple[int, int]:
        return self.free[index], 80 * 2**30

    def reset_peak_memory_stats(self, device) -> None:
        self.reset.append(torch.device(device).index)

    def max_memory_allocated(self, device) -> int:
        return 3 * 2**30


@pytest.fixture
def cuda(monkeypatch):
    fake = FakeCuda({0: 40 * 2**30, 1: 30 * 2**30, 2: 20 * 2**30})
    for name in ("is_available", "is_initialized", "synchronize", "mem_get_info",
                 "reset_peak_memory_stats", "max_memory_allocated"):  # fmt: skip
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    yield fake
    devices.place_on([])


def test_a_mark_waits_for_every_board_the_model_spans(cuda):
    devices.place_on([0, 2])
    devices.synchronize("cuda:0")
    assert cuda.synced == [0, 2]
    devices.place_on([])  # one board: the device itself
    devices.synchronize("cuda:1")
    assert cuda.synced == [0, 2, 1]
    devices.synchronize("cpu")  # nothing to wait for
    assert cuda.synced == [0, 2, 1]


def test_a_device_map_that_offloads_is_refused():
    check_map({"model.embed_tokens": 0, "model.layers.0": 1, "lm_head": 1}, [0, 1], "m")
    for off in ("cpu", "disk"):
        with pytest.raises(UserError, match=f"puts part of it on {off}"):
            check_map({"model.embed_tokens": 0, "model.layers.0": off}, [0, 1], "m")
    with pytest.raises(UserError, match="puts part of it on 3"):  # a board not the case's
        check_map({"model.embed_tokens": 0, "lm_head": 3}, [0, 1], "m")


def test_free_memory_is_asked_of_each_of_the_cases_boards_only(cuda):
    assert free_on([0, 2]) == {0: 40 * 2**30, 2: 20 * 2**30}
    limits = max_memory([0, 2], free_on([0, 2]))
    assert set(limits) == {0, 2} and limits[0] < 40 * 2**30 and limits[2] < 20 * 2**30
    assert free_bytes("cuda:1") == 30 * 2**30 and free_bytes("cuda") == 40 * 2**30


def test_peak_memory_is_reset_and_read_on_the_models_board(cuda):
    trials.reset_peak_memory("cuda:1")
    assert cuda.reset == [1]
    assert trials._peak_memory_mb("cuda:1") == 3 * 1024


def test_a_gpu_pauses_two_seconds_between_trials_by_default():
    cfg = validate({"model": "preset:tiny-llama"})
    assert GPU_COOLDOWN_S == 2.0
    assert cooldown_s(cfg, "cuda:0") == 2.0 and cooldown_s(cfg, "cpu") == 0.0
    given = validate({"model": "preset:tiny-llama", "measure": {"cooldown_s": 0.5}})
    assert cooldown_s(given, "cuda:0") == 0.5
