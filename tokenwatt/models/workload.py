"""Prompts for a run: seeded random token ids, or a text file through the model's tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenwatt.config import Workload
from tokenwatt.errors import UserError


def make_prompts(workload: Workload, vocab_size: int, tokenizer: Any | None, device: str) -> Any:
    """A (batch_size, prompt_tokens) tensor of token ids on `device`."""
    import torch

    b, n = workload.batch_size, workload.prompt_tokens
    if workload.prompts_file:
        ids = _text_stream(Path(workload.prompts_file), tokenizer)
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
    lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not lines:
        raise UserError(f"workload.prompts_file: {str(path)!r} is empty; put one prompt per line")
    ids: list[int] = []
    for ln in lines:
        ids.extend(tokenizer(ln, add_special_tokens=False)["input_ids"])
    return ids
