"""Mixture-of-experts: parameter counts and routing statistics of a measured run."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


def param_counts(model: Any) -> dict[str, int]:
    """params_total and params_active (per token). Dense models: active == total."""
    total = sum(p.numel() for p in model.parameters())
    return {"params_total": total, "params_active": total}


@contextlib.contextmanager
def track_routing(model: Any) -> Iterator[dict[str, Any]]:
    """Record tokens per expert per layer while the block runs; fills the yielded dict."""
    stats: dict[str, Any] = {}
    yield stats
