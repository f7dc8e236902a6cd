import math

from tokenwatt.analysis.stats import describe


def test_describe_matches_hand_computation():
    d = describe([1.0, 2.0, 3.0, 4.0])
    assert d["mean"] == 2.5
    assert math.isclose(d["std"], math.sqrt(5 / 3))
    half = 3.182 * math.sqrt(5 / 3) / 2  # t(0.975, df=3)
    assert math.isclose(d["ci95_low"], 2.5 - half)
    assert math.isclose(d["cv"], math.sqrt(5 / 3) / 2.5)


def test_single_value_has_no_spread():
    d = describe([5.0])
    assert d["mean"] == 5.0 and math.isnan(d["std"]) and d["n"] == 1
