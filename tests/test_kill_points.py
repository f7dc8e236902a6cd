"""benchmarks/kill_points.py: where a kill landed is read from the run's own events, and the
stored result says, for every kill, where it was aimed and where it landed."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import kill_points as kp  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def test_progress_is_the_last_event_of_the_run(tmp_path):
    witness = tmp_path / "w"
    witness.write_text(
        "phase python 1.0\nphase meters 2.0\nphase warning 2.1\n"
        "phase idle 3.0\nphase trials 3.5\nresults.csv 1 4.0\nresults.csv 1 4.4\n"
        "summary.csv 1 4.5\nresults.csv 1"
    )  # fmt: skip  (a line being written)
    ev = kp.events(witness)
    assert len(ev) == 8 and ev[-1] == ("summary.csv", "1", 4.5)
    assert kp.progress(ev[:3]) == "phase meters"  # a warning is no step of the run
    assert kp.progress(ev[:4]) == "phase idle"
    assert kp.progress(ev[:7]) == "trial row 2"
    assert kp.progress(ev) == "summary"
    assert kp.witnessed(witness, "results.csv") == 2
    assert kp.aim((0, "idle", 0.3)) == "phase idle" and kp.aim((3, "", 0.3)) == "trial row 3"


def test_the_stored_kills_say_where_each_was_aimed_and_where_it_landed():
    runs = pd.read_csv(RESULTS / "kill_points.csv")
    assert {"aimed_after", "landed_after", "on_target"} <= set(runs.columns)
    hit = runs[runs["interrupted"]]
    assert len(hit) and hit["landed_after"].notna().all()
    assert (hit["on_target"] == (hit["aimed_after"] == hit["landed_after"])).all()
    sweeps = pd.read_csv(RESULTS / "kill_sweeps.csv")
    assert {"point", "landed_at", "on_target"} <= set(sweeps.columns)
    hit = sweeps[sweeps["interrupted"]]
    assert (hit["on_target"] == (hit["point"] == hit["landed_at"])).all()
    md = (RESULTS / "kill_points.md").read_text()
    assert "landed after the event aimed at" in md and "landed where aimed" in md
