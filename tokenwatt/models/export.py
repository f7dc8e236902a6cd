"""A preset saved as a checkpoint folder, and what a checkpoint holds, read from its files.

Engines that load a model themselves (vLLM) cannot take tokenwatt's in-memory preset: they get
the preset built exactly as the transformers engine builds it (same seed, same dtype, same
random weights), saved once as safetensors to a cache folder. `checkpoint_facts` reads what
the rows and the physical floor need from a checkpoint's config.json and safetensors headers,
so the engine's process never holds the weights.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import uuid
from pathlib import Path
from typing import Any

from tokenwatt.errors import UserError

CACHE_ENV = "TOKENWATT_CACHE"
# safetensors dtype names -> bytes per element
_ST_BYTES = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
             "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1,
             "BOOL": 1}  # fmt: skip
_FLOAT = {"F64", "F32", "F16", "BF16"}
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
MAX_HEADER = 100 * 2**20  # safetensors caps its JSON header at 100 MB


def cache_root() -> Path:
    """$TOKENWATT_CACHE/presets, else ~/.cache/tokenwatt/presets."""
    env = os.environ.get(CACHE_ENV)
    base = Path(env).expanduser() if env else Path.home() / ".cache" / "tokenwatt"
    return base / "presets"


def export_preset(preset: str, seed: int, dtype: str, cache_dir: Path | None = None) -> Path:
    """The folder of `preset` (a name, with or without "preset:") built with `seed` in `dtype`
    (float32, bfloat16, float16), saved with save_pretrained; built once, then reused."""
    import torch
    import transformers

    from tokenwatt.models.load import load_model
    from tokenwatt.registry.presets import PRESETS

    name = preset.removeprefix("preset:")
    if name not in PRESETS:
        raise UserError(f"model: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    if dtype not in _DTYPE_BYTES:
        raise ValueError(f"export_preset: dtype {dtype!r} is not one of {', '.join(_DTYPE_BYTES)}")
    # The preset's shapes go into the key too: an edited preset is a new folder, not a stale one.
    shapes = hashlib.sha256(json.dumps(PRESETS[name].config, sort_keys=True).encode())
    key = f"{name}-seed{seed}-{dtype}-tf{transformers.__version__}-{shapes.hexdigest()[:8]}"
    root = Path(cache_dir) if cache_dir is not None else cache_root()
    final = root / key
    if (final / "config.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{key}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        loaded = load_model(f"preset:{name}", "cpu", getattr(torch, dtype), seed=seed)
        loaded.model.save_pretrained(tmp, safe_serialization=True)
        try:
            os.rename(tmp, final)  # atomic: a reader sees no folder or a whole one
        except OSError:
            if not (final / "config.json").is_file():  # not another process's finished copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def checkpoint_facts(path: Path | str, dtype: str | None = None) -> dict[str, Any]:
    """What a checkpoint folder holds, from config.json and the safetensors headers.

    config: the HF config as transformers reads it (defaults filled in); params_total; and
    weight_bytes as stored, or as held in `dtype` (float tensors cast to it, which is what an
    engine loading the checkpoint in that dtype holds); kv_bytes_per_element (`dtype`'s size,
    else the checkpoint's). Per role, as the floor reads them: embedding_params/_bytes (the
    untied input embedding), head_params/_bytes, expert_params/_bytes (MoE experts) and
    linear_params (every other matrix, the head included). MoE: params_active counts each
    layer's experts at top_k / num_experts, as models/moe.param_counts does.
    """
    path = Path(path)
    config = _config_dict(path)
    tensors = _safetensors_tensors(path)
    if not tensors:
        raise UserError(f"model: {str(path)!r} has no *.safetensors weights; vLLM needs them")
    cast = _DTYPE_BYTES.get(dtype) if dtype else None
    roles: dict[str, list[int]] = {r: [0, 0] for r in ("embedding", "head", "expert", "linear",
                                                      "other")}  # fmt: skip
    for tname, (st_dtype, numel) in tensors.items():
        size = cast if cast and st_dtype in _FLOAT else _ST_BYTES.get(st_dtype, 2)
        r = roles[_role(tname, numel, config)]
        r[0] += numel
        r[1] += numel * size
    total = sum(p for p, _ in roles.values())
    facts: dict[str, Any] = {f"{r}_params": p for r, (p, _) in roles.items()}
    facts.update({f"{r}_bytes": b for r, (_, b) in roles.items()})
    facts["linear_params"] += facts["head_params"]
    facts.update(config=config, params_total=total, weight_bytes=sum(b for _, b in
                                                                     roles.values()))  # fmt: skip
    facts["params_active"] = total - _inactive_experts(facts["expert_params"], config)
    facts["kv_bytes_per_element"] = cast or _DTYPE_BYTES.get(_saved_dtype(config), 2)
    return facts


def _config_dict(path: Path) -> dict[str, Any]:
    """config.json with transformers' defaults filled in (save_pretrained drops them)."""
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(path).to_dict()
    except Exception:  # a model type this transformers does not know: the file as it is
        try:
            return json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise UserError(f"model: cannot read {str(path / 'config.json')!r} ({e}); "
                            "give a checkpoint directory") from None  # fmt: skip


