"""The physical floor: the bytes and FLOPs a generated token must cost on given hardware.

At batch B and context L a decode step reads the weights once (shared by the batch) and each
sequence's KV cache, and does about 2 FLOPs per active parameter per token:

    bytes/token  = weight_bytes_moved / B + L x kv_bytes_per_position
    energy/token >= bytes/token x 8 x pJ/bit + FLOPs/token x pJ/FLOP
    time/token   >= max(bytes/token / bandwidth, FLOPs/token / peak FLOP/s)

Hardware numbers live in data/hardware.yaml (each with its source), extendable through the
TOKENWATT_HARDWARE environment variable. A measured J/token below the floor is a measurement
error, unless the working set fits in the last-level cache (then DRAM need not be read).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tokenwatt._util.datafiles import read_section
from tokenwatt.errors import ConfigError
from tokenwatt.registry.precisions import PRECISIONS

ENV_HARDWARE = "TOKENWATT_HARDWARE"
SOURCED = ("memory_bandwidth_bytes_per_s", "memory_pj_per_bit", "tdp_w", "precisions")

# When a profile lacks a format, the matmul runs in the next wider one it has.
FALLBACK = {
    "fp4": ("fp4", "fp8", "bf16", "fp16", "fp32"),
    "fp8": ("fp8", "bf16", "fp16", "fp32"),
    "int8": ("int8", "bf16", "fp16", "fp32"),
    "int4": ("int4", "int8", "bf16", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "tf32": ("tf32", "fp32"),
    "fp32": ("fp32",),
}


@dataclass(frozen=True)
class Compute:
    peak_flops_per_s: float
    pj_per_flop: float


@dataclass(frozen=True)
class Hardware:
    name: str
    description: str
    match: tuple[str, ...]
    memory_bandwidth_bytes_per_s: float
    memory_pj_per_bit: float
    tdp_w: float
    cache_bytes: float | None
    precisions: dict[str, Compute]
    sources: dict[str, str] = field(default_factory=dict)

    def compute(self, fmt: str) -> tuple[str, Compute]:
        """The format the profile would run `fmt` in (itself, or the next wider one it has)."""
        for f in FALLBACK.get(fmt, (fmt, "bf16", "fp32")):
            if f in self.precisions:
                return f, self.precisions[f]
        f = next(iter(self.precisions))
        return f, self.precisions[f]


@dataclass(frozen=True)
class Floor:
    """The lower bound of one generated token's cost (per token, batch amortised)."""

    bytes_per_token: float
    flops_per_token: float
    memory_j_per_token: float
    compute_j_per_token: float
    j_per_token: float
    s_per_token: float  # device time per generated token: 1 / the best possible tokens/s
    bound: str  # "memory" or "compute": which limit sets s_per_token
    compute_format: str
    hardware: str


def decode_floor(
    params: float,
    bits: float,
    batch: int,
    context: float,
    kv_bytes_per_position: float,
    hardware: Hardware,
    compute_format: str = "bf16",
    flop_params: float | None = None,
    attn_flops_per_position: float = 0.0,
) -> Floor:
    """The floor of one decode token: `params` weights of `bits` each read once per step.

    flop_params defaults to params (2 FLOPs each per token); attention adds
    attn_flops_per_position x context FLOPs per token.
    """
    if batch < 1 or params < 0 or bits <= 0 or context < 0:
        raise ValueError("decode_floor needs batch >= 1, params >= 0, bits > 0, context >= 0")
    bytes_tok = params * bits / 8 / batch + context * kv_bytes_per_position
    n_flop = params if flop_params is None else flop_params
    flops_tok = 2.0 * n_flop + context * attn_flops_per_position
    fmt, comp = hardware.compute(compute_format)
    mem_j = bytes_tok * 8 * hardware.memory_pj_per_bit * 1e-12
    cmp_j = flops_tok * comp.pj_per_flop * 1e-12
    t_mem = bytes_tok / hardware.memory_bandwidth_bytes_per_s
    t_cmp = flops_tok / comp.peak_flops_per_s
    return Floor(
        bytes_per_token=bytes_tok,
        flops_per_token=flops_tok,
        memory_j_per_token=mem_j,
        compute_j_per_token=cmp_j,
        j_per_token=mem_j + cmp_j,
        s_per_token=max(t_mem, t_cmp),
        bound="memory" if t_mem >= t_cmp else "compute",
        compute_format=fmt,
        hardware=hardware.name,
    )


# ---------------------------------------------------------------- hardware profiles


def hardware_files() -> list[Path]:
    files = [Path(str(resources.files("tokenwatt").joinpath("data/hardware.yaml")))]
    extra = os.environ.get(ENV_HARDWARE, "")
    return files + [Path(p) for p in extra.split(os.pathsep) if p.strip()]


def load_hardware() -> dict[str, Hardware]:
    """All profiles in match order: those named in user files first, then the built-ins."""
    return _load_hardware(tuple(str(p) for p in hardware_files()))


