"""tokenwatt's own decode loop over a transformers model, in process (the default engine).

Prefill and decode are marked live, after a device synchronisation (models/decode.py), so a
meter read at a mark belongs to the phase that just ended.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.engines.base import Batch, Engine, Mark, Prepared, no_mark
from tokenwatt.placement import Placement
from tokenwatt.registry.precisions import PRECISIONS


class TransformersEngine(Engine):
    name = "transformers"
    live_marks = True
    windows = "phases"

    @classmethod
    def check(cls, cfg: RunConfig, device: str) -> None:
        from tokenwatt._util.extras import require
        from tokenwatt.models.precision import check_supported
        from tokenwatt.registry.precisions import get

        check_supported(cfg.precision, device)
        extra = get(cfg.precision).extra
        if extra:
            require(extra, f"precision {cfg.precision}")

    @classmethod
    def slow_reason(cls, cfg: RunConfig, device: str) -> str | None:
        from tokenwatt.engines.slow import slow_reason

        return slow_reason(cfg, device)

    def __init__(self, cfg: RunConfig, placement: Placement,
                 log_dir: Path | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.device = placement.device
        self.model: Any = None
        self.prompts: Any = None
        self._generate: Callable[..., Any] | None = None

    def prepare(self, on_phase: Callable[[str, str], None]) -> Prepared:
        import torch

        from tokenwatt.models.decode import generation_fn
        from tokenwatt.models.fidelity import measure_fidelity, reference_precision
        from tokenwatt.models.load import load_model
        from tokenwatt.models.moe import param_counts
        from tokenwatt.models.precision import apply_precision, base_dtype
        from tokenwatt.models.workload import make_prompts

        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.workload.seed)
        build = "building" if cfg.model.startswith("preset:") else "loading"
        on_phase("load", f"{build} {cfg.model}")
        loaded = load_model(cfg.model, device, base_dtype(cfg.precision, device),
                            seed=cfg.workload.seed, trust_remote_code=cfg.trust_remote_code,
                            allow_pickle=cfg.allow_pickle)  # fmt: skip
        model = loaded.model
        on_phase("precision", f"applying {cfg.precision}")
        prec = apply_precision(model, cfg.precision, device, cfg.experts)
        text_config = model.config.get_text_config()
        context = getattr(text_config, "max_position_embeddings", None)
        self.prompts = make_prompts(cfg.workload, text_config.vocab_size, loaded.tokenizer,
                                    device, context)  # fmt: skip
        if cfg.fidelity.enabled:
            ref = reference_precision(cfg.fidelity.reference, device)
            on_phase("fidelity", f"fidelity reference: {cfg.model} at {ref}")
        fidelity = measure_fidelity(cfg, model, device) if cfg.fidelity.enabled else {}
        self.model, self._generate = model, generation_fn(cfg.compile)
        counts = param_counts(model)
        constants = {
            "precision_backend": prec.precision_backend,
            "emulated": prec.emulated,
            "weight_bytes": prec.weight_bytes,
            "quantized_param_fraction": prec.quantized_param_fraction,
            "weight_bits": PRECISIONS[cfg.precision].weight_bits,
            "activation_bits": PRECISIONS[cfg.precision].activation_bits,
            "experts_impl": prec.detail.get("experts_impl", ""),
            **counts,
            **fidelity,
        }
        model_info = {
            "config": model.config.to_dict(),
            "precision": cfg.precision,
            "emulated": prec.emulated,
            "weight_bytes": prec.weight_bytes,
            "kv_bytes_per_element": int(getattr(model.dtype, "itemsize", 2)),
            **counts,
            **prec.detail,
        }
        meta = {
            "model_source": loaded.source,
            "model_info": dict(loaded.info),
            "precision_report": {"backend": prec.precision_backend, **prec.detail},
        }
        return Prepared(constants, model_info, meta, model=model, device=device)

    def generate(self, mark: Mark = no_mark) -> Batch:
        assert self._generate is not None, "prepare() first"
        gen = self._generate(self.model, self.prompts, self.cfg.workload.new_tokens, mark)
        return Batch(gen.tokens_generated, gen.decode_tokens, gen.batch_size, gen.prompt_tokens)

    def describe(self) -> dict[str, Any]:
        import transformers

        return {
            "engine": self.name,
            "engine_version": transformers.__version__,
            "engine_settings": {"compile": self.cfg.compile, "experts": self.cfg.experts},
        }

    def close(self) -> None:
        self.model = self.prompts = None
