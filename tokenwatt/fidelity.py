"""Output fidelity of a precision against a reference precision of the same weights."""

from __future__ import annotations

from typing import Any


def measure_fidelity(cfg: Any, model: Any, device: str) -> dict[str, Any]:
    """Columns fidelity_ref, top1_agreement, kl_divergence (computed outside measured windows).

    TODO(issue 4): teacher-forced comparison against cfg.fidelity.reference.
    """
    return {"fidelity_ref": None, "top1_agreement": None, "kl_divergence": None}
