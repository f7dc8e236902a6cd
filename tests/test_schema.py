"""The results schema is the one list of columns: the docs page is generated from it, every
column a real writer emits is declared in it, load_results types columns by it, and older files
load under today's names and dtypes."""

from __future__ import annotations

import csv
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from tokenwatt.results import schema
from tokenwatt.results.columns import (
    SCHEMA_VERSION,
    SERVING_METRICS,
    SUMMARY_METRICS,
    TRIAL_COLUMNS,
)
from tokenwatt.results.load import MIGRATIONS, load_results
from tokenwatt.results.schema import COLUMNS, column, markdown, pandas_dtypes, undeclared

ROOT = Path(__file__).resolve().parents[1]
OLD_FOLDER = Path(__file__).parent / "data" / "results-v1-before-engines"
# Declared but not written by the runs this test can make: none today (provenance, method and
# publishable come with every run; a GPU's columns with the simulated boards).
NOT_WRITTEN_HERE: set[str] = set()


# --- the table itself ------------------------------------------------------------------------


def test_docs_page_is_generated_from_the_schema():
    page = ROOT / "docs" / "results-schema.md"
    assert page.read_text(encoding="utf-8") == markdown(), (
        "docs/results-schema.md is stale: run `python scripts/results-schema.py` and commit it"
    )


def test_each_column_is_declared_once_with_a_known_dtype_unit_and_one_line():
    names = [(c.name, f) for c in COLUMNS for f in ("results", "summary") if c.in_file(f)]
    assert len(names) == len(set(names))
    for c in COLUMNS:
        assert c.unit in schema.UNITS, c
        assert c.description and "\n" not in c.description and c.group in schema.GROUPS, c
        assert c.empty in ("never", "unmeasured", "yes") and c.files in ("results", "summary",
                                                                          "both"), c  # fmt: skip
        for f in ("results", "summary"):  # no exact name is also matched by another family
            if c.in_file(f):
                assert column(c.name, f) is c or c.is_family, c


def test_the_column_lists_of_the_code_are_the_schemas():
    assert undeclared(TRIAL_COLUMNS, "results") == []
    assert SUMMARY_METRICS == schema.metrics("trial") and SERVING_METRICS == ["ttft_s_median",
           "ttft_s_p90", "itl_s_median", "itl_s_p90", "itl_per_request_s_mean",
           "itl_per_request_s_median", "itl_per_request_s_p90",
           "itl_per_request_s_p99"]  # fmt: skip
    stats = [f"{m}_{s}" for m in SUMMARY_METRICS + SERVING_METRICS for s in schema.STAT_SUFFIXES]
    assert undeclared(stats, "summary") == [] and undeclared(stats, "results") == stats
    from tokenwatt.analysis.carbon import CARBON_COLUMNS
    from tokenwatt.analysis.energy_model import PLAUSIBILITY_COLUMNS
    from tokenwatt.analysis.floor import FLOOR_COLUMNS
    from tokenwatt.runner.boards import PER_BOARD_SUMMARY, PER_BOARD_TRIAL
    from tokenwatt.runner.contention import COLUMNS as CONTENTION

    for names in (CARBON_COLUMNS, FLOOR_COLUMNS, PLAUSIBILITY_COLUMNS, CONTENTION):
        assert undeclared(names, "results") == []
    assert undeclared([f"board7_{n}" for n in PER_BOARD_TRIAL], "results") == []
    assert undeclared([f"board7_{n}_mean" for n in PER_BOARD_SUMMARY], "summary") == []


def test_lookup_by_exact_name_family_and_file():
    assert column("decode_j_per_token", "results").unit == "J/token"
    assert column("decode_j_per_token", "summary") is None  # the summary has its statistics
    assert column("decode_j_per_token_ci95_low", "summary.csv").unit == "J/token"
    assert column("decode_j_per_token_cv", "summary").unit == "fraction"
    assert column("board12_total_j", "results").name == "board{i}_total_j"
    assert column("boardx_total_j", "results") is None
    assert column("routing_prefill_tokens_per_expert", "summary").dtype == "json"
    assert undeclared(["run_id", "board0_idle_power_w", "nonsense"], "summary") == ["nonsense"]
    with pytest.raises(ValueError, match="neither results nor summary"):
        column("run_id", "run.json")


