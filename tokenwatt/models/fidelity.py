"""Output fidelity of a precision against a reference precision of the same weights.

How it is measured (runs before any meter opens, so it never adds to the energy):

1. The reference is the same model spec and seed loaded again at the reference precision
   (`fidelity.reference`; "auto" means fp32 on CPU, bf16 on a GPU). For a preset the seeded
   initialisation draws the same values at any dtype, so both models hold the same weights
   up to the rounding of their dtype.
2. Sequences: `fidelity.sequences` random prompts of 16 token ids (seeded), each continued
   greedily by the *reference* for `fidelity.tokens` tokens. The continuation is what the
   reference would itself generate, so a real checkpoint is scored on fluent text.
3. Teacher forcing: both models read exactly the same token sequences, and at each of the
   `fidelity.tokens` continuation positions we compare next-token distributions:
   `top1_agreement` (share of positions with the same argmax) and `kl_divergence`
   (mean KL(reference || tested) in nats). A differing token never derails the rest.

Random-weight presets: initialised at std 0.02, their next-token distributions are nearly
flat (the reference's top-1 probability is a few times 1/vocab, and the gap to the runner-up
is a fraction of a nat), and greedy continuation does not make them confident. Top-1 then
flips at near-ties that any rounding can tip: bf16 against fp32 already disagrees at a few
per cent of positions. We do not hide that by picking positions; we report it, together with
`fidelity_ref_top1_prob` (the reference's mean top-1 probability) so a reader can tell a
flat reference from a confident one. On such models, read top-1 as a pessimistic bound and
rank precisions by `kl_divergence`, which does not depend on the reference being confident.
"""

from __future__ import annotations

from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.errors import UserError
from tokenwatt.registry.precisions import REFERENCE_NAMES

PROMPT_TOKENS = 16
CHUNK_SEQUENCES = 4


def reference_precision(reference: str, device: str) -> str:
    """Resolve `fidelity.reference`: auto -> fp32 on CPU, bf16 on a GPU."""
    if reference == "auto":
        return "fp32" if str(device).startswith("cpu") else "bf16"
    if reference not in REFERENCE_NAMES:
        raise UserError(
            f"fidelity.reference: {reference!r} is not a reference precision; "
            f"use auto, {', '.join(REFERENCE_NAMES)}"
        )
    return reference


def measure_fidelity(cfg: RunConfig, model: Any, device: str) -> dict[str, Any]:
    """Columns fidelity_ref, top1_agreement, kl_divergence, fidelity_ref_top1_prob."""
    ref_prec = reference_precision(cfg.fidelity.reference, device)
    seqs, ref_logp = _reference_run(cfg, device, ref_prec)
    test_logp = next_token_logprobs(model, seqs)
    return {"fidelity_ref": ref_prec, **compare(ref_logp, test_logp)}


def compare(ref_logp: Any, test_logp: Any) -> dict[str, float]:
    """top-1 agreement and mean KL(ref || test) over positions of [n, T, V] log-probabilities."""
    agree = (ref_logp.argmax(-1) == test_logp.argmax(-1)).float().mean()
    kl = (ref_logp.exp() * (ref_logp - test_logp)).sum(-1).mean()
    return {
        "top1_agreement": float(agree),
        "kl_divergence": max(float(kl), 0.0),  # float rounding can give -1e-9 for equal inputs
        "fidelity_ref_top1_prob": float(ref_logp.max(-1).values.exp().mean()),
    }


def _reference_run(cfg: RunConfig, device: str, ref_prec: str) -> tuple[Any, Any]:
    """Load the reference, let it write the sequences, return them and its log-probs."""
    import gc

    import torch

    from tokenwatt.models.load import load_model
    from tokenwatt.models.precision import base_dtype

    ref = load_model(
        cfg.model,
        device,
        base_dtype(ref_prec, device),
        seed=cfg.workload.seed,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
    ).model
    vocab = ref.config.get_text_config().vocab_size
    seqs = reference_sequences(ref, cfg.fidelity.sequences, cfg.fidelity.tokens, vocab, device,
                               cfg.workload.seed)  # fmt: skip
    ref_logp = next_token_logprobs(ref, seqs)
    del ref
    gc.collect()
    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
    return seqs, ref_logp


def reference_sequences(model: Any, n: int, tokens: int, vocab: int, device: str, seed: int) -> Any:
    """n seeded random prompts, each continued greedily by `model` for `tokens` tokens."""
    import torch

    from tokenwatt.models.decode import generate

    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, vocab, (n, PROMPT_TOKENS), generator=g).to(device)
    cont = generate(model, prompts, tokens).tokens
    return torch.cat([prompts, cont], dim=1)


def next_token_logprobs(model: Any, seqs: Any) -> Any:
    """float32 log-probs [n, tokens, V] at the positions that predict the continuation."""
    import torch

    out = []
    with torch.inference_mode():
        for rows in seqs.split(CHUNK_SEQUENCES):  # bounds the [rows, T, V] logits in memory
            logits = model(input_ids=rows[:, :-1], use_cache=False).logits
            out.append(logits[:, PROMPT_TOKENS - 1 :].float().log_softmax(-1))
    return torch.cat(out)
