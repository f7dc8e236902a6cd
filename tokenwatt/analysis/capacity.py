"""Capacity planning: what a measured J/token means in racks, megawatts and tonnes of CO2.

Every figure follows from one measured number per case, the energy per generated token
(`total_j_per_token_mean`: prefill + decode over generated tokens, the same basis as
g_co2_per_1k_tokens), and the region's numbers (data/regions.yaml):

    tokens/s per kW of IT power = 1000 / J_per_token
    IT MW for a target          = tokens/s x J_per_token / 1e6
    facility MW                 = IT MW x PUE
    racks                       = IT kW / rack kW (both ends of the region's density range)
    annual MWh                  = facility MW x 8760 h x load factor
    annual t CO2                = annual MWh x g/kWh / 1000

The measured J/token covers only the meter's scope (energy_scope, e.g. the GPU board), so IT
power here leaves out host CPUs, NICs and fans; and it assumes the measured J/token holds at
every load (idle power at low load is not added). Both make the plan a lower bound.
"""

from __future__ import annotations

import math
from typing import Any

from tokenwatt.analysis.carbon import (
    Region,
    g_co2_per_1k_tokens,
    load_profiles,
    resolve_pue,
    resolve_region,
)
from tokenwatt.errors import UserError

HOURS_PER_YEAR = 8760.0
# Columns that tell cases apart, in display order, where the results have them.
CASE_COLUMNS = (
    "name", "model", "precision", "precision_backend", "compile", "device_name", "batch_size",
    "prompt_tokens", "new_tokens", "energy_scope", "measured",
)  # fmt: skip
J_COLUMNS = ("total_j_per_token_mean", "total_j_per_token")
PLAN_COLUMNS = (
    "region", "j_per_token", "relative_j_per_token", "relative_to", "tokens_per_s_per_kw",
    "rack_kw_low", "rack_kw_high", "tokens_per_s_per_rack_low", "tokens_per_s_per_rack_high",
    "pue", "carbon_intensity_g_per_kwh", "g_co2_per_1k_tokens", "target_tokens_per_s",
    "load_factor", "it_mw", "facility_mw", "racks_min", "racks_max", "annual_mwh",
    "annual_t_co2", "grid_queue_years_low", "grid_queue_years_high", "carbon_basis",
    "carbon_source",
)  # fmt: skip


def plan_table(
    df: Any,
    region: str | None,
    tokens_per_s: float | None,
    load_factor: float = 1.0,
    pue: float | None = None,
) -> Any:
    """One row per (region, case): racks, MW, MWh/year and t CO2/year at a target throughput.

    df: summary rows (total_j_per_token_mean) or trial rows (total_j_per_token, averaged per
    case). region None: every named profile. pue None: the region's typical PUE (1.0 for a
    region without a profile). tokens_per_s None: the target columns stay empty.
    """
    import pandas as pd

    _check_inputs(tokens_per_s, load_factor, pue)
    cases = _cases(df)
    regions = [resolve_region(region)] if region else [resolve_region(n) for n in load_profiles()]
    rows = [
        _plan_row(case, r, tokens_per_s, load_factor, pue)
        for r in regions
        for case in cases.to_dict("records")
    ]
    keys = [c for c in CASE_COLUMNS if c in cases.columns]
    return pd.DataFrame(rows, columns=[PLAN_COLUMNS[0], *keys, *PLAN_COLUMNS[1:]])


def _check_inputs(tokens_per_s: float | None, load_factor: float, pue: float | None) -> None:
    if tokens_per_s is not None and not (math.isfinite(tokens_per_s) and tokens_per_s > 0):
        raise UserError(f"--tokens-per-s must be a positive number (got {tokens_per_s})")
    if not (0 < load_factor <= 1):
        raise UserError(f"--load-factor must be in (0, 1] (got {load_factor}); 1 = all year")
    if pue is not None and not (1.0 <= pue <= 5.0):
        raise UserError(f"--pue must be between 1.0 and 5.0 (got {pue})")


