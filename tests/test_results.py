import csv
import json
import math

import pytest

from tokenwatt.errors import UserError
from tokenwatt.results.folder import prepare_out_dir
from tokenwatt.results.load import load_results
from tokenwatt.results.store import append_rows, update_json


def test_append_never_truncates_and_widens_header(tmp_path):
    p = tmp_path / "results.csv"
    append_rows(p, [{"a": 1, "b": 2}])
    append_rows(p, [{"a": 3, "b": 4, "c": 5}])
    rows = list(csv.DictReader(p.open()))
    assert [r["a"] for r in rows] == ["1", "3"]
    assert rows[0]["c"] == "" and rows[1]["c"] == "5"


def test_json_list_appends_and_nan_becomes_null(tmp_path):
    p = tmp_path / "run.json"
    update_json(p, "runs", {"x": math.nan})
    update_json(p, "runs", {"x": 1.5})
    assert json.loads(p.read_text()) == {"runs": [{"x": None}, {"x": 1.5}]}


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        prepare_out_dir(f)


def test_load_results_combines_folders(tmp_path):
    for name, v in (("a", 1), ("b", 2)):
        d = tmp_path / name
        d.mkdir()
        append_rows(d / "results.csv", [{"decode_j_per_token": v}])
    df = load_results(tmp_path / "a", tmp_path / "b")
    assert list(df["decode_j_per_token"]) == [1, 2]
    assert df["results_dir"].nunique() == 2


def _sweep_with_a_failed_row(folder):
    """Two ok trials and one failed case, as a sweep writes them (empty cells on the failure)."""
    ok = {"run_id": "r1", "case_id": "a", "timestamp_utc": "2025-01-02T03:04:05+00:00",
          "precision": "fp32", "status": "ok", "emulated": False, "compile": False,
          "measured": True, "decode_j_per_token": 0.1}  # fmt: skip
    failed = {"run_id": "r2", "case_id": "b", "timestamp_utc": "2025-01-02T03:05:00+00:00",
              "precision": "fp8", "status": "failed", "compile": False,
              "error": "PrecisionUnsupported: needs a GPU"}  # fmt: skip
    append_rows(folder / "results.csv", [ok, ok | {"measured": False}, failed])


def test_load_results_booleans_are_nullable_and_index_a_frame(tmp_path):
    _sweep_with_a_failed_row(tmp_path)
    df = load_results(tmp_path)
    assert str(df["measured"].dtype) == "boolean" and str(df["emulated"].dtype) == "boolean"
    assert df["measured"].isna().tolist() == [False, False, True]
    assert len(df[df.measured]) == 1  # the failed row's NA counts as False
    assert len(df[~df.emulated.fillna(True)]) == 2
    assert df["compile"].tolist() == [False, False, False]


def test_load_results_parses_timestamps(tmp_path):
    import pandas as pd

    _sweep_with_a_failed_row(tmp_path)
    ts = load_results(tmp_path)["timestamp_utc"]
    assert isinstance(ts.dtype, pd.DatetimeTZDtype) and str(ts.dt.tz) == "UTC"
    assert ts.iloc[2] - ts.iloc[0] == pd.Timedelta(seconds=55)


@pytest.mark.parametrize("column", ["flags", "summary_flags"])
def test_summary_flags_read_under_either_name(tmp_path, column):
    """`flags` (older files) shadowed DataFrame.flags; both names load as summary_flags."""
    append_rows(tmp_path / "summary.csv", [{"run_id": "r1", column: "cv>5%;estimate"}])
    df = load_results(tmp_path, summary=True)
    assert "flags" not in df.columns
    assert df["summary_flags"].tolist() == ["cv>5%;estimate"]


def test_summary_flags_of_a_folder_appended_to_across_versions(tmp_path):
    append_rows(tmp_path / "summary.csv", [{"run_id": "old", "flags": "estimate"}])
    append_rows(tmp_path / "summary.csv", [{"run_id": "new", "summary_flags": "cv>5%"}])
    df = load_results(tmp_path, summary=True)
    assert df["summary_flags"].tolist() == ["estimate", "cv>5%"] and "flags" not in df


def test_a_run_writes_summary_flags_and_records_the_resolved_precision(tmp_path, invoke,
                                                                       fast_args):  # fmt: skip
    """precision auto (the default) is fp32 on a CPU, recorded so in rows and run.json."""
    out = tmp_path / "o"
    r = invoke("run", *fast_args, "--device", "cpu", "--meter", "estimate", "--no-fidelity",
               "--out", str(out), "-q")  # fmt: skip
    assert r.exit_code == 0, r.output
    trials, summary = load_results(out), load_results(out, summary=True)
    assert set(trials["precision"]) == {"fp32"} and set(summary["precision"]) == {"fp32"}
    assert "estimate" in summary["summary_flags"].iloc[0]
    assert "flags" not in open(out / "summary.csv").readline().split(",")
    run = json.loads((out / "run.json").read_text())["runs"][0]
    assert run["config"]["precision"] == "fp32" and run["summary"]["precision"] == "fp32"