def test_pandas_dtypes_follow_whether_a_cell_may_be_empty():
    got = pandas_dtypes(["trial", "batch_size", "measured", "timestamp_utc", "engine_settings",
                         "n_trials", "total_j", "undeclared"], "results")  # fmt: skip
    assert got == {"trial": "Int64", "batch_size": "int64", "measured": "boolean",
                   "timestamp_utc": "datetime64[us, UTC]", "engine_settings": "str",
                   "total_j": "float64"}  # fmt: skip
    # summary.csv has no failed or degraded rows: a count there is never empty
    assert pandas_dtypes(["repetitions", "n_trials"], "summary") == {
        "repetitions": "int64",
        "n_trials": "int64",
    }


# --- real writers emit only declared columns -----------------------------------------------


def _headers(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        return next(csv.reader(f))


def _folder_columns(folder: Path) -> dict[str, set[str]]:
    return {kind: set(_headers(folder / f"{kind}.csv")) for kind in ("results", "summary")
            if (folder / f"{kind}.csv").is_file()}  # fmt: skip


def _run(out: Path, **kw) -> None:
    from tokenwatt.config import RunConfig
    from tokenwatt.runner.run import run_config

    fast = {"warmup": 0, "repeats": 2, "min_seconds": 0.0, "idle_seconds": 0.2}
    cfg = RunConfig.model_validate({
        "model": "preset:tiny-llama", "precision": "fp32", "device": "cpu", "out": str(out),
        "workload": {"prompt_tokens": 8, "new_tokens": 6, **kw.pop("workload", {})},
        "measure": {"meter": "estimate", **fast, **kw.pop("measure", {})},
        "fidelity": {"enabled": False}, **kw,
    })  # fmt: skip
    run_config(cfg)


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """The columns real writers emit: a transformers run (MoE, fidelity, carbon), two
    simulated NVML boards, a served run against the fake OpenAI server (its last trial
    degraded), a failed sweep row."""
    from tokenwatt.sim import nvml as sim

    root = tmp_path_factory.mktemp("writers")
    _run(root / "moe", model="preset:tiny-moe", fidelity={"enabled": True, "sequences": 1,
         "tokens": 8}, carbon={"region": "DEU"})  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TOKENWATT_NVML_MODULE", "tokenwatt.sim.nvml")
        mp.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        sim.configure(2, [61.0, 74.0])
        _run(root / "boards", gpus=2, measure={"meter": "nvml"})
        sim.configure(1, 90.0)
        sys.path.insert(0, str(Path(__file__).parent))
        from fake_openai import FakeOpenAI

        # 1 probe + 2 trials of 6 requests finish; the server dies in the third: degraded
        with FakeOpenAI(delay_s=0.001, kill_after=13) as fake:
            _run(root / "served", engine="openai", gpus=["0"], precision="auto",
                 server={"url": fake.url, "request_timeout_s": 2.0},
                 workload={"batch_size": 2, "requests": 6},
                 measure={"meter": "nvml", "repeats": 3})  # fmt: skip
    _failed_row(root / "failed")
    return {run: root / run for run in ("moe", "boards", "served", "failed")}


@pytest.fixture(scope="module")
def written(folders) -> dict[str, dict[str, set[str]]]:
    return {run: _folder_columns(folder) for run, folder in folders.items()}


def _failed_row(folder: Path) -> None:
    from tokenwatt.config import RunConfig, case_id, config_to_dict
    from tokenwatt.results.store import append_rows
    from tokenwatt.sweep.case import failed_row

    cfg = RunConfig(precision="fp8", device="cpu")
    folder.mkdir()
    spec = {"config": config_to_dict(cfg), "case_id": case_id(cfg)}
    append_rows(folder / "results.csv", [failed_row(spec, "PrecisionUnsupported: no GPU")])


def test_every_column_a_writer_emits_is_declared(written):
    for run, files in written.items():
        for kind, names in files.items():
            assert undeclared(sorted(names), kind) == [], f"{run}: {kind}.csv"
    assert any(n.startswith("routing_decode_") for n in written["moe"]["summary"])
    assert {"board1_prefill_j", "board1_decode_j_per_token_mean"} <= \
        written["boards"]["results"] | written["boards"]["summary"]  # fmt: skip
    assert {"window_s", "ttft_s_p90", "itl_s_median_ci95_high"} <= \
        written["served"]["results"] | written["served"]["summary"]  # fmt: skip


def test_every_declared_column_is_written_somewhere(written):
    """Documented but never written is a stale declaration (families: one member is enough)."""
    seen = {(n, k) for files in written.values() for k, names in files.items() for n in names}
    for folder in ROOT.glob("results/*/"):
        seen |= {(n, k) for k, names in _folder_columns(folder).items() for n in names}
    missing = [c.name for c in COLUMNS if c.name not in NOT_WRITTEN_HERE and not any(
        c.in_file(k) and c.matches(n) for n, k in seen)]  # fmt: skip
    assert missing == []


def test_written_folders_load_with_the_declared_dtypes(folders):
    for run, folder in folders.items():
        for kind in _folder_columns(folder):
            df = load_results(folder, summary=kind == "summary")
            want = pandas_dtypes(df.columns, kind)
            assert {c: str(df[c].dtype) for c in want} == want, f"{run}: {kind}.csv"


@pytest.mark.parametrize("folder", sorted(ROOT.glob("results/*/")), ids=lambda p: p.name)
def test_published_folders_carry_only_declared_columns(folder):
    for kind, names in _folder_columns(folder).items():
        assert undeclared(sorted(names), kind) == [], f"{folder.name}/{kind}.csv"


# --- loading: dtypes, versions, migrations --------------------------------------------------


def test_migrations_cover_every_bump():
    for v in range(1, SCHEMA_VERSION):
        assert any(m.version == v and m.to == v + 1 for m in MIGRATIONS), f"no {v} -> {v + 1}"
    assert all(m.to in (m.version, m.version + 1) for m in MIGRATIONS)


def test_a_folder_from_before_engines_loads_with_todays_names_and_dtypes(tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(OLD_FOLDER, folder)
    assert "flags" in _headers(folder / "summary.csv") and "engine" not in _headers(
        folder / "results.csv")  # fmt: skip
    trials, summary = load_results(folder), load_results(folder, summary=True)
    assert "flags" not in summary and summary["summary_flags"].tolist() == [
        "cv>5%;estimate",
        "cv>5%;estimate",
    ]
    for df, kind in ((trials, "results"), (summary, "summary")):
        assert undeclared([c for c in df.columns if c != "results_dir"], kind) == []
        want = pandas_dtypes(df.columns, kind)
        assert {c: str(df[c].dtype) for c in want} == want
    assert trials["trial"].iloc[-2] == 2 and trials["trial"].iloc[-1] is pd.NA  # a failed row
    assert trials["status"].tolist()[-1] == "failed" and pd.isna(trials["measured"].iloc[-1])
    assert str(trials["timestamp_utc"].dt.tz) == "UTC"
    assert (trials["schema_version"] == SCHEMA_VERSION).all()


def test_an_id_that_looks_like_a_number_stays_text(tmp_path):
    from tokenwatt.results.store import append_rows

    append_rows(tmp_path / "results.csv", [{"run_id": "r", "case_id": "1234e5678901",
                                            "trial": 0, "measured": "True"}])  # fmt: skip
    df = load_results(tmp_path)
    assert df["case_id"].tolist() == ["1234e5678901"] and df["measured"].tolist() == [True]


def test_a_newer_version_is_refused_in_one_line(tmp_path):
    from tokenwatt.errors import UserError
    from tokenwatt.results.store import append_rows

    append_rows(tmp_path / "results.csv", [{"run_id": "r"}])
    df = pd.read_csv(tmp_path / "results.csv")
    df["schema_version"] = SCHEMA_VERSION + 1
    df.to_csv(tmp_path / "results.csv", index=False)
    with pytest.raises(UserError, match="newer than this tokenwatt reads") as e:
        load_results(tmp_path)
    assert "\n" not in str(e.value)
