"""The calibration loop the swap studies share (multihop, refusals, poems, multilingual)."""

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import random_clt

from llmbio.interventions import Edit
from llmbio.studies.swaps import (
    activation_changes,
    best_calibration,
    calibration_grid,
    choose,
    complement,
    feature_write_norms,
    matched_random,
    random_features,
    same_class_donor,
    write_norm,
)


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


def _success(k: int, form: str) -> dict | None:
    if form == "skip":
        return None
    rate = {"a": k / 40, "b": k / 20}[form]
    return {"n_cases": 10, "mean_features": float(k), "success_rate": rate}


def test_grid_stops_after_the_first_size_at_the_bar_and_marks_the_choice():
    options = [{"form": f} for f in ("a", "skip", "b")]
    grid = calibration_grid((8, 16, 32, 64), options, _success, 0.75)
    assert grid[["form", "k"]].values.tolist() == [["a", 8], ["b", 8], ["a", 16], ["b", 16]]
    assert list(grid.columns) == ["form", "k", "n_cases", "mean_features", "success_rate"]
    best = choose(grid, 0.75, ["form", "k"])
    assert (best["form"], best["k"]) == ("b", 16)
    assert grid["chosen"].tolist() == [False, False, False, True]
    whole = calibration_grid((8, 16, 32, 64), options, _success, 0.75, whole_grid=True)
    assert len(whole) == 8


def test_a_joint_criterion_waits_for_every_row_of_a_cell():
    options = [{"form": f} for f in ("a", "b")]
    weaker = lambda grid: grid.groupby("k", as_index=False)["success_rate"].min()  # noqa: E731
    grid = calibration_grid((8, 16, 32), options, _success, 0.75, joint=weaker)
    assert grid["k"].max() == 32  # "b" reaches 0.75 at 16, "a" only at 32


def test_control_draws_active_features_outside_the_supernodes():
    acts = torch.zeros(2, 3, 4)  # (L, n, F)
    acts[0, 1, 0] = acts[0, 2, 1] = acts[1, 1, 2] = 1.0
    acts[1, 0, 3] = 5.0  # BOS only: not active
    rng = np.random.default_rng(0)
    picked = random_features([acts, torch.zeros_like(acts)], {(0, 0)}, 5, rng)
    assert sorted(picked) == [(0, 1), (1, 2)]


def test_write_norm_is_the_decoder_write_of_the_activation_change():
    clt = random_clt(n_layers=3, d_model=8, n_features=6)
    acts = torch.rand(3, 4, 6, dtype=torch.float64)
    edit = Edit.scale_by([(1, 2)], -2.0, positions=(2,))
    by_hand = 3 * acts[1, 2, 2] * clt.W_dec[1][2].detach().flatten().norm()  # a -> -2a
    assert write_norm(clt, acts, [edit]) == pytest.approx(float(by_hand))
    assert feature_write_norms(clt, acts, [edit]) == {(1, 2): pytest.approx(float(by_hand))}
    inject = Edit.inject([(0, 1), (2, 3)], [1.0, 2.0], 2.0, positions=(1, 3))
    feats, changes = activation_changes(acts, [inject])
    assert feats == [(0, 1), (2, 3)]
    assert changes[1, 3] == pytest.approx(4.0 - float(acts[2, 3, 3]))
    assert changes[:, [0, 2]].abs().sum() == 0


def test_matched_random_draws_members_of_similar_norm_outside_the_supernode():
    members = {(0, i): float(2**i) for i in range(4)}  # norms 1, 2, 4, 8
    pool = {(1, j): 0.5 + 0.25 * j for j in range(40)}  # 0.5 .. 10.25
    norms = {**members, **pool}

    def total(feats):  # orthogonal writes
        return float(np.sqrt(sum(norms[f] ** 2 for f in feats)))

    picks, ratio = matched_random(members, pool, total, np.random.default_rng(0))
    assert set(picks) == set(members) and len(set(picks.values())) == len(members)
    assert not set(picks.values()) & set(members)
    for m, f in picks.items():
        assert members[m] / 1.25 <= pool[f] <= members[m] * 1.25
    assert 1 / 1.25 <= ratio <= 1.25


def test_complement_and_same_class_donor():
    acts = torch.zeros(2, 3, 4)
    acts[0, 1, 0] = acts[0, 2, 1] = acts[1, 2, 2] = 1.0
    assert complement([acts], {(0, 0)}, [1, 2]) == [(0, 1), (1, 2)]
    assert complement([acts], set(), [1]) == [(0, 0)]
    classes = {"Dallas": "Texas", "Austin": "Texas", "Houston": "Texas", "Fresno": "CA"}
    assert same_class_donor("Dallas", classes, classes) == "Austin"
    assert same_class_donor("Fresno", classes, classes) is None
