"""95% intervals for the rates and averages claims are judged on.

A share of true rows (``share_true``) gets a Wilson score interval: unlike the normal
approximation it stays inside [0, 1] and is not empty at 0 or n successes, which is where small
cells of swap successes and control flips land. A mean or median gets a percentile bootstrap
over the selected rows, seeded so that the same table always gives the same interval. A sum,
count, minimum, maximum or single value has no interval (method ``none``): it is no estimate of
a rate, or there is nothing to resample.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

LEVEL = 0.95
Z = 1.959963984540054  # the standard normal's 97.5% quantile
BOOTSTRAP_RESAMPLES = 4000
BOOTSTRAP_SEED = 0
_CHUNK = 500  # resamples drawn at once: bounds the memory of large tables

WILSON, BOOTSTRAP, NONE = "wilson", "bootstrap", "none"


class Interval(NamedTuple):
    """A 95% interval (``low``/``high`` NaN when ``method`` is ``none``) over ``n`` values."""

    method: str
    n: int
    low: float = math.nan
    high: float = math.nan


def wilson(successes: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of ``successes`` out of ``n`` (n > 0)."""
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson needs 0 <= successes <= n and n > 0; got {successes}/{n}")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at 0 or n successes the bound is exactly 0 or 1; rounding must not move it
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def bootstrap(
    values: np.ndarray,
    statistic: str,
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> tuple[float, float]:
    """The percentile bootstrap interval of ``statistic`` (``mean`` or ``median``) of ``values``.

    Rows are resampled with replacement ``resamples`` times from a generator seeded with
    ``seed``; the interval is the 2.5% and 97.5% quantiles of the resampled statistics.
    """
    reduce = {"mean": np.mean, "median": np.median}[statistic]
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    stats = []
    for start in range(0, resamples, _CHUNK):
        rows = rng.integers(0, len(values), size=(min(_CHUNK, resamples - start), len(values)))
        stats.append(reduce(values[rows], axis=1))
    low, high = np.quantile(np.concatenate(stats), [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return float(low), float(high)


def method_of(aggregate: str) -> str:
    """The interval an aggregate gets (given enough rows): Wilson, bootstrap or none."""
    return {"share_true": WILSON, "mean": BOOTSTRAP, "median": BOOTSTRAP}.get(aggregate, NONE)


def interval(values: pd.Series, aggregate: str) -> Interval:
    """The interval of ``aggregate`` over ``values`` (the claim's selected column)."""
    if aggregate == "share_true":
        known = values.dropna().astype(float)
        n = len(known)
        return Interval(WILSON, n, *wilson(int(known.sum()), n)) if n else Interval(NONE, 0)
    if aggregate in ("mean", "median") and len(values) >= 2:
        return Interval(BOOTSTRAP, len(values), *bootstrap(values.to_numpy(), aggregate))
    return Interval(NONE, 1 if aggregate == "first" else int(values.notna().sum()))
