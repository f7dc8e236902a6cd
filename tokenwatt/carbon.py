"""Carbon intensity (offline, from CodeCarbon's bundled data) and CO2 per token."""

from __future__ import annotations

from typing import Any


def carbon_columns(row: dict[str, Any], carbon_cfg: Any) -> dict[str, Any]:
    """Columns carbon_intensity_g_per_kwh, carbon_source, pue, g_co2_per_1k_tokens.

    TODO(issue 6).
    """
    return {}
