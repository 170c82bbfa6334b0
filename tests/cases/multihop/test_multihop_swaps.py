"""State rankings, swap edits and controls of the multi-hop swap study, on made-up activations."""

import numpy as np
import pytest
import torch

from llmbio.cases.multihop import swaps as ms


def fake_runs() -> ms.CityRuns:
    """Four cities (two per state), 2 layers x 4 features, 3 positions, the city token at 1."""
    acts = torch.zeros(4, 2, 3, 4)
    acts[0:2, 0, 1:, 0] = 1.0  # feature 0/0: state A on both its cities
    acts[2:4, 1, 1:, 2] = 2.0  # feature 1/2: state B on both its cities
    acts[0, 0, 2, 3] = 5.0  # feature 0/3: city a1 only
    acts[:, 1, 1:, 1] = 1.0  # feature 1/1: every city
    ids = torch.arange(12).reshape(4, 3)
    probs = torch.full((4, 5), 0.2)
    return ms.CityRuns(["a1", "a2", "b1", "b2"], ids, [1] * 4, acts, [0] * 4, probs)


CITY_STATE = {"a1": "A", "a2": "A", "b1": "B", "b2": "B"}


def test_rankings_keep_state_features_and_rule_mean_drops_single_city_ones():
    runs = fake_runs()
    by_max = ms.state_rankings(runs, CITY_STATE, list(CITY_STATE), "max")
    by_mean = ms.state_rankings(runs, CITY_STATE, list(CITY_STATE), "mean")
    assert by_max["A"][:2] == ["0/3", "0/0"] and by_max["B"] == ["1/2"]
    assert by_mean["A"] == ["0/3", "0/0"]  # 0/3 on half of A's cities: kept (>= 0.5)
    assert "1/1" not in by_mean["A"] + by_mean["B"]  # no contrast
    with pytest.raises(ValueError, match="unknown ranking rule"):
        ms.state_rankings(runs, CITY_STATE, list(CITY_STATE), "median")


def test_copy_sets_members_to_donor_values_position_by_position():
    runs = fake_runs()
    swap = ms.Swap(0, 2, ((0, 0),), ((1, 2),))
    edits = ms.swap_edits(runs, swap, "copy_x2")
    assert [e.positions for e in edits] == [(1,), (2,)]
    assert edits[0].value == 2.0 and edits[0].donor == (0.0, 2.0)  # A's feature off, B's on


def test_max2x_scales_recipient_and_injects_donor_max():
    runs = fake_runs()
    edits = ms.swap_edits(runs, ms.Swap(0, 2, ((0, 0),), ((1, 2),)), "max2x")
    assert edits[0].kind == "scale" and edits[0].value == -2.0 and edits[0].positions == (1, 2)
    assert edits[1].kind == "inject" and edits[1].donor == (2.0,) and edits[1].value == 2.0


def test_control_draws_as_many_active_features_outside_the_supernodes():
    runs = fake_runs()
    swap = ms.Swap(0, 2, ((0, 0),), ((1, 2),))
    ctl = ms.control_swap(runs, swap, np.random.default_rng(0))
    picked = set(ctl.removed + ctl.added)
    assert len(ctl.removed) == 1 and len(ctl.added) == 1
    assert picked <= {(0, 3), (1, 1)}  # the active features of a1 and b1 outside both nodes
