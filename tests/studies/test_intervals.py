"""Wilson and bootstrap intervals: known values, edge cases, determinism."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from llmbio.studies.intervals import BOOTSTRAP, NONE, WILSON, bootstrap, interval, wilson

# Wilson 95% score intervals (Newcombe 1998, method 3), to 4 decimals
KNOWN = [
    (0, 12, 0.0, 0.2425),
    (12, 12, 0.7575, 1.0),
    (11, 12, 0.6461, 0.9851),
    (45, 100, 0.3561, 0.5476),
    (81, 263, 0.2553, 0.3662),
]


@pytest.mark.parametrize("k, n, low, high", KNOWN)
def test_wilson_matches_the_reference_values(k, n, low, high):
    assert wilson(k, n) == pytest.approx((low, high), abs=5e-5)


@pytest.mark.parametrize("k, n", [(0, 1), (1, 1), (3, 7), (29, 30), (400, 400), (655, 1000)])
def test_wilson_matches_scipy(k, n):
    ref = binomtest(k, n).proportion_ci(0.95, method="wilson")
    assert wilson(k, n) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_refuses_impossible_counts():
    for k, n in [(1, 0), (-1, 5), (6, 5)]:
        with pytest.raises(ValueError, match="0 <= successes <= n"):
            wilson(k, n)


def test_bootstrap_is_deterministic_and_seeded():
    values = np.random.default_rng(3).normal(size=40)
    first = bootstrap(values, "median")
    assert bootstrap(values, "median") == first
    assert bootstrap(values, "median", seed=1) != first
    low, high = first
    assert low < np.median(values) < high
    assert bootstrap(np.full(5, 2.5), "mean") == (2.5, 2.5)


def test_bootstrap_of_a_mean_narrows_like_one_over_root_n():
    rng = np.random.default_rng(0)
    small = np.subtract(*bootstrap(rng.normal(size=25), "mean")[::-1])
    large = np.subtract(*bootstrap(rng.normal(size=2500), "mean")[::-1])
    # a normal's 95% interval of the mean is 3.92 / sqrt(n) wide
    assert small == pytest.approx(3.92 / 5, rel=0.25)
    assert large == pytest.approx(3.92 / 50, rel=0.1)


def test_each_aggregate_gets_its_interval():
    shares = pd.Series([True, False, True, None], dtype="boolean")
    assert interval(shares, "share_true")[:2] == (WILSON, 3)
    assert interval(shares, "share_true")[2:] == pytest.approx(wilson(2, 3))
    assert interval(pd.Series([1.0, 2.0, 4.0]), "median").method == BOOTSTRAP
    for aggregate, n in [("sum", 3), ("max", 3), ("count", 3), ("first", 1), ("min", 3)]:
        ci = interval(pd.Series([1.0, 2.0, 4.0]), aggregate)
        assert (ci.method, ci.n) == (NONE, n) and math.isnan(ci.low) and math.isnan(ci.high)
    assert interval(pd.Series([0.7]), "mean").method == NONE  # one row: nothing to resample
