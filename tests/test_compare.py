"""compare: the ratio CI maths, baseline pairing, filtering, and the CLI outputs."""

import math
import random

import pandas as pd
import pytest
from scipy import stats as sps
from synth_results import write_folder

from tokenwatt.analysis.compare import compare, ok_trials, ratio_ci
from tokenwatt.errors import UserError
from tokenwatt.results.load import load_results, load_summary


def test_ratio_ci_matches_hand_computed_delta_method():
    a, b = [2.0, 2.2, 1.8, 2.1, 1.9], [1.0, 1.1, 0.9, 1.0, 1.0]
    r, lo, hi = ratio_ci(a, b)
    ma, mb = 2.0, 1.0
    va = (sum((x - ma) ** 2 for x in a) / 4) / (5 * ma**2)
    vb = (sum((x - mb) ** 2 for x in b) / 4) / (5 * mb**2)
    df = (va + vb) ** 2 / (va**2 / 4 + vb**2 / 4)
    assert 7 < df < 8  # Welch df is fractional: the exact t quantile at it, not at floor(df)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert r == pytest.approx(2.0)
    assert lo == pytest.approx(2.0 * math.exp(-half))
    assert hi == pytest.approx(2.0 * math.exp(half))
    assert lo * hi == pytest.approx(r * r)  # symmetric on the log scale


def test_ratio_ci_covers_the_true_ratio_about_95_percent():
    rng = random.Random(1)
    true, hits, sims = 1.3, 0, 2000
    for _ in range(sims):
        a = [1.3 * (1 + rng.gauss(0, 0.05)) for _ in range(5)]
        b = [1.0 * (1 + rng.gauss(0, 0.08)) for _ in range(4)]
        _, lo, hi = ratio_ci(a, b)
        hits += lo <= true <= hi
    assert 0.92 <= hits / sims <= 0.975


def test_ratio_ci_undefined_cases():
    assert math.isnan(ratio_ci([1.0], [1.0, 1.1])[1])  # one trial: no CI
    r, lo, _ = ratio_ci([-1.0, -2.0], [1.0, 1.1])  # negative mean: no log ratio
    assert r < 0 and math.isnan(lo)
    assert ratio_ci([2.0, 2.0], [1.0, 1.0]) == (2.0, 2.0, 2.0)  # no spread at all
    assert all(math.isnan(x) for x in ratio_ci([], [1.0]))


CASES = [
    {
        "case_id": "a1",
        "precision": "bf16",
        "batch_size": 1,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 1.0,
        "tokens_per_s": 100,
        "top1": 1.0,
        "kl": 0.0,
    },
    {
        "case_id": "a2",
        "precision": "int8-weight",
        "batch_size": 1,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 0.6,
        "tokens_per_s": 150,
        "top1": 0.97,
        "kl": 0.01,
    },
    {
        "case_id": "b1",
        "precision": "bf16",
        "batch_size": 4,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 0.5,
        "tokens_per_s": 300,
    },
    {
        "case_id": "b2",
        "precision": "int8-weight",
        "batch_size": 4,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 0.4,
        "tokens_per_s": 330,
    },
    {
        "case_id": "c2",
        "precision": "int8-weight",
        "batch_size": 16,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 0.2,
    },
    {
        "case_id": "x",
        "precision": "fp32",
        "batch_size": 1,
        "prompt_tokens": 8,
        "new_tokens": 6,
        "decode_j_per_token": 9.0,
        "complete": False,
    },
]


@pytest.fixture
def folder(tmp_path):
    failed = [{"case_id": "f", "precision": "fp8", "error": "PrecisionUnsupported: no"}]
    return write_folder(tmp_path / "res", [dict(c) for c in CASES], failed=failed)


def _trials(folder):
    return ok_trials(load_results(folder), load_summary(folder))


def test_ok_trials_drop_failed_rows_and_incomplete_runs(folder):
    t = _trials(folder)
    assert set(t["case_id"]) == {"a1", "a2", "b1", "b2", "c2"}
    assert (t["batch_size"].isin(["1", "4", "16"])).all()  # keys normalised to text
    # one request = one sequence of one repetition: the trial's joules over batch x repetitions
    per_request = t["total_j"].astype(float) / (t["batch_size"].astype(int) * t["repetitions"])
    assert t["j_per_request"].to_numpy() == pytest.approx(per_request.to_numpy())
    row = t[t["case_id"] == "b1"].iloc[0]  # synthetic: prefill 0.5 J + decode 0.5 J/token x 4 x 5
    assert row["j_per_request"] == pytest.approx((0.5 + 0.5 * 4 * 5) / 4, rel=0.1)


def test_compare_pairs_each_case_with_its_own_baseline(folder):
    table = compare(_trials(folder), "precision", "bf16")
    assert list(table["batch_size"]) == ["1", "4"]
    r1 = table.set_index("batch_size").loc["1"]
    assert r1["ratio"] == pytest.approx(0.6, rel=0.05)
    assert r1["ratio_ci95_low"] < r1["ratio"] < r1["ratio_ci95_high"]
    assert r1["tokens_per_s_ratio"] == pytest.approx(1.5, rel=0.05)
    assert r1["top1_agreement"] == pytest.approx(0.97)
    assert table.set_index("batch_size").loc["4"]["ratio"] == pytest.approx(0.8, rel=0.06)
    assert any("batch_size=16" in m for m in table.attrs["missing"])
    assert not table.attrs["measured"]


def test_compare_by_batch_size(folder):
    table = compare(_trials(folder), "batch_size", "1")
    got = {(r.precision, r.batch_size): r.ratio for r in table.itertuples()}
    assert got[("bf16", "4")] == pytest.approx(0.5, rel=0.06)
    assert got[("int8-weight", "16")] == pytest.approx(0.2 / 0.6, rel=0.06)


