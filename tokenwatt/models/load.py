"""Load a model by spec: `preset:NAME`, a local checkpoint directory, or a hub id."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tokenwatt._util.devices import placed_boards
from tokenwatt._util.extras import require
from tokenwatt.errors import UserError
from tokenwatt.models.memory import check_model_config


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any | None
    source: str  # "preset", "local", "hub"
    spec: str
    info: dict[str, Any] = field(default_factory=dict)


def load_model(
    spec: str,
    device: str,
    dtype: Any,
    seed: int = 0,
    trust_remote_code: bool = False,
    allow_pickle: bool = False,
) -> LoadedModel:
    """Build or load a causal LM on `device` in `dtype`, in eval mode; across the boards
    `place_on` recorded when a case holds several (`gpus: N`)."""
    if _boards(device):
        require("multigpu", f"a model across {len(_boards(device))} boards")
    if spec.startswith("preset:"):
        loaded = _from_preset(spec.removeprefix("preset:"), device, dtype, seed)
    elif _looks_local(spec):
        loaded = _from_local(Path(spec), device, dtype, trust_remote_code, allow_pickle)
    else:
        loaded = _from_hub(spec, device, dtype, trust_remote_code)
    loaded.model.eval()
    loaded.info.setdefault("params_total", sum(p.numel() for p in loaded.model.parameters()))
    return loaded


def _boards(device: str) -> list[int]:
    """The CUDA boards to spread the model over; [] for one device."""
    return placed_boards() if device.startswith("cuda") else []


def _placement(device: str) -> dict[str, Any]:
    """from_pretrained's device arguments: device_map="auto" over the case's boards."""
    from tokenwatt.models.placement import free_on, placement_kwargs

    boards = _boards(device)
    return placement_kwargs(boards, free_on(boards)) if boards else {}


def _placed(model: Any, device: str, where: str) -> Any:
    """One device: move the model there. Several boards: check that it stayed on them."""
    boards = _boards(device)
    if not boards:
        return model.to(device)
    from tokenwatt.models.placement import check_map

    check_map(getattr(model, "hf_device_map", None) or {"": "?"}, boards, where)
    return model


def _looks_local(spec: str) -> bool:
    return os.path.exists(spec) or spec.startswith((".", "/", "~")) or spec.count("/") > 1


def _from_preset(name: str, device: str, dtype: Any, seed: int) -> LoadedModel:
    import torch
    from transformers import AutoModelForCausalLM

    from tokenwatt.models.presets import preset_config
    from tokenwatt.registry.presets import PRESETS

    if name not in PRESETS:
        raise UserError(f"model: unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    config = preset_config(name)
    check_model_config(config, dtype, device, f"preset:{name}", boards=_boards(device))
    torch.manual_seed(seed)
    boards = _boards(device)
    with torch.device("cpu" if boards else device):  # several boards: built here, then spread
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    if boards:
        from tokenwatt.models.placement import dispatch

        model = dispatch(model, boards, f"preset:{name}")
    return LoadedModel(model, None, "preset", f"preset:{name}", {"like": PRESETS[name].like})


def _from_local(
    path: Path, device: str, dtype: Any, trust_remote_code: bool, allow_pickle: bool
) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    path = path.expanduser()
    if not path.exists():
        raise UserError(f"model: path {str(path)!r} does not exist; give a checkpoint directory")
    if not path.is_dir():
        raise UserError(f"model: {str(path)!r} is a file; give the checkpoint's directory")
    if not (path / "config.json").is_file():
        raise UserError(f"model: {str(path)!r} has no config.json; it is not a model checkpoint")
    has_safetensors = any(path.glob("*.safetensors"))
    has_pickle = any(path.glob("*.bin")) or any(path.glob("*.pt"))
    if not has_safetensors and has_pickle and not allow_pickle:
        raise UserError(
            f"model: {str(path)!r} has only pickle weights (*.bin), which run code when loaded; "
            "convert to safetensors or pass --allow-pickle if you trust the file"
        )
    if not has_safetensors and not has_pickle:
        raise UserError(f"model: {str(path)!r} has no weights (*.safetensors); save them there")
    try:
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # malformed JSON, a validator's ValueError wrapped by huggingface_hub
        why = _first_line(e.__cause__ or e)[:200].rstrip(".")
        raise UserError(
            f"model: cannot read {str(path / 'config.json')!r}: {why}; fix or re-save it"
        ) from None
    _require_causal_lm(config, str(path), trust_remote_code)
    check_model_config(config, dtype, device, repr(str(path)), boards=_boards(device))
    with _damaged(path):
        model = AutoModelForCausalLM.from_pretrained(
            path,
            config=config,
            dtype=dtype,
            use_safetensors=has_safetensors,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
            **_placement(device),
        )
    model = _placed(model, device, repr(str(path)))
    return LoadedModel(model, _tokenizer(path, trust_remote_code), "local", str(path))


@contextmanager
def _damaged(path: Path) -> Iterator[None]:
    """A truncated or empty safetensors file, weights of another shape than config.json says:
    one line naming the checkpoint (out of memory stays itself: the run reports it)."""
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a progress bar before the error would not be one line
    try:
        yield
    except Exception as e:
        if isinstance(e, MemoryError) or "out of memory" in str(e).lower():
            raise
        why = f"{type(e).__name__}: {_first_line(e)[:160]}"
        if "mismatched_sizes" in why:  # transformers points at a report it logged, unseen here
            why = "its weights have other shapes than its config.json says"
        raise UserError(
            f"model: cannot load the weights of {str(path)!r} ({why.rstrip('.')}); the "
            "checkpoint is damaged or does not match its config.json: re-save or re-download it"
        ) from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()


def _require_causal_lm(config: Any, where: str, trust_remote_code: bool) -> None:
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    remote = trust_remote_code and "AutoModelForCausalLM" in (
        getattr(config, "auto_map", None) or {}
    )
    archs = getattr(config, "architectures", None) or []
    if (type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING or _not_decoder(config)) and not remote:
        saved_as = f" saved as {', '.join(archs)}" if archs else ""
        raise UserError(
            f"model: {where!r} is a {config.model_type!r} checkpoint{saved_as}, not a causal "
            "language model; give a decoder checkpoint (Llama, Qwen, Mistral, ...)"
        )


def _not_decoder(config: Any) -> bool:
    """BERT and BART have a causal LM class too: ask what the checkpoint was saved as."""
    if getattr(config, "is_encoder_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    decoder_names = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
    saved_as_decoder = any(a.endswith(decoder_names) for a in archs)
    return bool(archs) and not saved_as_decoder and not getattr(config, "is_decoder", False)


def _from_hub(spec: str, device: str, dtype: Any, trust_remote_code: bool) -> LoadedModel:
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(spec, trust_remote_code=trust_remote_code)
        check_model_config(config, dtype, device, repr(spec), boards=_boards(device))
        model = AutoModelForCausalLM.from_pretrained(
            spec, config=config, dtype=dtype, trust_remote_code=trust_remote_code,
            **_placement(device),
        )  # fmt: skip
        model = _placed(model, device, repr(spec))
    except OSError as e:
        raise UserError(
            f"model: {spec!r} is neither a preset, a local directory nor a reachable hub model "
            f"({_first_line(e)}); check the name or use preset:NAME"
        ) from None
    return LoadedModel(model, _tokenizer(spec, trust_remote_code), "hub", spec)


def _tokenizer(where: Any, trust_remote_code: bool) -> Any | None:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, trust_remote_code=trust_remote_code)
    except Exception:  # a checkpoint without tokenizer files still runs on token ids
        return None


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
