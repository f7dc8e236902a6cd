import math
import random

import pytest
from scipy import stats as sps

from tokenwatt.analysis.stats import describe, paired_ratio_ci, t95


def test_describe_matches_hand_computation():
    d = describe([1.0, 2.0, 3.0, 4.0])
    assert d["mean"] == 2.5
    assert math.isclose(d["std"], math.sqrt(5 / 3))
    half = 3.182446305284263 * math.sqrt(5 / 3) / 2  # t(0.975, df=3), exact
    assert math.isclose(d["ci95_low"], 2.5 - half)
    assert math.isclose(d["cv"], math.sqrt(5 / 3) / 2.5)


@pytest.mark.parametrize("df", [1, 2, 5, 29, 30, 31, 45, 100, 1000, 3.7])
def test_t_quantile_is_exact_at_every_df(df):
    # The hand table stopped at 30 and used 1.96 beyond: 2.02 at df=40, 3% narrow.
    assert t95(df) == pytest.approx(sps.t.ppf(0.975, df), rel=1e-12)
    assert t95(40) > 2.0


def test_positive_quantity_interval_is_on_the_log_scale_and_never_negative():
    xs = [0.1, 3.0, 0.2]  # a skewed positive sample: the linear interval goes below zero
    lin, log = describe(xs), describe(xs, positive=True)
    assert lin["ci95_low"] < 0
    assert 0 < log["ci95_low"] < log["mean"] < log["ci95_high"]
    half = t95(2) * log["cv"] / math.sqrt(3)
    assert log["ci95_low"] == pytest.approx(log["mean"] * math.exp(-half))
    assert log["ci95_low"] * log["ci95_high"] == pytest.approx(log["mean"] ** 2)
    # a negative value shows the quantity is not positive: the linear interval is kept
    assert (
        describe([-1.0, 1.0, 2.0], positive=True)["ci95_low"]
        == describe([-1.0, 1.0, 2.0])["ci95_low"]
    )


def test_log_interval_covers_the_mean_about_95_percent():
    rng = random.Random(3)
    hits, sims = 0, 3000
    for _ in range(sims):
        d = describe([rng.lognormvariate(0, 0.1) for _ in range(5)], positive=True)
        hits += d["ci95_low"] <= math.exp(0.005) <= d["ci95_high"]
    assert 0.92 <= hits / sims <= 0.975


def test_single_value_has_no_spread():
    d = describe([5.0])
    assert d["mean"] == 5.0 and math.isnan(d["std"]) and d["n"] == 1
    assert math.isnan(describe([5.0], positive=True)["ci95_low"])


def test_paired_ratio_cancels_drift_shared_by_a_pair():
    drift = [1.0, 1.5, 0.7, 1.2]  # the machine's state, round by round
    a = [1.3 * d * (1 + e) for d, e in zip(drift, (0.01, -0.01, 0.0, 0.005))]
    b = [1.0 * d for d in drift]
    r, lo, hi = paired_ratio_ci(a, b)
    assert r == pytest.approx(1.3, rel=0.01) and lo < 1.3 < hi and hi / lo < 1.05
    assert all(math.isnan(x) for x in paired_ratio_ci([1.0, -1.0], [1.0, 1.0]))
    assert math.isnan(paired_ratio_ci([1.0], [2.0])[1])
