"""`tokenwatt export`: folders from many machines become one dataset that pandas, the
`datasets` library (as people will load it, through the card's own configs) and
`tokenwatt.load_results` read with the declared dtypes; its card lists every column with its
unit; `tokenwatt validate` passes it and names a hand-edited cell; rows merge once per
(machine_id, run_id, trial, window)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

import tokenwatt
from tokenwatt.results.schema import column, pandas_dtypes

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p for p in (ROOT / "results").glob("cpu-estimate-*") if p.is_dir())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("d") / "dataset"
    from click.testing import CliRunner

    from tokenwatt.cli import cli

    r = CliRunner().invoke(cli, ["export", *map(str, PUBLISHED), "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out


def test_pandas_and_tokenwatt_load_it_with_the_declared_dtypes(dataset):
    for table, kind in (("trials", "results"), ("runs", "summary")):
        df = pd.read_parquet(dataset / f"{table}.parquet")
        assert len(df) and "results_dir" not in df
        loaded = tokenwatt.load_results(dataset, summary=kind == "summary")
        want = pandas_dtypes(loaded.columns, kind)
        assert {c: str(loaded[c].dtype) for c in want} == want
    trials = tokenwatt.load_results(dataset)
    folders = tokenwatt.load_results(*PUBLISHED)
    assert len(trials) == len(folders)
    assert set(trials["run_id"]) == set(folders["run_id"])
    assert trials["measured"].dtype == "boolean" and not trials["measured"].any()


def test_datasets_loads_it_through_the_cards_own_configs(dataset, tmp_path, monkeypatch):
    import datasets  # in the test extras: a missing one fails, never skips

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    header = yaml.safe_load((dataset / "README.md").read_text().split("---")[1])
    names = [c["config_name"] for c in header["configs"]]
    assert names == ["runs", "trials", "timelines"]
    for name in names:
        ds = datasets.load_dataset(str(dataset), name, split="train")
        assert ds.num_rows > 0
    trials = datasets.load_dataset(str(dataset), "trials", split="train")
    assert trials.num_rows == len(pd.read_parquet(dataset / "trials.parquet"))
    assert str(trials.features["measured"].dtype) == "bool"
    plain = datasets.load_dataset("parquet", data_files=str(dataset / "runs.parquet"),
                                  split="train")  # fmt: skip
    assert plain.num_rows == len(pd.read_parquet(dataset / "runs.parquet"))


def test_the_card_lists_every_column_with_its_unit(dataset):
    text = (dataset / "README.md").read_text()
    assert text.startswith("---\nlicense: cc-by-4.0\n")
    for table, kind in (("trials", "results"), ("runs", "summary")):
        for name in pd.read_parquet(dataset / f"{table}.parquet").columns:
            c = column(name, kind)
            assert c is not None, name
            assert f"| `{name}` | {c.dtype} | {c.unit} |" in text, name
    assert "## Provenance" in text and "## How the figures were measured" in text


def test_validate_passes_it_and_names_a_hand_edited_cell(dataset, tmp_path, invoke):
    assert invoke("validate", str(dataset)).exit_code == 0
    edited = tmp_path / "edited"
    shutil.copytree(dataset, edited)
    trials = pd.read_parquet(edited / "trials.parquet")
    trials.loc[7, "decode_j_per_token"] *= 1.02
    trials.to_parquet(edited / "trials.parquet", index=False)
    r = invoke("validate", str(edited))
    assert r.exit_code == 1
    first = r.output.splitlines()[0]
    assert first.startswith(f"{edited}/trials.parquet row 7 (run ")
    assert " decode_j_per_token: " in first


def test_machines_merge_and_the_same_folder_twice_is_itself(tmp_path, invoke):
    a = tmp_path / "a"
    shutil.copytree(PUBLISHED[0], a)
    b = tmp_path / "b"  # the same runs, measured "on another machine"
    shutil.copytree(PUBLISHED[0], b)
    for name in ("results.csv", "summary.csv"):
        for folder, machine in ((a, "aaaa000000000000"), (b, "bbbb000000000000")):
            df = pd.read_csv(folder / name, dtype=str)
            df["machine_id"] = machine
            df.to_csv(folder / name, index=False)
    n = len(pd.read_csv(a / "results.csv"))
    assert invoke("export", str(a), str(b), "--out", str(tmp_path / "ab")).exit_code == 0
    merged = tokenwatt.load_results(tmp_path / "ab")
    assert len(merged) == 2 * n and merged["machine_id"].nunique() == 2
    assert invoke("export", str(a), str(a), "--out", str(tmp_path / "aa")).exit_code == 0
    assert len(tokenwatt.load_results(tmp_path / "aa")) == n
    # a dataset is an input too: merging it with one of its folders changes nothing
    assert invoke("export", str(tmp_path / "ab"), str(b), "--out",
                  str(tmp_path / "ab2")).exit_code == 0  # fmt: skip
    assert len(tokenwatt.load_results(tmp_path / "ab2")) == 2 * n
    assert invoke("validate", str(tmp_path / "ab2")).exit_code == 0


def test_conflicting_rows_name_both_sources_and_nothing_is_written(tmp_path, invoke):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(PUBLISHED[0], a)
    shutil.copytree(PUBLISHED[0], b)
    df = pd.read_csv(b / "results.csv", dtype=str)
    df.loc[0, "decode_j"] = "1.5"
    df.to_csv(b / "results.csv", index=False)
    r = invoke("export", str(a), str(b), "--out", str(tmp_path / "out"))
    assert r.exit_code == 2 and r.output.count("\n") == 1
    assert str(a) in r.output and str(b) in r.output and "different values" in r.output
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_input_is_one_line(tmp_path, invoke, monkeypatch):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    r = invoke("export", str(PUBLISHED[0]), "--out", str(tmp_path / "full"))
    assert r.exit_code == 2 and "exists and is not empty" in r.output
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    r = invoke("export", str(PUBLISHED[0]), "--out", str(tmp_path / "new"))
    assert r.exit_code == 2 and "pip install 'tokenwatt[publish]'" in r.output
