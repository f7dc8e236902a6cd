"""A model across several GPU boards: transformers' `device_map="auto"`, limited to the boards
the case holds.

`placement_kwargs` builds what `from_pretrained` takes: `max_memory` names only the case's
boards (CUDA indexes), so nothing lands on another board and nothing is offloaded to the CPU
or the disk (either would measure something else than a model on its boards). Presets are
built from a config (`from_config` has no device_map), so `dispatch` asks transformers for
the same map and lets accelerate move the modules. The work is the libraries'; this module
only chooses their arguments and checks the result, because the placement itself needs
several real boards to run.
"""

from __future__ import annotations

from typing import Any

from tokenwatt.errors import UserError

# Of each board's free memory, the share the weights may take: the rest holds the KV cache
# and activations (accelerate's own default for one board is also 90 %).
WEIGHT_SHARE = 0.9


def max_memory(indexes: list[int], free_bytes: dict[int, int]) -> dict[int, int]:
    """{CUDA index: bytes the weights may take} for the case's boards only."""
    missing = [i for i in indexes if i not in free_bytes]
    if missing:
        raise ValueError(f"no free-memory figure for boards {missing}")
    return {i: int(free_bytes[i] * WEIGHT_SHARE) for i in indexes}


def placement_kwargs(indexes: list[int], free_bytes: dict[int, int]) -> dict[str, Any]:
    """from_pretrained's placement arguments for a model spread over `indexes`."""
    return {"device_map": "auto", "max_memory": max_memory(indexes, free_bytes)}


def free_on(indexes: list[int]) -> dict[int, int]:
    """Free bytes per CUDA board, as CUDA reports them now."""
    import torch

    return {i: int(torch.cuda.mem_get_info(i)[0]) for i in indexes}


def dispatch(model: Any, indexes: list[int], where: str) -> Any:
    """Spread a model built on the CPU over `indexes` as device_map="auto" does (balanced:
    accelerate's memory split, then its map, then its dispatch)."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    no_split = getattr(model, "_no_split_modules", None) or []
    limit = get_balanced_memory(model, max_memory=max_memory(indexes, free_on(indexes)),
                                no_split_module_classes=no_split)  # fmt: skip
    device_map = infer_auto_device_map(model, max_memory=limit, no_split_module_classes=no_split)
    check_map(device_map, indexes, where)
    model = dispatch_model(model, device_map=device_map)
    model.hf_device_map = device_map
    return model


def check_map(device_map: dict[str, Any], indexes: list[int], where: str) -> None:
    """Every module on one of the case's boards: anything on the CPU or disk means the model
    does not fit them, and a run that offloads would measure the offloading."""
    off = sorted({str(d) for d in device_map.values() if d not in indexes})
    if off:
        raise UserError(
            f"model: {where} does not fit on boards {indexes} (device_map puts part of it on "
            f"{', '.join(off)}); use more boards (gpus: N), a smaller precision or model"
        )


def boards_used(model: Any) -> list[int]:
    """The CUDA indexes holding some of the model, in placement order."""
    device_map = getattr(model, "hf_device_map", None) or {}
    return list(dict.fromkeys(d for d in device_map.values() if isinstance(d, int)))
