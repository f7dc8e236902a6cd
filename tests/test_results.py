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
