"""Scoring and summarising the graph-derived state supernodes, on made-up tables."""

import numpy as np
import pandas as pd

from llmbio.cases.multihop import graph_derived as gd
from llmbio.features.supernodes import Supernode


def _members() -> pd.DataFrame:
    rows = [("A", 0, 1, 0.5, True), ("A", 0, 2, 0.4, True), ("A", 0, 3, 0.9, False),
            ("B", 1, 1, 0.2, False)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["state", "layer", "feature", "influence", "chosen"])
    return frame.assign(city=frame["state"].str.lower())


def test_scores_against_labels_and_contrast():
    labels = pd.DataFrame({"layer": [0, 0, 1], "feature": [1, 7, 1], "variable": "state",
                           "value": ["A", "A", "B"], "f1": [0.9, 0.9, 0.1]})  # fmt: skip
    graphs = {"A": {(0, 1), (0, 2), (0, 3)}, "B": {(1, 1)}}
    contrast = {"A": Supernode.make("a", [(0, 2), (0, 3)]), "B": None}
    scores = gd.score_states(_members(), graphs, {"A": "a", "B": "b"}, labels, contrast)
    a, b = scores.iloc[0], scores.iloc[1]
    # A: found {0/1, 0/2}; labelled 0/1 (0/7 is outside the graph); contrast 0/2, 0/3
    assert (a["precision"], a["recall"], a["n_truth"]) == (0.5, 1.0, 1)
    assert (a["precision_contrast"], a["recall_contrast"]) == (0.5, 0.5)
    # B: nothing chosen (precision 0, not NaN); its label is below the F1 bar
    assert b["precision"] == 0.0 and b["n_truth"] == 0 and np.isnan(b["recall"])


def test_supernodes_take_the_top_k_chosen_by_influence():
    nodes = gd.supernodes(_members(), k=1)
    assert nodes["A"].features == ((0, 1),) and nodes["B"] is None


def test_summary_gap_per_split():
    graph = pd.DataFrame({"split": ["seen", "seen", "heldout"], "success": [True, False, False]})
    truth = graph.assign(success=True)
    out = gd.summary(graph, truth).set_index("split")
    assert out.loc["all", "gap"] == 1 - 1 / 3
    assert out.loc["seen", "success_graph"] == 0.5 and out.loc["heldout", "gap"] == 1.0
