"""The decode loop: prefill, decode one token, decode n tokens. Greedy, EOS ignored.

Written after gpt-fast's generate.py: the model call and the clock marks, nothing else.
`mark(phase)` is called at each phase boundary after the device is synchronised, so a
meter reading taken there belongs to the phase that just ended.

One loop serves eager and compiled decoding (`compile: true`), as in gpt-fast, which rebinds
its decode function to a compiled one: `compiled_state` builds, once per model and shape, a
static KV cache and a torch.compile'd `decode_one_token`, and `generate` takes them as its
`step` and `cache`. At batch 1 on a GPU, eager decode spends as much time launching kernels
from Python as running the model; shipped inference compiles the decode step. Compilation
happens on the first call for a given model, batch size and length, and on GPUs
`reduce-overhead` records CUDA graphs on the calls after it: run at least two warm-up
generations before measuring. The static cache is kept between calls and reset, so its
tensors keep their addresses and nothing recompiles.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tokenwatt._util.devices import synchronize
from tokenwatt.errors import UserError

Mark = Callable[[str], None]
Step = Callable[[Any, torch.Tensor, Any, str], torch.Tensor]  # (model, token, cache, kw)
COMPILE_BACKEND = "inductor"  # tests swap in "eager" to check the loop without a C++ build


def _no_mark(phase: str) -> None:
    pass


@dataclass
class Generation:
    tokens: torch.Tensor  # (batch, new_tokens) generated ids
    prompt_tokens: int  # per sequence
    batch_size: int

    @property
    def tokens_generated(self) -> int:
        return self.tokens.numel()

    @property
    def decode_tokens(self) -> int:
        """Tokens produced by decode steps (the first new token comes from prefill)."""
        return self.batch_size * (self.tokens.shape[1] - 1)


def cache_kwarg(model: Any) -> str:
    """transformers 5.24 takes `cache=`; 5.17 silently ignores it and wants `past_key_values=`."""
    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model: Any) -> Any:
    from transformers import DynamicCache

    return DynamicCache(config=model.config)


def prefill(model: Any, input_ids: torch.Tensor, cache: Any, kw: str) -> torch.Tensor:
    """Run the prompt through the model, fill the cache, return the first new token."""
    out = model(input_ids=input_ids, use_cache=True, logits_to_keep=1, **{kw: cache})
    return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)


def decode_one_token(model: Any, token: torch.Tensor, cache: Any, kw: str) -> torch.Tensor:
    out = model(input_ids=token, use_cache=True, **{kw: cache})
    return out.logits[:, -1, :].argmax(dim=-1, keepdim=True)


def decode_n_tokens(model: Any, token: torch.Tensor, cache: Any, n: int, kw: str,
                    step: Step = decode_one_token) -> list[torch.Tensor]:  # fmt: skip
    tokens = []
    for _ in range(n):
        token = step(model, token, cache, kw)
        tokens.append(token.clone())  # CUDA graphs reuse their output buffer
    return tokens


@torch.inference_mode()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    new_tokens: int,
    mark: Mark = _no_mark,
    step: Step = decode_one_token,
    cache: Any = None,
) -> Generation:
    """Prefill then decode `new_tokens - 1` steps; marks: prefill, decode, end.

    step, cache: the decode step and the KV cache (default: eager, a fresh dynamic cache);
    `compiled_generate` passes a compiled step and a reset static cache.
    """
    device = input_ids.device
    kw = cache_kwarg(model)
    cache = new_cache(model) if cache is None else cache
    synchronize(device)
    mark("prefill")
    first = prefill(model, input_ids, cache, kw)
    synchronize(device)
    mark("decode")
    rest = decode_n_tokens(model, first, cache, new_tokens - 1, kw, step)
    synchronize(device)
    mark("end")
    tokens = torch.cat([first, *rest], dim=1)
    return Generation(tokens, input_ids.shape[1], input_ids.shape[0])


# --- compiled decoding: the same loop with a compiled step and a static cache ------------------


def compiled_state(model: Any, batch: int, max_len: int, device: torch.device) -> dict[str, Any]:
    """The static cache and compiled step of this model for this shape, built once."""
    from transformers import StaticCache

    key = (batch, max_len, str(device))
    states = model.__dict__.setdefault("_tokenwatt_compiled", {})
    if key not in states:
        cache = StaticCache(config=model.config, max_cache_len=max_len)
        states[key] = {"cache": cache, "step": _first_call_checked(_compile(device))}
    return states[key]


def _compile(device: torch.device) -> Step:
    if COMPILE_BACKEND != "inductor":
        return torch.compile(decode_one_token, backend=COMPILE_BACKEND, dynamic=False)
    mode = "reduce-overhead" if device.type == "cuda" else "default"
    return torch.compile(decode_one_token, mode=mode, dynamic=False)


def _first_call_checked(step: Step) -> Step:
    """The first compiled call compiles; a toolchain failure there becomes a one-line error."""
    state = {"compiled": False}

    @functools.wraps(step)
    def checked(*args: Any) -> torch.Tensor:
        if state["compiled"]:
            return step(*args)
        try:
            out = step(*args)
        except Exception as e:  # inductor raises several types (missing compiler, C++ errors)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise UserError(
                f"compile: torch.compile could not compile the decode step on this machine "
                f"({type(e).__name__}: {first}); run with compile: false"
            ) from None
        state["compiled"] = True
        return out

    return checked


@torch.inference_mode()
def compiled_generate(
    model: Any, input_ids: torch.Tensor, new_tokens: int, mark: Mark = _no_mark
) -> Generation:
    """`generate` with the compiled decode step and this shape's static cache (reset)."""
    batch, prompt = input_ids.shape
    state = compiled_state(model, batch, prompt + new_tokens, input_ids.device)
    state["cache"].reset()
    return generate(model, input_ids, new_tokens, mark, step=state["step"], cache=state["cache"])


def generation_fn(compile: bool) -> Callable[..., Generation]:
    """The generate function a run uses: eager, or compiled (`compile: true`)."""
    return compiled_generate if compile else generate
