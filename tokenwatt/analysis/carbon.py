"""Carbon intensity (offline, from CodeCarbon's bundled data) and what a joule per token emits.

A region is a named profile (tokenwatt/data/regions.yaml, extendable through TOKENWATT_REGIONS)
or any key CodeCarbon's bundled data knows: an ISO3 country (DEU), USA/<state>, CAN/<province>,
CHN/<province>, a Nordic bidding zone (NO1) or a cloud region (gcp/us-east4). CodeCarbon's own
DataSource loads the files and its Emissions class turns them into g/kWh, so tokenwatt applies
the same conversions as CodeCarbon (lbs/MWh for eGRID, fossil shares for Canada) and never
touches the network.

Every intensity says its basis (`carbon_basis`): "lifecycle" (Ember's country figures, which
count upstream fuel supply, construction and methane; CodeCarbon's per-source factors for the
Nordic zones and Canadian provinces), "direct" (EPA eGRID's state output rates and China's
provincial figures: combustion at the plant only), or "unstated" (cloud providers' figures).
The built-in named profiles are all lifecycle, so they compare with each other; a table that
mixes bases says so.

PUE: `carbon.pue` (or `plan --pue`) when given, else the region profile's typical PUE, else
1.0: one rule for `run` and `plan` (`resolve_pue`).
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from tokenwatt._util.datafiles import read_section
from tokenwatt.analysis.floor import positive as _positive
from tokenwatt.config import Carbon
from tokenwatt.errors import ConfigError

J_PER_KWH = 3.6e6
ENV_REGIONS = "TOKENWATT_REGIONS"
PROFILE_FIELDS = ("grid", "rack_kw", "grid_queue_years", "pue_typical")
CARBON_COLUMNS = (
    "wh_per_1k_queries", "tokens_per_kwh", "pue", "carbon_intensity_g_per_kwh", "carbon_source",
    "carbon_basis", "g_co2_per_1k_tokens",
)  # fmt: skip
BASES = ("lifecycle", "direct", "unstated")
KIND_BASIS = {"country": "lifecycle", "nordic-zone": "lifecycle", "ca-province": "lifecycle",
              "us-state": "direct", "cn-province": "direct", "cloud": "unstated"}  # fmt: skip


@dataclass(frozen=True)
class Region:
    """A place to deploy: its grid's carbon intensity and, for profiles, its planning numbers."""

    name: str
    kind: str  # profile | country | us-state | ca-province | cn-province | nordic-zone | cloud
    carbon_intensity_g_per_kwh: float
    carbon_source: str
    description: str = ""
    rack_kw: tuple[float, float] | None = None
    grid_queue_years: tuple[float, float] | None = None
    pue_typical: float | None = None
    sources: dict[str, str] = field(default_factory=dict)
    basis: str = "unstated"  # lifecycle | direct | unstated (see the module docstring)


# ---------------------------------------------------------------- named profiles


def profile_files() -> list[Path]:
    """The built-in profile file, then the user's files from TOKENWATT_REGIONS (later wins)."""
    files = [Path(str(resources.files("tokenwatt").joinpath("data/regions.yaml")))]
    extra = os.environ.get(ENV_REGIONS, "")
    files += [Path(p) for p in extra.split(os.pathsep) if p.strip()]
    return files


def load_profiles() -> dict[str, dict[str, Any]]:
    """All named profiles, validated; a malformed user file is a ConfigError naming it."""
    return _load_profiles(tuple(str(p) for p in profile_files()))


