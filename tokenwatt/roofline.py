"""The physical floor: bytes and FLOPs a generated token must cost on given hardware."""

from __future__ import annotations

from typing import Any


def floor_columns(row: dict[str, Any], model_info: dict[str, Any]) -> dict[str, Any]:
    """Columns floor_j_per_token, floor_ratio, ... for one measured row. TODO(issue 6)."""
    return {}