def _safetensors_tensors(path: Path) -> dict[str, tuple[str, int]]:
    """name -> (safetensors dtype, element count), over every *.safetensors file."""
    out: dict[str, tuple[str, int]] = {}
    for f in sorted(path.glob("*.safetensors")):
        for name, meta in _header(f).items():
            if name == "__metadata__":
                continue
            n = 1
            for s in meta["shape"]:
                n *= int(s)
            out[name] = (meta["dtype"], n)
    return out


def _header(f: Path) -> dict[str, Any]:
    """A safetensors file's JSON header: 8 bytes of little-endian length, then the JSON."""
    try:
        with f.open("rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n > MAX_HEADER:
                raise ValueError(f"header of {n} bytes")
            return json.loads(fh.read(n))
    except (OSError, ValueError, struct.error) as e:
        raise UserError(f"model: cannot read the safetensors header of {str(f)!r} ({e}); the "
                        "file is damaged: re-save or re-download it") from None  # fmt: skip


def _role(name: str, numel: int, config: dict[str, Any]) -> str:
    text = config.get("text_config") or config
    if name.endswith("lm_head.weight"):
        return "head"
    if name.endswith(("embed_tokens.weight", "wte.weight", "word_embeddings.weight")):
        return "embedding"
    if ".experts." in name and "shared_expert" not in name:
        return "expert"
    hidden = int(text.get("hidden_size") or 0)
    if name.endswith(".gate.weight") and numel == hidden * (_experts(text) or -1):
        return "other"  # the MoE router: a Parameter in transformers 5, not an nn.Linear
    return "linear" if hidden and numel > hidden and not name.endswith("bias") else "other"


def _inactive_experts(expert_params: int, config: dict[str, Any]) -> int:
    """Expert parameters a token does not use: (1 - top_k / num_experts) of them."""
    text = config.get("text_config") or config
    k, n = text.get("num_experts_per_tok"), _experts(text)
    if not (expert_params and k and n):
        return 0
    return expert_params - expert_params * min(int(k), int(n)) // int(n)


def _experts(text: dict[str, Any]) -> int:
    n = text.get("num_local_experts") or text.get("num_experts") or text.get("n_routed_experts")
    return int(n or 0)


def _saved_dtype(config: dict[str, Any]) -> str:
    d = config.get("dtype") or config.get("torch_dtype") or ""
    return str(d).removeprefix("torch.")


def with_word_tokenizer(ckpt: Path | str, dest: Path | str) -> Path:
    """A copy of an exported preset with a word-level tokenizer over its whole vocabulary
    (see word_tokenizer), so an OpenAI-compatible server can stream text from it: presets have
    no tokenizer, and a server detokenises what it streams. Random weights make random text
    either way; the tokenizer only lets the server run."""
    dest = Path(dest)
    shutil.copytree(ckpt, dest)
    config = _config_dict(dest)
    word_tokenizer(int(config["vocab_size"]), _token_id(config, "bos_token_id", 1),
                   _token_id(config, "eos_token_id", 2)).save_pretrained(dest)  # fmt: skip
    return dest


def word_tokenizer(vocab_size: int, bos_id: int = 1, eos_id: int = 2) -> Any:
    """A transformers tokenizer in which every id round-trips through text, alone and in any
    sequence: encode(decode(ids)) == ids, with or without add_special_tokens and
    skip_special_tokens.

    Token i is the word "t{i}", except the ids the model takes as BOS and EOS ("<s>", "</s>")
    and the lowest free one ("<unk>", what an unknown word encodes to). The text is those words
    joined by single spaces; encoding splits on whitespace and looks each word up (WordLevel).
    None is declared special: a server skips special tokens in the text it streams (vLLM does
    by default), so a client counting tokens from that text would miss them; and declared
    special tokens are matched inside words ("t0".."t2" were: "t2128" encoded as [t2, t0]).
    The model's own config and generation_config still say which ids are BOS and EOS."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    named = _special_ids(vocab_size, bos_id, eos_id)
    vocab = {named.get(i, f"t{i}"): i for i in range(vocab_size)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    # No decoder: tokenizers then joins the tokens with single spaces, the inverse of the split.
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False)


def _special_ids(vocab_size: int, bos_id: int, eos_id: int) -> dict[int, str]:
    """id -> word of the BOS, EOS and unknown ids: EOS wins a shared BOS/EOS id (GPT-2 style),
    and <unk> takes the lowest id left."""
    if not (0 <= bos_id < vocab_size and 0 <= eos_id < vocab_size) or vocab_size < 3:
        raise ValueError(f"word_tokenizer: bos {bos_id} / eos {eos_id} outside a vocabulary "
                         f"of {vocab_size}")  # fmt: skip
    specials = {bos_id: "<s>", eos_id: "</s>"}
    specials[min(set(range(3)) - set(specials))] = "<unk>"
    return specials


def _token_id(config: dict[str, Any], key: str, default: int) -> int:
    """config's bos/eos id (a list holds several eos ids: the first), else `default`."""
    value = config.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return default if value is None else int(value)