def _cases(df: Any) -> Any:
    """One row per case with its J/token in column j_per_token."""
    col = next((c for c in J_COLUMNS if c in df.columns), None)
    if col is None or df.empty:
        raise UserError(
            "plan: the results have no total_j_per_token_mean column; give tokenwatt results "
            "folders (summary.csv) or their CSV files"
        )
    keys = [c for c in CASE_COLUMNS if c in df.columns]
    data = df[[*keys, col]].copy()
    data[col] = data[col].astype(float)
    data = data[data[col].map(lambda v: math.isfinite(v) and v > 0)]
    if data.empty:
        raise UserError(f"plan: no row has a positive {col}; were the runs measured?")
    # Trial rows (and repeated runs of one case) are averaged per case.
    cases = data.groupby(keys, dropna=False, sort=False, as_index=False)[col].mean()
    cases = cases.rename(columns={col: "j_per_token"})
    cases["relative_j_per_token"], cases["relative_to"] = _relative(cases, keys)
    return cases


def _relative(cases: Any, keys: list[str]) -> tuple[list[float], list[str]]:
    """J/token over the reference case of the same model, batch and device (bf16, else first),
    and the reference's precision (what a "vs ..." column is relative to)."""
    group = [k for k in ("model", "batch_size", "device_name", "prompt_tokens", "new_tokens")
             if k in keys]  # fmt: skip
    records = cases.to_dict("records")

    def key(r: dict[str, Any]) -> str:
        return repr([r[k] for k in group])

    refs: dict[str, tuple[float, str]] = {}
    for r in records:
        refs.setdefault(key(r), (float(r["j_per_token"]), str(r.get("precision", "first case"))))
    for r in reversed(records):  # the group's first bf16 case, where it has one
        if r.get("precision") == "bf16":
            refs[key(r)] = (float(r["j_per_token"]), "bf16")
    return ([float(r["j_per_token"]) / refs[key(r)][0] for r in records],
            [refs[key(r)][1] for r in records])  # fmt: skip


def _plan_row(
    case: dict[str, Any],
    r: Region,
    tokens_per_s: float | None,
    load_factor: float,
    pue_override: float | None,
) -> dict[str, Any]:
    j = float(case["j_per_token"])
    pue = resolve_pue(pue_override, r)
    per_kw = 1000.0 / j
    low, high = r.rack_kw or (math.nan, math.nan)
    row: dict[str, Any] = {
        **case,
        "region": r.name,
        "tokens_per_s_per_kw": per_kw,
        "rack_kw_low": low,
        "rack_kw_high": high,
        "tokens_per_s_per_rack_low": per_kw * low,
        "tokens_per_s_per_rack_high": per_kw * high,
        "pue": pue,
        "carbon_intensity_g_per_kwh": r.carbon_intensity_g_per_kwh,
        "g_co2_per_1k_tokens": g_co2_per_1k_tokens(j, r.carbon_intensity_g_per_kwh, pue),
        "target_tokens_per_s": tokens_per_s,
        "load_factor": load_factor,
        "grid_queue_years_low": r.grid_queue_years[0] if r.grid_queue_years else math.nan,
        "grid_queue_years_high": r.grid_queue_years[1] if r.grid_queue_years else math.nan,
        "carbon_source": r.carbon_source,
        "carbon_basis": r.basis,
    }
    if tokens_per_s:
        it_kw = tokens_per_s * j / 1000.0
        facility_mw = it_kw / 1000.0 * pue
        annual_mwh = facility_mw * HOURS_PER_YEAR * load_factor
        row.update(
            it_mw=it_kw / 1000.0,
            facility_mw=facility_mw,
            racks_min=math.ceil(it_kw / high) if r.rack_kw else math.nan,
            racks_max=math.ceil(it_kw / low) if r.rack_kw and low > 0 else math.nan,
            annual_mwh=annual_mwh,
            annual_t_co2=annual_mwh * r.carbon_intensity_g_per_kwh / 1000.0,
        )
    return row
