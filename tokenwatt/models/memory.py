"""Will a model fit? Checked from its config before anything is built.

A checkpoint's config.json says how big the model is; building a 100,000-layer model only to
run out of memory minutes later helps nobody. `check_model_config` refuses sizes that are not
positive integers (a damaged config) and a model whose weights alone cannot fit in the
device's free memory. The count is a lower bound (the matrices of attention, MLP or experts,
and embeddings; no norms, biases or activations), so a model refused here cannot fit, and
one accepted may still run out of memory later, which the run reports as it always did.
"""

from __future__ import annotations

from typing import Any

from tokenwatt.errors import UserError

SIZE_KEYS = (
    "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "intermediate_size", "head_dim", "max_position_embeddings",
    "moe_intermediate_size", "num_local_experts", "num_experts", "n_routed_experts",
)  # fmt: skip
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts")
# Gated MLPs (SwiGLU, GeGLU) have three matrices, not two: Llama, Mistral, Qwen, Gemma, Phi-3
# and their MoE variants; they say so by model_type (hidden_act "silu" is the common tell).
GATED_MLP_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma",
    "gemma2", "gemma3_text", "phi3", "olmo", "olmo2", "olmoe", "granite", "granitemoe",
    "deepseek_v2", "deepseek_v3", "cohere",
})  # fmt: skip


def check_model_config(config: Any, dtype: Any, device: str, where: str,
                       boards: list[int] | None = None) -> None:  # fmt: skip
    """One-line UserError when the config's sizes are damaged or its weights cannot fit (on
    `device`, or on the CUDA `boards` together when the model is spread over several)."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    check_sizes(text, where)
    need = weight_count(text) * _itemsize(dtype)
    free = sum(free_bytes(f"cuda:{b}") or 0 for b in boards) if boards else free_bytes(device)
    if boards:
        device = f"{len(boards)} boards ({', '.join(f'cuda:{b}' for b in boards)})"
    if free is not None and need > free:
        raise UserError(
            f"model: {where} needs at least {_gib(need)} for its weights in "
            f"{str(dtype).removeprefix('torch.')} ({weight_count(text) / 1e9:,.2f} B parameters "
            f"from its config) but {device} has {_gib(free)} free; use a smaller model or "
            "precision, or a device with more memory"
        )


def check_sizes(config: Any, where: str) -> None:
    for key in SIZE_KEYS:
        v = getattr(config, key, None)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            shown = repr(v) if isinstance(v, (int, float)) else type(v).__name__
            raise UserError(
                f"model: {where} has {key}={shown[:40]} in its config; sizes must be positive "
                "integers, so the config is damaged: fix config.json or re-save the checkpoint"
            )


def weight_count(config: Any) -> int:
    """A lower bound on the parameters: per layer attention and MLP (every expert of a MoE)
    matrices, plus the embeddings (and an untied LM head). `config`: a transformers config or
    the same keys as a mapping (a preset's shapes, a config.json)."""

    def get(key: str, default: Any = None) -> Any:
        if isinstance(config, dict):
            return config.get(key, default)
        return getattr(config, key, default)

    h = get("hidden_size", 0) or 0
    layers = get("num_hidden_layers", 0) or 0
    heads = get("num_attention_heads", 0) or 1
    kv = get("num_key_value_heads") or heads
    head_dim = get("head_dim") or max(h // heads, 1)
    attention = h * head_dim * (2 * heads + 2 * kv)  # q, o and k, v projections
    inter = get("intermediate_size") or 4 * h
    experts = next((e for k in EXPERT_KEYS if (e := get(k))), 0)
    if experts:
        inter = get("moe_intermediate_size") or inter
    gated = get("model_type") in GATED_MLP_TYPES or get("hidden_act") == "silu"
    mlp = (3 if gated else 2) * h * inter * max(experts, 1)
    vocab = get("vocab_size", 0) or 0
    heads_out = 1 if get("tie_word_embeddings", True) else 2
    return layers * (attention + mlp) + heads_out * vocab * h


def free_bytes(device: str) -> int | None:
    """Free memory of the device (host RAM available for CPU); None where unknown."""
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        index = torch.device(device).index
        return int(torch.cuda.mem_get_info(index if index is not None else 0)[0])
    if device == "cpu":
        import psutil

        return int(psutil.virtual_memory().available)
    return None


def _itemsize(dtype: Any) -> int:
    return int(getattr(dtype, "itemsize", 2))


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB"