@lru_cache(maxsize=8)
def _load_hardware(paths: tuple[str, ...]) -> dict[str, Hardware]:
    merged: dict[str, dict[str, Any]] = {}
    user_order: list[str] = []
    for i, path in enumerate(paths):
        for name, prof in _read_profiles(path).items():
            merged[name] = _merge(merged.get(name, {}), prof)
            if i > 0 and name not in user_order:
                user_order.append(name)
    order = user_order + [n for n in merged if n not in user_order]
    return {n: _build(n, merged[n], paths) for n in order}


def _read_profiles(path: str) -> dict[str, Any]:
    profiles = read_section(path, "profiles", ENV_HARDWARE, "hardware")
    return {str(k).lower(): v for k, v in profiles.items()}


def _merge(base: dict[str, Any], over: Any) -> dict[str, Any]:
    out = dict(base)
    for k, v in (over or {}).items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) and k != "match" else v
    return out


def _build(name: str, prof: dict[str, Any], paths: tuple[str, ...]) -> Hardware:
    where = f"hardware profile {name!r} ({', '.join(paths)})"
    sources = prof.get("sources") or {}
    for key in SOURCED + ("cache_bytes",):
        if key in prof and not sources.get(key):
            raise ConfigError(f"{where}: {key} has no source; add sources.{key}: <where from>")
    try:
        tdp = _num(prof["tdp_w"])
        precisions = {
            str(fmt): _compute(c, tdp) for fmt, c in (prof.get("precisions") or {}).items()
        }
        hw = Hardware(
            name=name,
            description=" ".join(str(prof.get("description", "")).split()),
            match=tuple(str(m) for m in prof.get("match") or ()),
            memory_bandwidth_bytes_per_s=_num(prof["memory_bandwidth_bytes_per_s"]),
            memory_pj_per_bit=_num(prof["memory_pj_per_bit"]),
            tdp_w=tdp,
            cache_bytes=None if prof.get("cache_bytes") is None else _num(prof["cache_bytes"]),
            precisions=precisions,
            sources={k: " ".join(str(v).split()) for k, v in sources.items()},
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: missing or non-numeric field {e}; fix the profile") from None
    if not precisions:
        raise ConfigError(f"{where}: needs at least one entry under precisions")
    return hw


def _compute(c: dict[str, Any], tdp_w: float) -> Compute:
    peak = _num(c["peak_flops_per_s"])
    given = c.get("pj_per_flop")
    # Not given: the board's energy per FLOP at its datasheet peak (TDP / peak).
    return Compute(peak, _num(given) if given is not None else tdp_w / peak * 1e12)


def _num(v: Any) -> float:
    f = float(v)  # YAML 1.1 reads 3.35e12 (no exponent sign) as a string: accept it
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"{v!r} must be a positive number")
    return f


def match_hardware(device_name: str | None, device: str | None = None) -> Hardware | None:
    """The profile whose pattern occurs in the NVML device name; CPUs get generic-cpu."""
    profiles = load_hardware()
    if device and str(device).lower().startswith("cpu"):
        return profiles.get("generic-cpu")
    name = (device_name or "").lower()
    for hw in profiles.values():
        # A pattern must start a word: "H200" must not match "GH200" (a different module).
        if any(re.search(r"(?<![a-z0-9])" + re.escape(m.lower()), name) for m in hw.match if m):
            return hw
    return None


# ---------------------------------------------------------------- model shapes


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    if "num_hidden_layers" not in config and isinstance(config.get("text_config"), dict):
        return config["text_config"]
    return config