def test_compare_rejects_unknown_key_value_and_metric(folder):
    t = _trials(folder)
    with pytest.raises(UserError, match="unknown key 'prec'"):
        compare(t, "prec", "bf16")
    with pytest.raises(UserError, match="values: bf16, int8-weight"):
        compare(t, "precision", "fp16")
    with pytest.raises(UserError, match="--metric"):
        compare(t, "precision", "bf16", metric="nope")


def test_compare_cli_writes_table_markdown_and_csv(folder, tmp_path, invoke):
    md, csv = tmp_path / "c.md", tmp_path / "c.csv"
    r = invoke(
        "compare",
        str(folder),
        "--baseline",
        "precision=bf16",
        "--markdown",
        str(md),
        "--csv",
        str(csv),
    )
    assert r.exit_code == 0, r.output
    assert "ratio" in r.output and "ESTIMATE" in r.output
    text = md.read_text()
    assert text.startswith("| precision | batch_size | decode J/token (estimate) |")
    assert "delta method" in text
    df = pd.read_csv(csv)
    assert len(df) == 2 and {"ratio", "ratio_ci95_low", "tokens_per_s_ratio"} <= set(df.columns)


def test_compare_cli_bad_baseline_is_one_line(folder, invoke):
    r = invoke("compare", str(folder), "--baseline", "precision")
    assert r.exit_code == 2
    assert r.output.strip().count("\n") == 0 and "KEY=VALUE" in r.output


def test_compare_combines_folders(tmp_path):
    from tokenwatt.report.comparison import compare_folders

    a = write_folder(tmp_path / "a", [dict(CASES[0])], seed=1)
    b = write_folder(tmp_path / "b", [dict(CASES[1])], seed=2)
    table = compare_folders([str(a), str(b)], "precision", "bf16", "decode_j_per_token")
    assert len(table) == 1 and table.loc[0, "ratio"] == pytest.approx(0.6, rel=0.05)


def _runs(case_id, precision, mean, shifts, **kw):
    """One case measured in several runs (fresh processes), each shifted by run-to-run noise."""
    return [dict(case_id=case_id, run_id=f"2025-01-0{i + 1}T00-{case_id}", precision=precision,
                 batch_size=1, prompt_tokens=8, new_tokens=6, decode_j_per_token=mean,
                 run_shift=s, cv=0.01, **kw) for i, s in enumerate(shifts)]  # fmt: skip


def test_compare_aggregates_per_run_and_pairs_rounds(tmp_path):
    drift = [0.10, -0.08, 0.02]  # shared by the two cases of a round (interleaved sweep)
    cases = _runs("q", "int8-weight", 0.6, drift) + _runs("b", "bf16", 1.0, drift)
    folder = write_folder(tmp_path / "r", cases)
    row = compare(_trials(folder), "precision", "bf16").iloc[0]
    assert (row["n_runs"], row["n_trials"], row["baseline_n_runs"]) == (3, 15, 3)
    assert row["ci_basis"] == "paired runs"
    assert row["ratio_ci95_low"] < 0.6 < row["ratio_ci95_high"]
    # the drift cancels in pairs: the interval is narrow although runs differ by 18%
    assert row["ratio_ci95_high"] / row["ratio_ci95_low"] < 1.1


def test_compare_intervals_rest_on_runs_not_trials(tmp_path):
    # runs differ by +-10% while trials inside a run differ by 1%: pooling trials would claim
    # a precision 10x too good; per-run means show the real spread
    a = _runs("q", "int8-weight", 0.6, [0.1, -0.1, 0.0, 0.05])
    b = _runs("b", "bf16", 1.0, [-0.1, 0.1, 0.0])
    folder = write_folder(tmp_path / "r", a + b)
    row = compare(_trials(folder), "precision", "bf16").iloc[0]
    assert row["ci_basis"] == "runs" and (row["n_runs"], row["baseline_n_runs"]) == (4, 3)
    pooled = ratio_ci(
        _trials(folder).query("precision == 'int8-weight'")["decode_j_per_token"],
        _trials(folder).query("precision == 'bf16'")["decode_j_per_token"],
    )
    assert (row["ratio_ci95_high"] - row["ratio_ci95_low"]) > 3 * (pooled[2] - pooled[1])


def test_a_single_run_says_its_interval_is_within_process(folder):
    table = compare(_trials(folder), "precision", "bf16")
    assert set(table["ci_basis"]) == {"trials of one run"}
    assert (table["n_runs"] == 1).all() and (table["n_trials"] == 5).all()
    from tokenwatt.report.comparison import comparison_markdown

    assert "single run" in comparison_markdown(table)


def test_compare_refuses_to_mix_expert_implementations(tmp_path):
    q = dict(CASES[1], experts_impl="tokenwatt-loop")
    b = dict(CASES[0], experts_impl="transformers-grouped_mm")
    folder = write_folder(tmp_path / "m", [q, b])
    with pytest.raises(UserError, match="--allow-mixed-impl"):
        compare(_trials(folder), "precision", "bf16")
    table = compare(_trials(folder), "precision", "bf16", allow_mixed_impl=True)
    assert bool(table.iloc[0]["mixed_impl"]) and table.iloc[0]["ratio"] == pytest.approx(0.6, 0.05)
    from tokenwatt.report.comparison import display_rows

    _, rows = display_rows(table)
    assert "tokenwatt-loop vs transformers-grouped_mm" in " ".join(rows[0])
    same = write_folder(tmp_path / "s", [dict(q), dict(b, experts_impl="tokenwatt-loop")])
    assert not compare(_trials(same), "precision", "bf16").iloc[0]["mixed_impl"]
