"""Compiled decoding: the same loop with a static KV cache and a torch.compile'd decode step."""

from __future__ import annotations

import pytest
import torch

import tokenwatt.models.decode as dc
from tokenwatt.errors import UserError
from tokenwatt.models.decode import generate


def _tiny(layers: int = 1):
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(
        "llama", vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()


IDS = torch.randint(0, 512, (2, 5), generator=torch.Generator().manual_seed(0))


def test_same_contract_and_tokens_as_eager(monkeypatch) -> None:
    """Loop, static cache reuse and phase marks, with dynamo's eager backend (no C++ build)."""
    monkeypatch.setattr(dc, "COMPILE_BACKEND", "eager")
    model = _tiny(layers=2)
    marks: list[str] = []
    ref = generate(model, IDS, 6)
    out = dc.compiled_generate(model, IDS, 6, marks.append)
    assert marks == ["prefill", "decode", "end"]
    assert torch.equal(out.tokens, ref.tokens)
    assert (out.tokens_generated, out.decode_tokens) == (ref.tokens_generated, ref.decode_tokens)
    again = dc.compiled_generate(model, IDS, 6)  # reused static cache, reset between calls
    assert torch.equal(again.tokens, ref.tokens)
    assert len(model._tokenwatt_compiled) == 1


def test_compile_failure_is_one_line_user_error(monkeypatch) -> None:
    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("InductorError: C++ compiler not found\nlong traceback")

        return call

    monkeypatch.setattr(torch, "compile", broken)
    with pytest.raises(UserError, match="compile: false") as e:
        dc.compiled_generate(_tiny(), IDS, 3)
    assert "\n" not in str(e.value)


@pytest.mark.slow
def test_inductor_compiles_on_this_cpu() -> None:
    """The real inductor build (slow on a small shared CPU: tens of seconds)."""
    model = _tiny(layers=1)
    ref = generate(model, IDS, 4)
    out = dc.compiled_generate(model, IDS, 4)
    assert torch.equal(out.tokens, ref.tokens)
