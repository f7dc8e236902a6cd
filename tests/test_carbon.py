"""Carbon intensity from CodeCarbon's bundled data, region profiles and the CO2 arithmetic."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from tokenwatt.analysis.carbon import carbon_columns, load_profiles, resolve_region
from tokenwatt.config import Carbon
from tokenwatt.errors import ConfigError


@pytest.fixture(autouse=True)
def _builtin_profiles_only(monkeypatch):
    """A user's own profile files must not change what these tests expect."""
    monkeypatch.delenv("TOKENWATT_REGIONS", raising=False)
    monkeypatch.delenv("TOKENWATT_HARDWARE", raising=False)


LBS_PER_MWH_TO_G_PER_KWH = 453.59237 / 1000  # 1 lb = 453.59237 g; 1 MWh = 1000 kWh


def _codecarbon_json(path: str) -> dict:
    """Read CodeCarbon's data file directly, as an independent check of the loader path."""
    return json.loads(resources.files("codecarbon").joinpath(path).read_text("utf-8"))


ROW = {"total_j_per_token": 2.5, "total_j": 2.5 * 4 * 64, "batch_size": 4, "new_tokens": 64}


def test_co2_follows_from_j_per_token_intensity_and_pue() -> None:
    mix = _codecarbon_json("data/private_infra/global_energy_mix.json")["DEU"]
    cols = carbon_columns(ROW, Carbon(region="DEU", pue=1.2))
    assert cols["carbon_intensity_g_per_kwh"] == pytest.approx(mix["carbon_intensity"])
    kwh_per_1k = 2.5 * 1000 / 3.6e6
    assert cols["g_co2_per_1k_tokens"] == pytest.approx(kwh_per_1k * mix["carbon_intensity"] * 1.2)
    assert cols["pue"] == 1.2
    assert "global_energy_mix DEU" in cols["carbon_source"]


def test_two_regions_differ_by_the_ratio_of_their_intensities() -> None:
    ice = carbon_columns(ROW, Carbon(region="iceland-norway", pue=1.1))
    nova = carbon_columns(ROW, Carbon(region="northern-virginia", pue=1.1))
    ratio = nova["carbon_intensity_g_per_kwh"] / ice["carbon_intensity_g_per_kwh"]
    assert nova["g_co2_per_1k_tokens"] / ice["g_co2_per_1k_tokens"] == pytest.approx(ratio)
    assert ratio > 5  # a fossil-heavy grid against hydro and geothermal
    # The profiles' intensities are CodeCarbon's lifecycle figures: the US national one for
    # northern-virginia (no lifecycle state figure is bundled), the mean of the Icelandic and
    # Norwegian ones for iceland-norway.
    mix = _codecarbon_json("data/private_infra/global_energy_mix.json")
    assert nova["carbon_intensity_g_per_kwh"] == pytest.approx(mix["USA"]["carbon_intensity"])
    assert nova["carbon_basis"] == ice["carbon_basis"] == "lifecycle"
    isl_nor = (mix["ISL"]["carbon_intensity"] + mix["NOR"]["carbon_intensity"]) / 2
    assert ice["carbon_intensity_g_per_kwh"] == pytest.approx(isl_nor)


def test_leaderboard_columns_without_a_region() -> None:
    cols = carbon_columns(ROW, Carbon())
    assert cols["tokens_per_kwh"] == pytest.approx(3.6e6 / 2.5)
    # One query = one sequence: (total J / batch) per query, in Wh per 1000 queries.
    assert cols["wh_per_1k_queries"] == pytest.approx(2.5 * 64 * 1000 / 3600)
    assert cols["carbon_intensity_g_per_kwh"] is None and cols["g_co2_per_1k_tokens"] is None
    assert carbon_columns({"total_j_per_token": float("nan")}, None)["tokens_per_kwh"] is None


@pytest.mark.parametrize(
    ("name", "canonical", "kind"),
    [
        ("DEU", "DEU", "country"),
        ("fra", "FRA", "country"),
        ("USA/virginia", "USA/virginia", "us-state"),
        ("new-york", "USA/new york", "us-state"),
        ("CAN/quebec", "CAN/quebec", "ca-province"),
        ("NO1", "NO1", "nordic-zone"),
        ("gcp:us-east4", "gcp/us-east4", "cloud"),
        ("Frankfurt", "frankfurt", "profile"),
    ],
)
def test_resolve_region_names(name: str, canonical: str, kind: str) -> None:
    r = resolve_region(name)
    assert (r.name, r.kind) == (canonical, kind)
    assert 0 < r.carbon_intensity_g_per_kwh < 1500
    assert r.carbon_source


