"""Calibrated swaps: the one calibration loop of every study that swaps a supernode.

The paper's swaps (a few features, fixed multipliers) move few answers on a small organism, so
each swap study (multihop states, refusal requests, poem plans, multilingual operations,
operands and languages) treats the paper's edit as one cell of a grid and calibrates:

1. :func:`calibration_grid`: supernode sizes ``k`` ascending; at each ``k`` every *option* (the
   study's other axes: edit form, feature selection, edit site, direction) is tried on the
   calibration items only, and the grid stops after the first ``k`` at which an option
   reaches the success bar;
2. :func:`choose`: the smallest such ``k`` and its most successful option
   (:func:`best_calibration`), marked in the grid's ``chosen`` column;
3. the study runs the chosen edit on every item, each with a *control*: as many random
   features (:func:`random_features`), drawn among those active on the recipient or donor
   outside the supernodes, in the same form.

What a study supplies are its pieces: how a supernode of size ``k`` is ranked, how an option's
edits are built and what counts as success on one item.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from llmbio.figures import FIGURE_SEED

Measure = Mapping[str, Any]
"""One grid cell's result: ``n_cases``, ``mean_features`` and ``success_rate``."""


def calibration_grid(
    sizes: Iterable[int],
    options: Sequence[Mapping[str, Any]],
    evaluate: Callable[..., Measure | None],
    bar: float,
    *,
    joint: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    whole_grid: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row ``{**option, "k": k, **evaluate(k, **option)}`` per size and option (sizes
    outer, in order; ``None`` from ``evaluate``: no row), stopping after the first size at
    which some row, or some row of ``joint(grid)`` (e.g. the weaker of two directions),
    reaches ``bar``; ``whole_grid`` runs every size anyway."""
    rows: list[dict] = []
    for k in sizes:
        for option in options:
            measure = evaluate(k, **option)
            if measure is not None:
                rows.append({**option, "k": k, **measure})
        grid = pd.DataFrame(rows)
        reached = (joint(grid) if joint is not None else grid).get("success_rate")
        if not whole_grid and reached is not None and reached.max() >= bar:
            break
    return pd.DataFrame(rows, columns=columns)


def best_calibration(grid: pd.DataFrame, bar: float) -> pd.Series:
    """The row a calibration keeps from ``grid`` (columns ``k``, ``success_rate`` and the
    alternatives tried at each ``k``, e.g. ``form``): the smallest ``k`` at which some row
    reaches ``bar``, its most successful one; if none does, the most successful row, smaller
    ``k`` first. Ties keep the grid's order."""
    ok = grid[grid["success_rate"] >= bar]
    if len(ok):
        return ok.sort_values(["k", "success_rate"], ascending=[True, False], kind="stable").iloc[0]
    return grid.sort_values(["success_rate", "k"], ascending=[False, True], kind="stable").iloc[0]


def choose(
    grid: pd.DataFrame, bar: float, axes: Sequence[str], among: pd.DataFrame | None = None
) -> pd.Series:
    """The chosen cell (:func:`best_calibration` of ``among``, default ``grid``); the grid's
    ``chosen`` column marks its rows: those equal to it on every one of ``axes``."""
    best = best_calibration(grid if among is None else among, bar)
    grid["chosen"] = functools.reduce(operator.and_, [grid[a] == best[a] for a in axes])
    return best


def random_features(
    acts: Iterable[torch.Tensor],
    exclude: Iterable[tuple[int, int]],
    n: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """A control's features: ``n`` (at most as many as there are) ``(layer, feature)`` drawn
    without replacement among those active after BOS in any of ``acts`` (``(L, n_pos, F)``
    each: the recipient's and the donor's activations) and not in ``exclude``."""
    active = set()
    for a in acts:
        active |= {(int(la), int(f)) for la, f in (a[:, 1:].amax(1) > 0).nonzero().tolist()}
    pool = sorted(active - set(exclude))
    n = min(n, len(pool))
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def plot_calibration(
    ax, grid: pd.DataFrame, hue: str = "form", bar: float = 0.9, style: str | None = None, **labels
):
    """Success rate against supernode size ``k`` (log2 axis), one line per ``hue`` (and
    ``style``, dashes); the chosen point (``chosen`` column) circled in red, the calibration's
    bar dashed. ``labels`` go to ``ax.set`` (xlabel, ylabel, title)."""
    import seaborn as sns

    sns.lineplot(data=grid, x="k", y="success_rate", hue=hue, style=style, marker="o", ax=ax,
                 seed=FIGURE_SEED)  # fmt: skip
    chosen = grid[grid["chosen"]]
    ax.scatter(chosen["k"], chosen["success_rate"], s=160, facecolors="none", edgecolors="red")
    ax.axhline(bar, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set(ylim=(-0.02, 1.02), **{"xlabel": "supernode size k", **labels})
