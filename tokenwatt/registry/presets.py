"""Architecture presets: real checkpoints' shapes, built with seeded random weights, offline.

The shapes only (data read by the config validation and the floor); `tokenwatt.models.load`
builds the model from them.

Energy per token depends on shapes (parameter count, KV heads, vocabulary), not on trained
values, so a preset measures what the real checkpoint would cost without a download.
Fidelity on random weights is meaningful only relative to a reference of the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    name: str
    model_type: str  # transformers config model_type
    config: dict[str, Any] = field(default_factory=dict)
    like: str = ""  # the real checkpoint whose shapes it copies
    moe: bool = False


_LLAMA3_ROPE = {
    "rope_type": "llama3",
    "factor": 32.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 8192,
    "rope_theta": 500000.0,
}

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in [
        Preset(
            "tiny-llama",
            "llama",
            dict(
                vocab_size=4096,
                hidden_size=256,
                intermediate_size=768,  # a multiple of 32 and 128: every FP4/int4 block fits
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=4096,
                tie_word_embeddings=False,
            ),
            like="Llama architecture, ~5M parameters (tests and quickstart)",
        ),
        Preset(
            "llama-3.2-1b",
            "llama",
            dict(
                vocab_size=128256,
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=64,
                max_position_embeddings=131072,
                rms_norm_eps=1e-5,
                tie_word_embeddings=True,
                rope_parameters=_LLAMA3_ROPE,
            ),
            like="meta-llama/Llama-3.2-1B",
        ),
        Preset(
            "qwen2.5-0.5b",
            "qwen2",
            dict(
                vocab_size=151936,
                hidden_size=896,
                intermediate_size=4864,
                num_hidden_layers=24,
                num_attention_heads=14,
                num_key_value_heads=2,
                max_position_embeddings=32768,
                rms_norm_eps=1e-6,
                tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
            like="Qwen/Qwen2.5-0.5B",
        ),
        Preset(
            "llama-3.1-8b",
            "llama",
            dict(
                vocab_size=128256,
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                max_position_embeddings=131072,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                rope_parameters=_LLAMA3_ROPE,
            ),
            like="meta-llama/Llama-3.1-8B",
        ),
        # Mixture-of-experts presets (moe=True): experts are 3-D tensors in transformers 5.
        Preset(
            "tiny-moe",
            "mixtral",
            dict(
                vocab_size=4096,
                hidden_size=256,
                intermediate_size=512,
                num_hidden_layers=4,
                num_attention_heads=4,
                num_key_value_heads=2,
                num_local_experts=8,
                num_experts_per_tok=2,
                max_position_embeddings=4096,
                tie_word_embeddings=False,
            ),
            like="Mixtral architecture, 8 experts top-2, ~15M parameters (tests)",
            moe=True,
        ),
        Preset(
            "mixtral-8x7b",
            "mixtral",
            dict(
                vocab_size=32000,
                hidden_size=4096,
                intermediate_size=14336,
                num_hidden_layers=32,
                num_attention_heads=32,
                num_key_value_heads=8,
                num_local_experts=8,
                num_experts_per_tok=2,
                max_position_embeddings=32768,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
            like="mistralai/Mixtral-8x7B-v0.1 (46.7B total, 12.9B active)",
            moe=True,
        ),
        Preset(
            "qwen3-moe-30b-a3b",
            "qwen3_moe",
            dict(
                vocab_size=151936,
                hidden_size=2048,
                intermediate_size=6144,
                moe_intermediate_size=768,
                num_hidden_layers=48,
                num_attention_heads=32,
                num_key_value_heads=4,
                head_dim=128,
                num_experts=128,
                num_experts_per_tok=8,
                norm_topk_prob=True,
                decoder_sparse_step=1,
                mlp_only_layers=[],
                max_position_embeddings=40960,
                rms_norm_eps=1e-6,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            ),
            like="Qwen/Qwen3-30B-A3B (30.5B total, 3.3B active)",
            moe=True,
        ),
        Preset(
            "olmoe-1b-7b",
            "olmoe",
            dict(
                vocab_size=50304,
                hidden_size=2048,
                intermediate_size=1024,
                num_hidden_layers=16,
                num_attention_heads=16,
                num_key_value_heads=16,
                num_experts=64,
                num_experts_per_tok=8,
                norm_topk_prob=False,
                max_position_embeddings=4096,
                rms_norm_eps=1e-5,
                tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            ),
            like="allenai/OLMoE-1B-7B-0924 (6.9B total, 1.3B active)",
            moe=True,
        ),
    ]
}
