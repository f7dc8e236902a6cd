"""Prompts for a run: seeded random token ids, or a text file through the model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenwatt.config import Workload
from tokenwatt.errors import UserError


def make_prompts(
    workload: Workload,
    vocab_size: int,
    tokenizer: Any | None,
    device: str,
    context: int | None = None,
) -> Any:
    """A (batch_size, prompt_tokens) tensor of token ids on `device`; `context` is the
    model's max_position_embeddings, which prompt and new tokens together must fit in."""
    import torch

    b, n = workload.batch_size, workload.prompt_tokens
    if context and n + workload.new_tokens > context:
        raise UserError(
            f"workload.prompt_tokens: {n} prompt + {workload.new_tokens} new tokens exceed the "
            f"model's context of {context} tokens (max_position_embeddings); lower "
            "--prompt-tokens or --new-tokens"
        )
    if workload.prompts_file:
        ids = _text_stream(Path(workload.prompts_file), tokenizer)
        if not ids:
            raise UserError(f"workload.prompts_file: {workload.prompts_file!r} makes no tokens; "
                            "put one prompt per line")  # fmt: skip
        if max(ids) >= vocab_size:
            raise UserError(
                f"workload.prompts_file: the tokenizer makes token id {max(ids)}, beyond the "
                f"model's vocabulary of {vocab_size}; the tokenizer belongs to another model: "
                "use the checkpoint's own tokenizer"
            )
        # Cut the file's token stream into batch x n windows, cycling when it is short, so
        # every sequence has exactly n tokens and no padding distorts the measurement.
        reps = -(-(b * n) // len(ids))
        flat = (ids * reps)[: b * n]
        return torch.tensor(flat, dtype=torch.long, device=device).view(b, n)
    g = torch.Generator().manual_seed(workload.seed)
    return torch.randint(0, vocab_size, (b, n), generator=g).to(device)


def _text_stream(path: Path, tokenizer: Any | None) -> list[int]:
    if tokenizer is None:
        raise UserError(
            "workload.prompts_file: this model has no tokenizer (presets have none); "
            "drop prompts_file to use random token ids, or use a checkpoint with a tokenizer"
        )
    if not path.is_file():
        raise UserError(f"workload.prompts_file: {str(path)!r} does not exist; give a text file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        text = "\x00"
    except OSError as e:
        raise UserError(
            f"workload.prompts_file: cannot read {str(path)!r} ({e.strerror}); give a text file"
        ) from None
    if "\x00" in text:
        raise UserError(
            f"workload.prompts_file: {str(path)!r} is binary, not UTF-8 text; give a text file "
            "with one prompt per line"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"workload.prompts_file: {str(path)!r} is empty; put one prompt per line")
    ids: list[int] = []
    for ln in lines:
        ids.extend(tokenizer(ln, add_special_tokens=False)["input_ids"])
    return ids
