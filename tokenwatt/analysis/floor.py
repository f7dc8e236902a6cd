"""The physical floor: the least bytes, energy and time a generated token costs on given hardware.

At batch B and mean context L a decode step reads the weights it uses once (shared by the
batch) and each sequence's KV cache, and does about 2 FLOPs per active parameter per token:

    bytes/token  = weight bytes read per step / B + L x kv_bytes_per_position
    energy/token >= bytes/token x 8 x pJ/bit  [+ FLOPs/token x arithmetic pJ/FLOP, if sourced]
    time/token   >= max(bytes/token / bandwidth, FLOPs/token / peak FLOP/s)

- Weights read per step: the real stored bytes (codes and scales) of every matrix a step reads
  in full. The untied input embedding is not read in full (one row per token) and is left out
  at its own real size (embeddings are never quantised); the output head is read in full.
- MoE: FLOPs count top-k experts per token, but a batch of B tokens touches more experts than
  one token's top-k: the measured experts touched per decode step when there is one, else the
  expectation under uniform routing, E x (1 - (1 - k/E)^B) per layer.
- Compute energy: only an arithmetic-only energy per FLOP (the FMA datapath, no memory or
  static power) belongs in a floor. The built-in profiles have no sourced figure for it, so
  their energy floor counts memory traffic alone and says so (`compute_energy_basis`); compute
  still sets the time floor. A user profile may add `arith_pj_per_flop` with its source.
  (TDP / peak FLOP/s, used before, is the whole board's energy per FLOP, memory and static
  power included: added on top of the memory term it double counts and is no floor.)

Hardware numbers live in data/hardware.yaml (each with its source), extendable through the
TOKENWATT_HARDWARE environment variable. A measured J/token below the floor is flagged
`below-floor`: a prompt to check the profile, the meter and the cache, not proof of an error.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tokenwatt._util.datafiles import read_section
from tokenwatt.errors import ConfigError
from tokenwatt.registry.precisions import PRECISIONS

ENV_HARDWARE = "TOKENWATT_HARDWARE"
SOURCED = ("memory_bandwidth_bytes_per_s", "memory_pj_per_bit", "tdp_w", "precisions")
NOT_COUNTED = ("not counted: no sourced arithmetic-only energy per FLOP for this profile; "
               "compute sets the time floor only")  # fmt: skip

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
    arith_pj_per_flop: float | None = None  # arithmetic only; None: not known (not counted)


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
    # Board-to-board bandwidth (both directions, per board): the energy model's tensor-parallel
    # communication time (analysis/energy_model.py); None: not known.
    interconnect_bytes_per_s: float | None = None

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
    weight_bytes_per_token: float
    kv_bytes_per_token: float
    flops_per_token: float
    memory_j_per_token: float
    compute_j_per_token: float
    compute_energy_basis: str
    j_per_token: float
    s_per_token: float  # device time per generated token: 1 / the best possible tokens/s
    bound: str  # "memory" or "compute": which limit sets s_per_token
    compute_format: str
    hardware: str

    @property
    def max_tokens_per_s(self) -> float:
        return 1.0 / self.s_per_token if self.s_per_token > 0 else math.inf

    @property
    def energy_dominant(self) -> str:
        """Which term is the largest part of the energy floor: weights, kv-cache or compute."""
        pj = self.memory_j_per_token / self.bytes_per_token if self.bytes_per_token else 0.0
        terms = {
            "weights": self.weight_bytes_per_token * pj,
            "kv-cache": self.kv_bytes_per_token * pj,
            "compute": self.compute_j_per_token,
        }
        return max(terms, key=terms.__getitem__)  # fmt: skip


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
    weight_tok = params * bits / 8 / batch
    kv_tok = context * kv_bytes_per_position
    bytes_tok = weight_tok + kv_tok
    n_flop = params if flop_params is None else flop_params
    flops_tok = 2.0 * n_flop + context * attn_flops_per_position
    fmt, comp = hardware.compute(compute_format)
    mem_j = bytes_tok * 8 * hardware.memory_pj_per_bit * 1e-12
    if comp.arith_pj_per_flop is None:
        cmp_j, basis = 0.0, NOT_COUNTED
    else:
        cmp_j = flops_tok * comp.arith_pj_per_flop * 1e-12
        src = hardware.sources.get("arith_pj_per_flop", "profile")
        basis = f"arithmetic only, {comp.arith_pj_per_flop:g} pJ/FLOP ({src})"
    t_mem = bytes_tok / hardware.memory_bandwidth_bytes_per_s
    t_cmp = flops_tok / comp.peak_flops_per_s
    return Floor(
        bytes_per_token=bytes_tok,
        weight_bytes_per_token=weight_tok,
        kv_bytes_per_token=kv_tok,
        flops_per_token=flops_tok,
        memory_j_per_token=mem_j,
        compute_j_per_token=cmp_j,
        compute_energy_basis=basis,
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
    for key in SOURCED + ("cache_bytes", "interconnect_bytes_per_s"):
        if key in prof and not sources.get(key):
            raise ConfigError(f"{where}: {key} has no source; add sources.{key}: <where from>")
    try:
        precisions = {str(fmt): _compute(c) for fmt, c in (prof.get("precisions") or {}).items()}
        hw = Hardware(
            name=name,
            description=" ".join(str(prof.get("description", "")).split()),
            match=tuple(str(m) for m in prof.get("match") or ()),
            memory_bandwidth_bytes_per_s=_num(prof["memory_bandwidth_bytes_per_s"]),
            memory_pj_per_bit=_num(prof["memory_pj_per_bit"]),
            tdp_w=_num(prof["tdp_w"]),
            cache_bytes=None if prof.get("cache_bytes") is None else _num(prof["cache_bytes"]),
            precisions=precisions,
            sources={k: " ".join(str(v).split()) for k, v in sources.items()},
            interconnect_bytes_per_s=None
            if prof.get("interconnect_bytes_per_s") is None
            else _num(prof["interconnect_bytes_per_s"]),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: missing or non-numeric field {e}; fix the profile") from None
    if not precisions:
        raise ConfigError(f"{where}: needs at least one entry under precisions")
    if any(c.arith_pj_per_flop is not None for c in precisions.values()) and not sources.get(
        "arith_pj_per_flop"
    ):
        raise ConfigError(f"{where}: arith_pj_per_flop has no source; add "
                          "sources.arith_pj_per_flop: <where from>")  # fmt: skip
    return hw


def _compute(c: dict[str, Any]) -> Compute:
    arith = c.get("arith_pj_per_flop")
    if "pj_per_flop" in c:
        raise ValueError(
            "pj_per_flop (renamed arith_pj_per_flop: arithmetic-only energy, with a source)"
        )
    return Compute(_num(c["peak_flops_per_s"]), None if arith is None else _num(arith))


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


def hardware_profile(name: str) -> Hardware:
    """A profile by name; a ConfigError listing the names otherwise."""
    profiles = load_hardware()
    hw = profiles.get(name.strip().lower())
    if hw is None:
        raise ConfigError(f"--hardware: unknown profile {name!r}; profiles: {', '.join(profiles)}"
                          f" (add your own through {ENV_HARDWARE})")  # fmt: skip
    return hw


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


def moe_shape(config: dict[str, Any]) -> tuple[int, int] | None:
    """(experts per MoE layer, experts per token) of a mixture-of-experts config, else None."""
    c = _text_config(config)
    n = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts")
    k = c.get("num_experts_per_tok")
    return (int(n), int(k)) if n and k else None


def expected_experts_touched(num_experts: int, top_k: int, tokens: int) -> float:
    """Distinct experts a step of `tokens` tokens reads per layer under uniform routing.

    Each token picks top_k of num_experts distinct experts, so one expert escapes a token with
    probability 1 - k/E and the whole batch with (1 - k/E)^tokens.
    """
    if num_experts <= 0 or tokens < 1:
        return 0.0
    k = min(top_k, num_experts)
    return num_experts * (1.0 - (1.0 - k / num_experts) ** tokens)


# ---------------------------------------------------------------- a model's floor


@dataclass(frozen=True)
class Weights:
    """What a decode step reads and computes: bytes read per step, FLOP parameters per token."""

    bytes_per_step: float
    params_per_step: float  # parameters whose bytes those are
    flop_params: float  # parameters each token multiplies by (MoE: top-k experts)
    experts_touched: float | None = None
    experts_basis: str = ""  # "measured-decode-routing", "uniform-routing-expectation", ""


def moved_weights(config: dict[str, Any], info: dict[str, Any], batch: int) -> Weights:
    """Bytes and parameters one decode step of `batch` tokens must read, from a model_info.

    info: params_total, weight_bytes, and where known embedding_params/embedding_bytes (the
    untied input embedding's real storage), expert_params/expert_bytes (MoE experts' real
    storage) and experts_touched_per_layer (measured on decode steps).
    """
    total = float(info.get("params_total") or 0)
    wbytes = float(info.get("weight_bytes") or 0)
    if total <= 0 or wbytes <= 0:
        raise ValueError("model_info needs params_total > 0 and weight_bytes > 0")
    if info.get("embedding_bytes") is not None:
        embed, embed_b = float(info.get("embedding_params") or 0), float(info["embedding_bytes"])
    else:  # an older model_info: the embedding at the dtype's size (exact for dtype precisions)
        embed = float(untied_embedding_params(config))
        embed_b = embed * wbytes / total
    shape = moe_shape(config)
    exp_p, exp_b = float(info.get("expert_params") or 0), float(info.get("expert_bytes") or 0)
    if shape is None or exp_p <= 0:
        return Weights(max(wbytes - embed_b, 0.0), max(total - embed, 0.0), max(total - embed, 0.0))
    n_exp, k = shape
    measured = info.get("experts_touched_per_layer")
    if measured:
        touched, basis = min(float(measured), n_exp), "measured-decode-routing"
    else:
        touched, basis = expected_experts_touched(n_exp, k, batch), "uniform-routing-expectation"
    dense_p, dense_b = total - embed - exp_p, wbytes - embed_b - exp_b
    return Weights(
        bytes_per_step=max(dense_b, 0.0) + exp_b * touched / n_exp,
        params_per_step=max(dense_p, 0.0) + exp_p * touched / n_exp,
        flop_params=max(dense_p, 0.0) + exp_p * min(k, n_exp) / n_exp,
        experts_touched=touched,
        experts_basis=basis,
    )


def model_floor(
    config: dict[str, Any],
    info: dict[str, Any],
    precision: str,
    batch: int,
    prompt_tokens: float,
    new_tokens: float,
    hardware: Hardware,
    native: bool = False,
) -> tuple[Floor, Weights]:
    """The decode floor of a model at a workload on a profile (native: an emulated format as
    its hardware would run it, at its native bits per weight)."""
    # Mean context over the decode steps: step k (1..n-1) attends to prompt + k positions.
    context = float(prompt_tokens) + float(new_tokens) / 2
    kv_bpe = float(info.get("kv_bytes_per_element") or 2)
    w = moved_weights(config, info, batch)
    entry = PRECISIONS.get(precision)
    compute = entry.compute_format if entry else "bf16"
    bits = 8 * w.bytes_per_step / w.params_per_step if w.params_per_step else 16.0
    if native and entry is not None and entry.emulated:
        bits, compute = entry.weight_bits + entry.native_scale_bits, entry.native_compute_format
    fl = decode_floor(
        w.params_per_step, bits, batch, context,
        kv_bytes_read(config, context, kv_bpe) / context if context else 0.0, hardware,
        compute_format=compute, flop_params=w.flop_params,
        attn_flops_per_position=attention_flops(config, context) / context if context else 0.0,
    )  # fmt: skip
    return fl, w


def fits_in_cache(config: dict[str, Any], info: dict[str, Any], batch: int,
                  max_context: float, hardware: Hardware) -> bool:  # fmt: skip
    """The whole working set (weights + every sequence's KV cache) fits in the last-level cache."""
    kv_bpe = float(info.get("kv_bytes_per_element") or 2)
    working_set = float(info.get("weight_bytes") or 0) + batch * kv_bytes_read(
        config, max_context, kv_bpe
    )
    return hardware.cache_bytes is not None and working_set <= hardware.cache_bytes


# ---------------------------------------------------------------- columns

FLOOR_COLUMNS = (
    "floor_hardware",
    "floor_compute_format",
    "floor_bytes_per_token",
    "floor_flops_per_token",
    "floor_memory_j_per_token",
    "floor_compute_j_per_token",
    "floor_compute_energy_basis",
    "floor_j_per_token",
    "floor_s_per_token",
    "floor_bound",
    "floor_experts_touched",
    "floor_experts_basis",
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


def aggregate(hw: Hardware, boards: int) -> Hardware:
    """A model spread over `boards` identical boards reads its weights through all of their
    memory: the floor uses their aggregate bandwidth (the optimistic bound: a layer-by-layer
    split, as device_map="auto" makes, runs one board at a time). Energy per byte is unchanged."""
    if boards <= 1:
        return hw
    return replace(
        hw,
        name=f"{boards}x {hw.name}",
        memory_bandwidth_bytes_per_s=hw.memory_bandwidth_bytes_per_s * boards,
    )


def _floor_columns(
    row: dict[str, Any], info: dict[str, Any], hw: Hardware, out: dict[str, Any]
) -> dict[str, Any]:
    config = info["config"]
    precision = str(info.get("precision") or row.get("precision") or "bf16")
    batch = max(1, int(row.get("batch_size") or 1))
    prompt, new = float(row.get("prompt_tokens") or 0), float(row.get("new_tokens") or 0)
    hw = aggregate(hw, int(row.get("model_boards") or 1))
    fl, w = model_floor(config, info, precision, batch, prompt, new, hw)
    fits = fits_in_cache(config, info, batch, prompt + new, hw)
    measured = positive(row.get("decode_j_per_token"))
    ratio = measured / fl.j_per_token if measured and fl.j_per_token > 0 else None
    out.update(
        floor_hardware=hw.name,
        floor_compute_format=fl.compute_format,
        floor_bytes_per_token=fl.bytes_per_token,
        floor_flops_per_token=fl.flops_per_token,
        floor_memory_j_per_token=fl.memory_j_per_token,
        floor_compute_j_per_token=fl.compute_j_per_token,
        floor_compute_energy_basis=fl.compute_energy_basis,
        floor_j_per_token=fl.j_per_token,
        floor_s_per_token=fl.s_per_token,
        floor_bound=fl.bound,
        floor_experts_touched=w.experts_touched,
        floor_experts_basis=w.experts_basis or None,
        floor_ratio=ratio,
        floor_fits_in_cache=fits,
        below_floor=None if ratio is None else bool(ratio < 1 and not fits),
    )
    entry = PRECISIONS.get(precision)
    if entry is not None and entry.emulated:
        native, _ = model_floor(config, info, precision, batch, prompt, new, hw, native=True)
        out["floor_j_per_token_native_format"] = native.j_per_token
    return out


def positive(v: Any) -> float | None:
    """v as a finite float > 0, else None (CSV cells arrive as strings, blanks and NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


# ---------------------------------------------------------------- a floor without a run


def storage_bits(precision: str) -> float:
    """Bits a quantised matrix stores per weight in the format: codes plus FP4 block scales.

    Per-row and per-group scales of int8/int4/fp8 (under 0.3 bits) are left out: a floor may
    only err low. A run records the real bytes instead.
    """
    p = PRECISIONS[precision]
    return p.weight_bits + (p.native_scale_bits if p.emulated else 0.0)


def inventory_info(inventory: dict[str, Any], precision: str) -> dict[str, Any]:
    """A model_info for `model_floor` from a parameter inventory (models.inventory, built on
    the meta device): bytes at the precision's storage size, nothing measured."""
    p = PRECISIONS[precision]
    dtype_bytes = {"float32": 4, "bfloat16": 2, "float16": 2}[p.base_dtype]
    quant = None if p.is_dtype else storage_bits(precision) / 8

    def size(params: float, quantised: bool) -> float:
        return params * (quant if quant is not None and quantised else dtype_bytes)

    emb = float(inventory.get("embedding_params") or 0)
    experts = float(inventory.get("expert_params") or 0)
    linear = float(inventory.get("linear_params") or 0)  # nn.Linear weights, the head included
    total = float(inventory["params_total"])
    other = max(total - emb - experts - linear, 0.0)  # norms, biases: left in the base dtype
    wbytes = size(emb, False) + size(linear, True) + size(experts, True) + size(other, False)
    return {
        "params_total": total,
        "weight_bytes": wbytes,
        "embedding_params": emb,
        "embedding_bytes": size(emb, False),
        "expert_params": experts,
        "expert_bytes": size(experts, True),
        "kv_bytes_per_element": dtype_bytes,
    }


TABLE_COLUMNS = (
    "model", "precision", "batch_size", "prompt_tokens", "new_tokens", "hardware",
    "compute_format", "floor_j_per_token", "memory_j_per_token", "compute_j_per_token",
    "compute_energy_basis", "energy_dominant", "bytes_per_token", "weight_bytes_per_token",
    "kv_bytes_per_token", "flops_per_token", "floor_s_per_token", "max_tokens_per_s",
    "max_tokens_per_s_per_sequence", "time_bound", "weight_bytes_per_step",
    "experts_touched_per_layer", "experts_basis", "fits_in_cache", "memory_pj_per_bit",
    "memory_bandwidth_bytes_per_s", "native_format_floor_j_per_token",
)  # fmt: skip


def floor_table(
    model: str,
    config: dict[str, Any],
    info: dict[str, Any],
    precision: str,
    batch: int,
    prompt_tokens: int,
    new_tokens: int,
    hardware: list[Hardware],
) -> list[dict[str, Any]]:
    """One row per hardware profile: the floor and its terms (`tokenwatt floor`)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"--precision: unknown {precision!r}; choose one of "
                          f"{', '.join(PRECISIONS)}")  # fmt: skip
    for name, v, low in (("--batch-size", batch, 1), ("--prompt-tokens", prompt_tokens, 0),
                         ("--new-tokens", new_tokens, 2)):  # fmt: skip
        if v < low:
            raise ConfigError(f"{name} must be at least {low} (got {v})")
    rows = []
    for hw in hardware:
        fl, w = model_floor(config, info, precision, batch, prompt_tokens, new_tokens, hw)
        native = None
        if PRECISIONS[precision].emulated:
            native = model_floor(config, info, precision, batch, prompt_tokens, new_tokens, hw,
                                 native=True)[0].j_per_token  # fmt: skip
        rows.append({
            "model": model, "precision": precision, "batch_size": batch,
            "prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "hardware": hw.name,
            "compute_format": fl.compute_format, "floor_j_per_token": fl.j_per_token,
            "memory_j_per_token": fl.memory_j_per_token,
            "compute_j_per_token": fl.compute_j_per_token,
            "compute_energy_basis": fl.compute_energy_basis,
            "energy_dominant": fl.energy_dominant, "bytes_per_token": fl.bytes_per_token,
            "weight_bytes_per_token": fl.weight_bytes_per_token,
            "kv_bytes_per_token": fl.kv_bytes_per_token, "flops_per_token": fl.flops_per_token,
            "floor_s_per_token": fl.s_per_token, "max_tokens_per_s": fl.max_tokens_per_s,
            "max_tokens_per_s_per_sequence": fl.max_tokens_per_s / batch,
            "time_bound": fl.bound, "weight_bytes_per_step": w.bytes_per_step,
            "experts_touched_per_layer": w.experts_touched, "experts_basis": w.experts_basis,
            "fits_in_cache": fits_in_cache(config, info, batch, prompt_tokens + new_tokens, hw),
            "memory_pj_per_bit": hw.memory_pj_per_bit,
            "memory_bandwidth_bytes_per_s": hw.memory_bandwidth_bytes_per_s,
            "native_format_floor_j_per_token": native,
        })  # fmt: skip
    return rows
