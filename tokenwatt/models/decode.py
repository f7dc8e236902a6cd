"""The decode loop: prefill, decode one token, decode n tokens. Greedy, EOS ignored.

Written after gpt-fast's generate.py: the model call and the clock marks, nothing else.
`mark(phase)` is called at each phase boundary after the device is synchronised, so a
meter reading taken there belongs to the phase that just ended.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Mark = Callable[[str], None]


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


def synchronize(device: torch.device | str) -> None:
    """Wait for the device to finish queued work, so a clock mark means what it says."""
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    elif dev.type == "mps":
        torch.mps.synchronize()


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


def decode_n_tokens(
    model: Any, token: torch.Tensor, cache: Any, n: int, kw: str
) -> list[torch.Tensor]:
    tokens = []
    for _ in range(n):
        token = decode_one_token(model, token, cache, kw)
        tokens.append(token)
    return tokens


@torch.inference_mode()
def generate(
    model: Any, input_ids: torch.Tensor, new_tokens: int, mark: Mark = _no_mark
) -> Generation:
    """Prefill then decode `new_tokens - 1` steps; marks: prefill, decode, end."""
    device = input_ids.device
    kw = cache_kwarg(model)
    cache = new_cache(model)
    synchronize(device)
    mark("prefill")
    first = prefill(model, input_ids, cache, kw)
    synchronize(device)
    mark("decode")
    rest = decode_n_tokens(model, first, cache, new_tokens - 1, kw)
    synchronize(device)
    mark("end")
    tokens = torch.cat([first, *rest], dim=1)
    return Generation(tokens, input_ids.shape[1], input_ids.shape[0])
