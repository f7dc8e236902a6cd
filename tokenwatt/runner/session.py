"""Everything a run's trials need, prepared once: the model at its precision, the prompts, the
fidelity against a reference, the meters, and the columns every row of the run shares."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.energy.meters.base import labels
from tokenwatt.registry.precisions import PRECISIONS
from tokenwatt.runner.placement import Placement


@dataclass
class Session:
    """Everything a trial needs, prepared once per run."""

    cfg: RunConfig
    device: str
    model: Any
    prompts: Any
    meters: list[Any]
    generate: Callable[..., Any]
    constants: dict[str, Any]  # columns shared by every row of this run
    model_info: dict[str, Any]
    idle_power_w: float = float("nan")
    meta: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # said once, before the trials
    # The GPU boards the case holds (CUDA indexes the model spans, NVML UUIDs): see placement.py
    placement: Placement = field(default_factory=Placement)
    idle_by_channel: dict[str, float] = field(default_factory=dict)  # idle W per meter channel


def prepare_session(
    cfg: RunConfig, device: str, on_phase: Callable[[str, str], None] | None = None
) -> Session:
    import torch

    from tokenwatt._util.devices import place_on
    from tokenwatt.energy.meters.select import boards_not_running_the_model, open_meters
    from tokenwatt.models.decode import generation_fn
    from tokenwatt.models.fidelity import measure_fidelity, reference_precision
    from tokenwatt.models.load import load_model
    from tokenwatt.models.moe import param_counts
    from tokenwatt.models.precision import apply_precision, base_dtype
    from tokenwatt.models.workload import make_prompts
    from tokenwatt.runner.boards import board_constants
    from tokenwatt.runner.environment import device_name, environment
    from tokenwatt.runner.placement import resolve_placement

    phase = on_phase or (lambda event, text: None)
    placement = resolve_placement(cfg, device)
    place_on(placement.cuda)  # a model across several boards: loads spread it, marks wait for all
    device = placement.device(device)
    torch.manual_seed(cfg.workload.seed)
    build = "building" if cfg.model.startswith("preset:") else "loading"
    phase("load", f"{build} {cfg.model}")
    loaded = load_model(
        cfg.model,
        device,
        base_dtype(cfg.precision, device),
        seed=cfg.workload.seed,
        trust_remote_code=cfg.trust_remote_code,
        allow_pickle=cfg.allow_pickle,
    )
    model = loaded.model
    phase("precision", f"applying {cfg.precision}")
    prec = apply_precision(model, cfg.precision, device, cfg.experts)
    text_config = model.config.get_text_config()
    context = getattr(text_config, "max_position_embeddings", None)
    prompts = make_prompts(cfg.workload, text_config.vocab_size, loaded.tokenizer, device, context)
    if cfg.fidelity.enabled:
        ref = reference_precision(cfg.fidelity.reference, device)
        phase("fidelity", f"fidelity reference: {cfg.model} at {ref}")
    fidelity = measure_fidelity(cfg, model, device) if cfg.fidelity.enabled else {}
    m = cfg.measure
    phase("meters", f"opening meters ({m.meter})")
    meters = open_meters(m.meter, device, gpus=m.gpus or placement.boards or None,
                         cpu_tdp_w=m.cpu_tdp_w)  # fmt: skip
    counts = param_counts(model)
    constants = {
        "name": cfg.name,
        "model": cfg.model,
        "precision": cfg.precision,
        "precision_backend": prec.precision_backend,
        "emulated": prec.emulated,
        "compile": cfg.compile,
        "device": device,
        "device_name": device_name(device),
        "batch_size": cfg.workload.batch_size,
        "prompt_tokens": cfg.workload.prompt_tokens,
        "new_tokens": cfg.workload.new_tokens,
        "seed": cfg.workload.seed,
        "weight_bytes": prec.weight_bytes,
        "quantized_param_fraction": prec.quantized_param_fraction,
        "weight_bits": PRECISIONS[cfg.precision].weight_bits,
        "activation_bits": PRECISIONS[cfg.precision].activation_bits,
        "experts_impl": prec.detail.get("experts_impl", ""),
        **counts,
        **fidelity,
        **labels(c for meter in meters for c in meter.channels),
        **board_constants(meters, len(placement.cuda)),
    }
    model_info = {
        "config": model.config.to_dict(),
        "precision": cfg.precision,
        "emulated": prec.emulated,
        "weight_bytes": prec.weight_bytes,
        "kv_bytes_per_element": _kv_bytes(model),
        **counts,
        **prec.detail,
    }
    meta = {
        "environment": environment(device),
        "meters": [meter.describe() for meter in meters],
        "model_source": loaded.source,
        "model_info": dict(loaded.info),
        "precision_report": {"backend": prec.precision_backend, **prec.detail},
    }
    mismatch = (boards_not_running_the_model(meters, device, placement.boards)
                if m.gpus or cfg.gpus is not None else None)  # fmt: skip
    return Session(cfg, device, model, prompts, meters, generation_fn(cfg.compile), constants,
                   model_info, meta=meta,
                   warnings=[f"other-boards: {mismatch}"] if mismatch else [],
                   placement=placement)  # fmt: skip


def _kv_bytes(model: Any) -> int:
    """Bytes per KV-cache element: the cache is kept in the model's activation dtype."""
    return int(getattr(model.dtype, "itemsize", 2))
