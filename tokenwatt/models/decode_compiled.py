"""The compiled decode loop (`compile: true`): static KV cache + torch.compile'd decode step.

At batch 1 on a GPU, eager decode spends as much time launching kernels from Python as
running the model; shipped inference compiles the decode step. Same contract and phase
marks as `tokenwatt.models.decode.generate`: prefill (eager, fills the static cache), decode
(one compiled call per token), end.

Compilation happens on the first call for a given model, batch size and length, and on
GPUs `reduce-overhead` records CUDA graphs on the calls after it: run at least two warm-up
generations before measuring. The static cache is kept between calls and reset, so its
tensors keep their addresses and nothing recompiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tokenwatt.errors import UserError
from tokenwatt.models.decode import Generation, Mark, _no_mark, cache_kwarg, synchronize

COMPILE_BACKEND = "inductor"  # tests swap in "eager" to check the loop without a C++ build


def _static_state(model: Any, batch: int, max_len: int, device: torch.device) -> dict[str, Any]:
    """The static cache and compiled step of this model for this shape, built once."""
    from transformers import StaticCache

    key = (batch, max_len, str(device))
    states = model.__dict__.setdefault("_tokenwatt_compiled", {})
    if key not in states:
        cache = StaticCache(config=model.config, max_cache_len=max_len)
        states[key] = {"cache": cache, "step": _compile_step(model, device), "fresh": True}
    return states[key]


def _compile_step(model: Any, device: torch.device) -> Callable[..., torch.Tensor]:
    kw = cache_kwarg(model)

    def step(token: torch.Tensor, cache: Any) -> torch.Tensor:
        out = model(input_ids=token, use_cache=True, **{kw: cache})
        return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)

    mode = "reduce-overhead" if device.type == "cuda" else "default"
    if COMPILE_BACKEND != "inductor":
        return torch.compile(step, backend=COMPILE_BACKEND, dynamic=False)
    return torch.compile(step, mode=mode, dynamic=False)


def _first_call(step: Callable[..., torch.Tensor], token: torch.Tensor, cache: Any) -> Any:
    """The first compiled call compiles; turn a toolchain failure into a one-line error."""
    try:
        return step(token, cache)
    except Exception as e:  # inductor raises several types (missing compiler, C++ errors)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise UserError(
            f"compile: torch.compile could not compile the decode step on this machine "
            f"({type(e).__name__}: {first}); run with compile: false"
        ) from None


@torch.inference_mode()
def generate_compiled(
    model: Any, input_ids: torch.Tensor, new_tokens: int, mark: Mark = _no_mark
) -> Generation:
    """Prefill then `new_tokens - 1` compiled decode steps; marks: prefill, decode, end."""
    device = input_ids.device
    batch, prompt = input_ids.shape
    state = _static_state(model, batch, prompt + new_tokens, device)
    cache, step = state["cache"], state["step"]
    cache.reset()
    kw = cache_kwarg(model)
    synchronize(device)
    mark("prefill")
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{kw: cache})
    token = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
    synchronize(device)
    mark("decode")
    tokens = [token]
    for i in range(new_tokens - 1):
        if state["fresh"] and i == 0:
            token = _first_call(step, token, cache)
            state["fresh"] = False
        else:
            token = step(token, cache)
        tokens.append(token.clone())  # CUDA graphs reuse their output buffer
    synchronize(device)
    mark("end")
    return Generation(torch.cat(tokens, dim=1), prompt, batch)
