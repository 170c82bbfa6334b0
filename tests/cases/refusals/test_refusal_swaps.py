import pandas as pd

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
