"""The calibration rule the swap studies share (multihop, refusals, poems)."""

import pandas as pd

from llmbio.studies.experiments import best_calibration


def _grid(rows):
    return pd.DataFrame(rows, columns=["form", "k", "success_rate"])


def test_smallest_k_reaching_the_bar_wins_with_its_best_form():
    grid = _grid([("a", 8, 0.5), ("b", 8, 0.6), ("a", 16, 0.91), ("b", 16, 0.95),
                  ("a", 32, 1.0)])  # fmt: skip
    best = best_calibration(grid, 0.9)
    assert (best["form"], best["k"]) == ("b", 16)


def test_without_a_row_at_the_bar_the_most_successful_wins_smaller_k_on_ties():
    grid = _grid([("a", 8, 0.3), ("b", 16, 0.4), ("a", 32, 0.4), ("b", 32, 0.1)])
    best = best_calibration(grid, 0.9)
    assert (best["form"], best["k"]) == ("b", 16)


def test_ties_at_the_same_k_keep_the_grid_order():
    grid = _grid([("paper", 8, 0.95), ("copy", 8, 0.95)])
    assert best_calibration(grid, 0.9)["form"] == "paper"
