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


def model_runs(n_features: int = 200) -> tuple:
    """A tiny Llama, a random CLT and four 'cities' of random tokens through them."""
    from tiny_models import random_clt, tiny_model

    from llmbio.interventions.batched import run_batch

    model, clt = tiny_model("llama"), random_clt(n_features=n_features)
    ids = torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = run_batch(model, clt, ids, record_activations=True)
    probs = out.logits[:, -1].float().softmax(-1)
    runs = ms.CityRuns(["a1", "a2", "b1", "b2"], ids, [3] * 4, out.activations,
                       probs.argmax(-1).tolist(), probs)  # fmt: skip
    return model, clt, runs


@pytest.mark.parametrize("form", ["copy_x2", "max2x"])
def test_matched_control_has_the_swaps_size_and_form_and_a_matched_norm(form):
    from llmbio.studies.swaps import NORM_TOLERANCE, active_features, write_norm

    model, clt, runs = model_runs()
    active = sorted(active_features([runs.acts[0], runs.acts[2]]))
    swap = ms.Swap(0, 2, tuple(active[:6]), tuple(active[4:10]))  # two members shared
    ctl, ratio = ms.matched_swap(clt, runs, swap, form, np.random.default_rng(0))
    assert len(ctl.removed) == len(swap.removed) and len(ctl.added) == len(swap.added)
    assert len(set(ctl.removed) | set(ctl.added)) == len(set(swap.removed) | set(swap.added))
    assert not (set(ctl.removed) | set(ctl.added)) & (set(swap.removed) | set(swap.added))
    assert (ctl.positions, ctl.held) == (swap.positions, swap.held)
    assert 1 / (1 + NORM_TOLERANCE) <= ratio <= 1 + NORM_TOLERANCE
    norms = [write_norm(clt, runs.acts[0], ms.swap_edits(runs, s, form)) for s in (swap, ctl)]
    assert norms[1] / norms[0] == pytest.approx(ratio)
    probs = ms.swap_outcomes(model, clt, runs, [swap, ctl], form)
    assert probs.shape[0] == 2 and torch.isfinite(probs).all()


def test_complement_edits_every_other_feature_before_the_last_position_and_holds_the_rest():
    _, clt, runs = model_runs()
    active = sorted(active_features_at(runs, 3))
    swap = ms.Swap(0, 2, tuple(active[:3]), tuple(active[3:6]))
    comp = ms.complement_swap(runs, swap)
    moved = set(comp.removed) | set(comp.added)
    assert comp.positions == (3, 4) and set(comp.held) == set(active[:6])
    assert moved == set(active_features_at(runs, 3, 4)) - set(active[:6])
    edits = ms.swap_edits(runs, comp, "copy_x2")
    held = [e for e in edits if e.name == "held"]
    assert [e.positions for e in held] == [(3,), (4,), (5,)]
    assert held[0].value == 1.0 and held[0].donor == pytest.approx(
        [float(runs.acts[0, la, 3, f]) for la, f in comp.held]
    )


def active_features_at(runs, *positions) -> set:
    from llmbio.studies.swaps import active_features

    return active_features([runs.acts[0], runs.acts[2]], positions)
