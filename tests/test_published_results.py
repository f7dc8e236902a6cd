"""What results/ publishes: every folder regenerates from a committed config, carries no
contended row, and an estimate says so in its name."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = sorted(p for p in (ROOT / "results").iterdir() if (p / "results.csv").is_file())
DATASETS = sorted(p for p in (ROOT / "results").iterdir() if (p / "trials.parquet").is_file())


def _config_for(folder: Path) -> Path | None:
    for cfg in (ROOT / "configs").glob("sweep-*.yaml"):
        if yaml.safe_load(cfg.read_text()).get("out") == f"results/{folder.name}":
            return cfg
    return None


def test_each_published_config_points_into_results_and_runs_on_todays_presets():
    from tokenwatt.sweep.plan import plan, schedule_of

    published = [c for c in (ROOT / "configs").glob("sweep-cpu-estimate-*.yaml")]
    assert published, "the CPU estimate configs the README names"
    for cfg in published:
        data = yaml.safe_load(cfg.read_text())
        assert data["out"].startswith("results/cpu-estimate-"), cfg
        assert data["measure"]["meter"] == "estimate", cfg  # the name says estimate: it is one
        assert schedule_of(data).rounds >= 2, cfg  # comparisons stand on runs, not trials
        assert plan(data, where=str(cfg)), cfg  # valid on today's schema and presets


def test_results_readme_lists_exactly_the_published_folders():
    """A folder listed but never committed (or committed but not listed) fails here."""
    import re

    listed = set(re.findall(r"^\| `([^`/]+)/` \|", (ROOT / "results" / "README.md").read_text(),
                            re.M))  # fmt: skip
    assert listed == {f.name for f in FOLDERS + DATASETS}
    assert all(p.name in listed for p in (ROOT / "results").iterdir() if p.is_dir())


@pytest.mark.parametrize("folder", FOLDERS, ids=[f.name for f in FOLDERS])
def test_a_published_folder_is_reproducible_and_uncontended(folder):
    cfg = _config_for(folder)
    assert cfg is not None, f"{folder.name}: no config in configs/ has out: results/{folder.name}"
    assert (folder / "sweep.yaml").read_text() == cfg.read_text(), "made from another config"
    rows = pd.read_csv(folder / "results.csv")
    assert "contended" in rows, f"{folder.name} predates contention recording: regenerate it"
    ok = rows[rows["status"] == "ok"]
    assert not ok["contended"].astype(str).str.lower().eq("true").any(), folder.name
    if (~ok["measured"].astype(str).str.lower().eq("true")).any():
        assert "estimate" in folder.name, f"{folder.name} holds estimates: name it so"