def _shape(config: dict[str, Any]) -> tuple[int, int, int, int]:
    """layers, attention heads, KV heads, head dim."""
    c = _text_config(config)
    layers = int(c["num_hidden_layers"])
    heads = int(c["num_attention_heads"])
    kv_heads = int(c.get("num_key_value_heads") or heads)
    head_dim = int(c.get("head_dim") or c["hidden_size"] // heads)
    return layers, heads, kv_heads, head_dim


def _layer_contexts(config: dict[str, Any], context: float) -> list[float]:
    """Positions each layer attends to: sliding-window layers see at most their window."""
    c = _text_config(config)
    layers = int(c["num_hidden_layers"])
    types = c.get("layer_types") or []
    window = c.get("sliding_window")
    out = []
    for i in range(layers):
        sliding = i < len(types) and "sliding" in str(types[i]) and window
        out.append(min(context, float(window)) if sliding else context)
    return out


def kv_bytes_read(config: dict[str, Any], context: float, bytes_per_element: float) -> float:
    """Bytes of K and V one sequence reads per decode step at this context."""
    _, _, kv_heads, head_dim = _shape(config)
    per_layer_pos = 2 * kv_heads * head_dim * bytes_per_element
    return per_layer_pos * sum(_layer_contexts(config, context))


def attention_flops(config: dict[str, Any], context: float) -> float:
    """FLOPs of QK^T and AV for one token at this context (2 x 2 x heads x head_dim per pos)."""
    _, heads, _, head_dim = _shape(config)
    return 4 * heads * head_dim * sum(_layer_contexts(config, context))


def untied_embedding_params(config: dict[str, Any]) -> int:
    """Input-embedding parameters a decode step does not read in full (one row per token)."""
    c = _text_config(config)
    tied = config.get("tie_word_embeddings", c.get("tie_word_embeddings", True))
    if tied or not c.get("vocab_size") or not c.get("hidden_size"):
        return 0
    return int(c["vocab_size"]) * int(c["hidden_size"])


# ---------------------------------------------------------------- columns

FLOOR_COLUMNS = (
    "floor_hardware",
    "floor_compute_format",
    "floor_bytes_per_token",
    "floor_flops_per_token",
    "floor_j_per_token",
    "floor_s_per_token",
    "floor_bound",
    "floor_ratio",
    "floor_fits_in_cache",
    "below_floor",
    "floor_j_per_token_native_format",
)


def floor_columns(row: dict[str, Any], model_info: dict[str, Any]) -> dict[str, Any]:
    """The floor for one measured row; floor_ratio = measured decode_j_per_token / floor.

    Unknown hardware (no profile matches device_name) gives None in every column: add a
    profile through TOKENWATT_HARDWARE. So does a model whose config lacks the usual shape
    keys (num_hidden_layers, num_attention_heads, hidden_size) or a model_info without
    params_total and weight_bytes: a run is never lost to its floor.
    """
    out: dict[str, Any] = dict.fromkeys(FLOOR_COLUMNS)
    hw = match_hardware(row.get("device_name"), row.get("device"))
    if hw is None:
        return out
    try:
        return _floor_columns(row, model_info, hw, out)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return out


def _floor_columns(
    row: dict[str, Any], model_info: dict[str, Any], hw: Hardware, out: dict[str, Any]
) -> dict[str, Any]:
    config = model_info["config"]
    precision = str(model_info.get("precision") or row.get("precision") or "bf16")
    batch = max(1, int(row.get("batch_size") or 1))
    # Mean context over the decode steps: step k (1..n-1) attends to prompt + k positions.
    context = float(row.get("prompt_tokens") or 0) + float(row.get("new_tokens") or 0) / 2
    params, weight_bytes = _moved_weights(config, model_info)
    kv_bpe = float(model_info.get("kv_bytes_per_element") or 2)
    kv = kv_bytes_read(config, context, kv_bpe)
    common = dict(
        batch=batch,
        context=context,
        kv_bytes_per_position=kv / context if context else 0.0,
        hardware=hw,
        attn_flops_per_position=attention_flops(config, context) / context if context else 0.0,
    )
    bits = 8 * weight_bytes / params if params else 16.0
    entry = PRECISIONS.get(precision)
    compute = entry.compute_format if entry else "bf16"
    fl = decode_floor(params, bits, compute_format=compute, **common)
    max_context = float(row.get("prompt_tokens") or 0) + float(row.get("new_tokens") or 0)
    working_set = weight_bytes + batch * kv_bytes_read(config, max_context, kv_bpe)
    fits = hw.cache_bytes is not None and working_set <= hw.cache_bytes
    measured = positive(row.get("decode_j_per_token"))
    ratio = measured / fl.j_per_token if measured and fl.j_per_token > 0 else None
    out.update(
        floor_hardware=hw.name,
        floor_compute_format=fl.compute_format,
        floor_bytes_per_token=fl.bytes_per_token,
        floor_flops_per_token=fl.flops_per_token,
        floor_j_per_token=fl.j_per_token,
        floor_s_per_token=fl.s_per_token,
        floor_bound=fl.bound,
        floor_ratio=ratio,
        floor_fits_in_cache=fits,
        below_floor=None if ratio is None else bool(ratio < 1 and not fits),
    )
    if entry is not None and entry.emulated:
        native_bits = entry.weight_bits + entry.native_scale_bits
        out["floor_j_per_token_native_format"] = decode_floor(
            params, native_bits, compute_format=entry.native_compute_format, **common
        ).j_per_token
    return out


def _moved_weights(config: dict[str, Any], info: dict[str, Any]) -> tuple[float, float]:
    """Parameters and bytes one decode step must read: active weights, minus untied embeddings.

    MoE: params_active counts the routed experts only; bytes scale by the same share. That is
    a lower bound (a batch may touch more experts than one token's top-k), as a floor must be.
    """
    total = float(info.get("params_total") or 0)
    active = float(info.get("params_active") or total)
    wbytes = float(info.get("weight_bytes") or 0)
    if total <= 0 or wbytes <= 0:
        raise ValueError("model_info needs params_total > 0 and weight_bytes > 0")
    embed = float(untied_embedding_params(config))
    embed_bytes = float(info.get("embedding_bytes") or embed * wbytes / total)
    share = (active - embed) / (total - embed) if total > embed else 1.0
    return max(active - embed, 0.0), max(wbytes - embed_bytes, 0.0) * share


def positive(v: Any) -> float | None:
    """v as a finite float > 0, else None (CSV cells arrive as strings, blanks and NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None
