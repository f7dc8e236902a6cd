"""A model's weights by role, with their real stored bytes: what the physical floor reads.

Roles: the untied input embedding (a decode step reads one row of it per token, and it is
never quantised), the output head (read in full every step), the MoE experts (3-D tensors,
or tokenwatt's quantised storage of them), the other nn.Linear weights, and the rest (norms,
biases). Works on a loaded model (bytes as stored after the precision: codes and scales
included) and on a model built on the meta device (`meta_inventory`: shapes only, nothing
allocated), so `tokenwatt floor` can price Llama-3.1-8B without building it.
"""

from __future__ import annotations

from typing import Any


def tensor_bytes(t: Any) -> int:
    """Bytes a tensor stores: torchao tensor subclasses sum their inner tensors."""
    inner = getattr(t, "__tensor_flatten__", None)
    if inner is not None:
        names, _ = t.__tensor_flatten__()
        return sum(tensor_bytes(getattr(t, n)) for n in names if getattr(t, n) is not None)
    return t.numel() * t.element_size()


def weight_inventory(model: Any) -> dict[str, Any]:
    """params_total, weight_bytes and per-role *_params / *_bytes of a model."""
    import torch

    from tokenwatt.models.moe import expert_modules

    emb = model.get_input_embeddings()
    head = model.get_output_embeddings()
    tied = head is not None and emb is not None and head.weight is emb.weight
    seen: set[int] = set()
    out = dict.fromkeys(("embedding", "head", "expert", "linear", "other"), (0, 0))

    def add(role: str, numel: int, nbytes: int) -> None:
        p, b = out[role]
        out[role] = (p + numel, b + nbytes)

    if emb is not None and not tied:
        seen.add(id(emb.weight))
        add("embedding", emb.weight.numel(), tensor_bytes(emb.weight))
    if head is not None:
        seen.add(id(head.weight))
        add("head", head.weight.numel(), tensor_bytes(head.weight))
    for _, mod in expert_modules(model):
        q = getattr(mod, "_tokenwatt_qexperts", None)
        if q is not None:
            for qe in q.values():
                add("expert", qe.numel(), sum(tensor_bytes(b) for b in qe.buffers()))
                seen.update(id(b) for b in qe.buffers())
        for p in mod.parameters(recurse=False):
            if p.ndim == 3 and id(p) not in seen:
                seen.add(id(p))
                add("expert", p.numel(), tensor_bytes(p))
    for mod in model.modules():
        if isinstance(mod, torch.nn.Linear) and id(mod.weight) not in seen:
            seen.add(id(mod.weight))
            add("linear", mod.weight.numel(), tensor_bytes(mod.weight))
    for t in model.parameters():  # norms, biases (buffers such as rotary tables are no weights)
        if id(t) not in seen:
            seen.add(id(t))
            add("other", t.numel(), tensor_bytes(t))
    info: dict[str, Any] = {f"{role}_params": p for role, (p, _) in out.items()}
    info.update({f"{role}_bytes": b for role, (_, b) in out.items()})
    info["embedding_tied"] = tied
    info["params_total"] = sum(p for p, _ in out.values())
    info["weight_bytes"] = sum(b for _, b in out.values())
    # The head is an nn.Linear too: the floor's quantised-linear share includes it.
    info["linear_params"] += info["head_params"]
    return info


def meta_inventory(spec: str, trust_remote_code: bool = False) -> tuple[dict[str, Any], Any]:
    """(inventory, config dict) of a preset or local checkpoint, built on the meta device."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tokenwatt.errors import UserError
    from tokenwatt.models.presets import preset_config
    from tokenwatt.registry.presets import PRESETS

    if spec.startswith("preset:"):
        name = spec.removeprefix("preset:")
        if name not in PRESETS:
            raise UserError(f"--model: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
        config = preset_config(name)
    else:
        try:
            config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise UserError(f"--model: cannot read the config of {spec!r} ({first}); give "
                            "preset:NAME or a checkpoint directory") from None  # fmt: skip
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16,
                                                 trust_remote_code=trust_remote_code)  # fmt: skip
    return weight_inventory(model), model.config.to_dict()


# ---------------------------------------------------------------- stored shapes of the presets

SHAPES_FILE = "data/preset_shapes.json"


def preset_key(name: str) -> str:
    """A digest of a preset's shapes: a stored inventory is used only while it matches."""
    import hashlib
    import json

    from tokenwatt.registry.presets import PRESETS

    p = PRESETS[name]
    text = json.dumps([p.model_type, p.config], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stored_shapes() -> dict[str, Any]:
    """{preset: {key, inventory, config}} written by scripts/preset-shapes.py."""
    import json
    from importlib import resources

    path = resources.files("tokenwatt").joinpath(SHAPES_FILE)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def model_shapes(spec: str, trust_remote_code: bool = False) -> tuple[dict[str, Any], Any]:
    """meta_inventory's answer, from the stored shapes when `spec` is a preset whose shapes
    have not changed since they were stored: no torch or transformers import, so `tokenwatt
    estimate` and `plan` answer in a fraction of a second. Anything else is built on meta."""
    if spec.startswith("preset:"):
        name = spec.removeprefix("preset:")
        entry = stored_shapes().get(name)
        from tokenwatt.registry.presets import PRESETS

        if entry is not None and name in PRESETS and entry.get("key") == preset_key(name):
            return dict(entry["inventory"]), dict(entry["config"])
    return meta_inventory(spec, trust_remote_code)