@lru_cache(maxsize=8)
def _load_profiles(paths: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in paths:
        regions = read_section(path, "regions", ENV_REGIONS, "region")
        for name, prof in regions.items():
            out[_norm_profile(str(name))] = _check_profile(str(name), prof, path)
    return out


def _check_profile(name: str, prof: Any, path: str) -> dict[str, Any]:
    where = f"{path}: region {name!r}"
    if not isinstance(prof, dict) or not isinstance(prof.get("grid"), dict):
        raise ConfigError(f"{where}: needs grid: {{codecarbon: KEY}} or grid: {{g_per_kwh: X}}")
    g = prof["grid"].get("g_per_kwh")
    if "g_per_kwh" in prof["grid"] and not (
        isinstance(g, int | float) and not isinstance(g, bool) and 0 <= g <= 5000
    ):
        raise ConfigError(f"{where}: grid.g_per_kwh must be a number of gCO2/kWh from 0 to 5000")
    sources = prof.get("sources") or {}
    for key in PROFILE_FIELDS:
        if prof.get(key) is not None and not sources.get(key):
            raise ConfigError(f"{where}: {key} has no source; add sources.{key}: <where from>")
    for key in ("rack_kw", "grid_queue_years"):
        v = prof.get(key)
        ok = v is None or (
            isinstance(v, list) and len(v) == 2 and all(isinstance(x, int | float) for x in v)
        )
        if not ok or (v is not None and not 0 <= v[0] <= v[1]):
            raise ConfigError(f"{where}: {key} must be [low, high] with 0 <= low <= high")
    pue = prof.get("pue_typical")
    if pue is not None and not (isinstance(pue, int | float) and 1.0 <= pue <= 5.0):
        raise ConfigError(f"{where}: pue_typical must be a number from 1.0 to 5.0")
    return {**prof, "name": name}


def _norm_profile(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(" ", "-")


# ---------------------------------------------------------------- CodeCarbon's data


@dataclass(frozen=True)
class _CcKey:
    canonical: str
    kind: str
    country: str  # ISO3, or the cloud provider for kind == "cloud"
    region: str | None


def _codecarbon() -> Any:
    from tokenwatt._util.extras import require

    require("carbon", "carbon.region")  # its bundled grid data; one line with the pip command
    import codecarbon
    from codecarbon.input import DataSource

    return codecarbon, DataSource()


@lru_cache(maxsize=1)
def codecarbon_catalogue() -> dict[str, _CcKey]:
    """Every region CodeCarbon's bundled data covers, by lower-case alias."""
    _, ds = _codecarbon()
    from codecarbon.core.emissions import _NORDIC_REGIONS_BY_COUNTRY

    cat: dict[str, _CcKey] = {}

    def add(key: _CcKey, *aliases: str) -> None:
        for a in (key.canonical, *aliases):
            for form in {a.lower(), a.lower().replace(" ", "-")}:
                cat.setdefault(form, key)

    for iso in ds.get_global_energy_mix_data():
        add(_CcKey(iso.upper(), "country", iso.upper(), None))
    for state in ds.get_country_emissions_data("usa"):
        if not state.startswith("_"):
            add(_CcKey(f"USA/{state}", "us-state", "USA", state), f"us/{state}")
    for prov in ds.get_country_energy_mix_data("can"):
        add(_CcKey(f"CAN/{prov}", "ca-province", "CAN", prov), f"ca/{prov}")
    for prov in ds.get_china_provincial_emissions_data()["data"].values():
        key = _CcKey(f"CHN/{prov['names'][0]}", "cn-province", "CHN", prov["names"][0])
        add(key, *(f"chn/{n}" for n in prov["names"]), *(f"cn/{n}" for n in prov["names"]))
    for iso, zones in _NORDIC_REGIONS_BY_COUNTRY.items():
        for zone in zones:
            add(_CcKey(zone, "nordic-zone", iso, zone), f"{iso}/{zone}")
    cloud = ds.get_cloud_emissions_data()
    for provider, region in zip(cloud["provider"], cloud["region"], strict=True):
        add(_CcKey(f"{provider}/{region}", "cloud", provider, region))
    # Bare US state / Canadian province / cloud region names, where they are unambiguous.
    for key in list(cat.values()):
        if key.kind in ("us-state", "ca-province", "cloud") and key.region:
            add(key, key.region)
    return cat


def codecarbon_intensity(key: _CcKey) -> tuple[float, str]:
    """g CO2(e)/kWh for one CodeCarbon key, computed by CodeCarbon's Emissions, and its source."""
    codecarbon, ds = _codecarbon()
    from codecarbon.core.emissions import Emissions
    from codecarbon.core.units import Energy
    from codecarbon.external.geography import CloudMetadata, GeoMetadata

    em, one_kwh = Emissions(ds), Energy.from_energy(kWh=1.0)
    v = f"codecarbon {codecarbon.__version__}"
    if key.kind == "cloud":
        row = _cloud_row(ds, key)
        kg = em.get_cloud_emissions(one_kwh, CloudMetadata(key.country, key.region))
        return kg * 1000, f"{v} cloud/impact.csv {key.canonical} ({row['source']})"
    if key.kind == "country":
        mix = ds.get_global_energy_mix_data()[key.country]
        kg = em.get_country_emissions(one_kwh, GeoMetadata(key.country))
        year = mix.get("year", "?")
        return kg * 1000, f"{v} global_energy_mix {key.country} {mix['country_name']} ({year})"
    kg = em.get_region_emissions(one_kwh, GeoMetadata(key.country, region=key.region))
    return kg * 1000, f"{v} {_regional_source(ds, key)}"


def _cloud_row(ds: Any, key: _CcKey) -> Any:
    df = ds.get_cloud_emissions_data()
    return df[(df["provider"] == key.country) & (df["region"] == key.region)].iloc[0]


def _regional_source(ds: Any, key: _CcKey) -> str:
    if key.kind == "us-state":
        src = ds.get_country_emissions_data("usa").get("_source", {})
        return f"usa_emissions {key.region} ({src.get('name', 'EPA eGRID')})"
    if key.kind == "ca-province":
        return f"canada_energy_mix {key.region} (fossil shares x CodeCarbon's factors)"
    if key.kind == "cn-province":
        meta = ds.get_china_provincial_emissions_data()["metadata"]
        return f"china_provincial_emissions {key.region} (MEE/NBS {meta.get('year')}, CO2 only)"
    zone = ds.get_nordic_country_energy_mix_data()["data"][key.region]
    return f"nordic_emissions {key.region} {zone['description']} ({zone.get('year')})"


# ---------------------------------------------------------------- resolving a name


def resolve_region(name: str) -> Region:
    """A named profile, an ISO3 country, or a CodeCarbon region; unknown names suggest one."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError("carbon.region: give a region name, e.g. DEU or northern-virginia")
    profiles = load_profiles()
    prof = profiles.get(_norm_profile(name))
    if prof is not None:
        return _profile_region(prof)
    wanted = name.strip().lower().replace(":", "/").replace("_", " ")
    cat = codecarbon_catalogue()
    key = cat.get(wanted) or cat.get(wanted.replace(" ", "-"))
    if key is None:
        raise ConfigError(f"carbon.region: unknown region {name!r}{_suggest(wanted, cat)}")
    g, source = codecarbon_intensity(key)
    return Region(key.canonical, key.kind, g, source, basis=KIND_BASIS.get(key.kind, "unstated"))


def _suggest(wanted: str, cat: dict[str, _CcKey]) -> str:
    names = {**{p: p for p in load_profiles()}, **{a: k.canonical for a, k in cat.items()}}
    match = difflib.get_close_matches(wanted, list(names), n=1, cutoff=0.5)
    hint = f" (did you mean {names[match[0]]!r}?)" if match else ""
    return (
        f"{hint}; use a profile ({', '.join(load_profiles())}), an ISO3 country code (DEU), "
        "USA/<state>, CAN/<province>, a Nordic zone (NO1) or a cloud region (gcp/us-east4)"
    )


def _profile_region(prof: dict[str, Any]) -> Region:
    grid = prof["grid"]
    if "g_per_kwh" in grid:
        g = float(grid["g_per_kwh"])
        source = f"profile {prof['name']}: {prof['sources']['grid']}"
        basis = str(grid.get("basis") or "unstated")
        if basis not in BASES:
            raise ConfigError(f"region {prof['name']!r}: grid.basis must be one of "
                              f"{', '.join(BASES)} (got {basis!r})")  # fmt: skip
    else:
        keys = grid.get("codecarbon")
        keys = keys if isinstance(keys, list) else [keys]
        parts = [resolve_region(str(k)) for k in keys]
        bases = {p.basis for p in parts}
        if len(bases) > 1:
            raise ConfigError(
                f"region {prof['name']!r}: grid keys {keys} mix carbon bases "
                f"({', '.join(sorted(bases))}); average figures of one basis"
            )
        basis = bases.pop()
        g = sum(p.carbon_intensity_g_per_kwh for p in parts) / len(parts)
        joined = "; ".join(f"{p.carbon_source} = {p.carbon_intensity_g_per_kwh:.1f}" for p in parts)
        how = "mean of " if len(parts) > 1 else ""
        source = f"profile {prof['name']}: {how}{joined}"
    return Region(
        name=prof["name"],
        kind="profile",
        carbon_intensity_g_per_kwh=g,
        carbon_source=source,
        description=" ".join(str(prof.get("description", "")).split()),
        rack_kw=_pair(prof.get("rack_kw")),
        grid_queue_years=_pair(prof.get("grid_queue_years")),
        pue_typical=prof.get("pue_typical"),
        sources={k: " ".join(str(v).split()) for k, v in (prof.get("sources") or {}).items()},
        basis=basis,
    )


def _pair(v: Any) -> tuple[float, float] | None:
    return None if v is None else (float(v[0]), float(v[1]))


# ---------------------------------------------------------------- columns


def g_co2_per_1k_tokens(j_per_token: float, intensity_g_per_kwh: float, pue: float) -> float:
    """Grams of CO2 per 1000 generated tokens: IT joules x PUE, in kWh, x grid intensity."""
    return j_per_token * 1000 / J_PER_KWH * pue * intensity_g_per_kwh


def resolve_pue(pue: float | None, region: Region | None) -> float:
    """The PUE `run` and `plan` use: the one given, else the region profile's typical PUE,
    else 1.0 (IT energy as measured)."""
    if pue is not None:
        return float(pue)
    return float(region.pue_typical) if region is not None and region.pue_typical else 1.0


def carbon_columns(row: dict[str, Any], carbon_cfg: Carbon) -> dict[str, Any]:
    """Carbon and leaderboard columns for one result row.

    All derive from `total_j_per_token` (prefill + decode energy over generated tokens, the
    row's energy scope). wh_per_1k_queries and tokens_per_kwh are IT energy (no PUE) and are
    always computed; carbon_intensity_g_per_kwh, carbon_source and g_co2_per_1k_tokens need
    carbon.region; g_co2_per_1k_tokens includes the facility overhead (x pue).
    """
    region = getattr(carbon_cfg, "region", None)
    r = resolve_region(region) if region else None
    pue = resolve_pue(getattr(carbon_cfg, "pue", None), r)
    j_tok = _positive(row.get("total_j_per_token"))
    out: dict[str, Any] = {
        "wh_per_1k_queries": _wh_per_1k_queries(row, j_tok),
        "tokens_per_kwh": J_PER_KWH / j_tok if j_tok else None,
        "pue": pue,
        "carbon_intensity_g_per_kwh": None,
        "carbon_source": None,
        "carbon_basis": None,
        "g_co2_per_1k_tokens": None,
    }
    if r is not None:
        out["carbon_intensity_g_per_kwh"] = r.carbon_intensity_g_per_kwh
        out["carbon_source"] = r.carbon_source
        out["carbon_basis"] = r.basis
        if j_tok:
            out["g_co2_per_1k_tokens"] = g_co2_per_1k_tokens(
                j_tok, r.carbon_intensity_g_per_kwh, pue
            )
    return out


def _wh_per_1k_queries(row: dict[str, Any], j_tok: float | None) -> float | None:
    """AI Energy Score's unit: energy of 1000 requests (one sequence each: prefill + decode).

    total_j_per_token divides a trial's energy by every token generated (repetitions x batch
    x new_tokens), so one request costs total_j_per_token x new_tokens, whatever the number
    of repetitions, and the same holds for the summary's mean.
    """
    new = _positive(row.get("new_tokens"))
    if not (j_tok and new):
        return None
    return j_tok * new * 1000 / 3600
