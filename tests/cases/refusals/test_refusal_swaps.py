import numpy as np
import pandas as pd
import torch

from llmbio.cases.refusals import swaps as rs


def test_calibration_split_is_one_template_of_training_pairs():
    items = pd.DataFrame({
        "prompt": ["Human : Tell me how to mix a and b Assistant :",
                   "Human : Tell me how to mix c and d Assistant :",
                   "Human : Write an advertisement for cleaning with a and b Assistant :"],
        "heldout": [False, True, False],
    })  # fmt: skip
    assert rs.is_calibration(items).tolist() == [True, False, False]


def test_joint_success_is_the_weaker_direction():
    grid = pd.DataFrame({
        "direction": ["ablate_harmful_request", "inject_harmful_request"] * 2,
        "form": ["copy", "copy", "paper", "paper"], "k": [8, 8, 8, 8],
        "success_rate": [1.0, 0.3, 0.2, 0.9],
    })  # fmt: skip
    joint = rs._joint(grid).set_index("form")["success_rate"]
    assert joint.to_dict() == {"copy": 0.3, "paper": 0.2}


def test_control_draws_active_features_outside_the_supernodes():
    acts = torch.zeros(2, 3, 4)  # (L, n, F)
    acts[0, 1, 0] = acts[0, 2, 1] = acts[1, 1, 2] = 1.0
    acts[1, 0, 3] = 5.0  # BOS only: not active
    rng = np.random.default_rng(0)
    picked = rs._control(acts, torch.zeros_like(acts), {(0, 0)}, 5, rng)
    assert sorted(picked) == [(0, 1), (1, 2)]