def test_unknown_region_suggests_the_nearest_name() -> None:
    with pytest.raises(ConfigError, match="did you mean 'northern-virginia'"):
        resolve_region("northern-virgina")
    with pytest.raises(ConfigError, match="ISO3 country code"):
        resolve_region("atlantis")


def test_builtin_profiles_carry_every_number_and_its_source() -> None:
    profiles = load_profiles()
    assert {"northern-virginia", "frankfurt", "iceland-norway", "west-texas"} <= set(profiles)
    for name in profiles:
        r = resolve_region(name)
        assert r.rack_kw and r.grid_queue_years and r.pue_typical, name
        for key in ("grid", "rack_kw", "grid_queue_years", "pue_typical"):
            assert len(r.sources[key]) > 20, (name, key)
    assert resolve_region("iceland-norway").rack_kw == (80.0, 120.0)


def test_user_region_file_extends_and_must_cite(tmp_path, monkeypatch) -> None:
    good = tmp_path / "mine.yaml"
    good.write_text(
        "regions:\n"
        "  my-site:\n"
        "    grid: {g_per_kwh: 100.0}\n"
        "    rack_kw: [20, 30]\n"
        "    sources: {grid: 'utility PPA 2025 disclosure', rack_kw: 'our floor plan'}\n"
    )
    monkeypatch.setenv("TOKENWATT_REGIONS", str(good))
    r = resolve_region("my-site")
    assert r.carbon_intensity_g_per_kwh == 100.0 and r.rack_kw == (20.0, 30.0)
    assert "utility PPA" in r.carbon_source
    assert resolve_region("frankfurt").kind == "profile"  # built-ins stay

    bad = tmp_path / "bad.yaml"
    bad.write_text("regions:\n  x:\n    grid: {g_per_kwh: 5}\n    rack_kw: [10, 20]\n")
    monkeypatch.setenv("TOKENWATT_REGIONS", str(bad))
    with pytest.raises(ConfigError, match="has no source"):
        resolve_region("x")
    monkeypatch.setenv("TOKENWATT_REGIONS", str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_region("DEU")


def test_named_regions_share_one_carbon_basis_and_say_it() -> None:
    bases = {name: resolve_region(name).basis for name in load_profiles()}
    assert set(bases.values()) == {"lifecycle"}, bases
    va = resolve_region("USA/virginia")  # EPA eGRID: plant combustion only
    usa = _codecarbon_json("data/private_infra/2023/usa_emissions.json")
    assert va.basis == "direct"
    assert va.carbon_intensity_g_per_kwh == pytest.approx(
        usa["virginia"]["emissions"] * LBS_PER_MWH_TO_G_PER_KWH, rel=1e-4
    )
    assert resolve_region("DEU").basis == "lifecycle"


def test_a_profile_mixing_bases_is_refused(tmp_path, monkeypatch) -> None:
    f = tmp_path / "r.yaml"
    f.write_text(
        "regions:\n  mixed:\n    grid: {codecarbon: [DEU, USA/texas]}\n    sources: {grid: test}\n"
    )
    monkeypatch.setenv("TOKENWATT_REGIONS", str(f))
    with pytest.raises(ConfigError, match="mix carbon bases"):
        resolve_region("mixed")


def test_run_and_plan_use_one_pue_rule() -> None:
    from tokenwatt.analysis.carbon import resolve_pue

    fr = resolve_region("frankfurt")
    assert carbon_columns(ROW, Carbon(region="frankfurt"))["pue"] == fr.pue_typical == 1.2
    assert carbon_columns(ROW, Carbon(region="frankfurt", pue=1.5))["pue"] == 1.5
    assert carbon_columns(ROW, Carbon(region="DEU"))["pue"] == 1.0  # no profile: IT energy
    assert carbon_columns(ROW, Carbon())["pue"] == 1.0
    assert resolve_pue(None, fr) == 1.2 and resolve_pue(1.4, fr) == 1.4
