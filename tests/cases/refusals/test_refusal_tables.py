"""The refusals study's pure helpers (its batched edits: tests/interventions/test_batched.py)."""

import numpy as np
import pandas as pd
import torch

from llmbio.cases.refusals.tables import (
    contrast_top,
    graph_links,
    harm_position,
    position_groups,
    roc_auc,
)
from llmbio.features.supernodes import Supernode


def test_contrast_top_keeps_positive_margins_only():
    pos = torch.tensor([[1.0, 0.0, 3.0, 0.0], [1.0, 0.0, 3.0, 0.0]])
    neg = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    assert contrast_top(pos, neg, 3, n_features=2) == [(1, 0), (0, 0)]
    assert contrast_top(pos, neg[:0], 3, n_features=2) == []


def test_roc_auc():
    assert roc_auc(np.array([2.0, 3.0]), np.array([1.0])) == 1.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5
    assert np.isnan(roc_auc(np.array([]), np.array([1.0])))


def test_harm_position():
    words = "<bos> Human : Tell me how to mix bleach and ammonia Assistant :".split()
    assert harm_position(words) == words.index("ammonia")
    topic = "<bos> Human : Tell me how to make a bomb Assistant :".split()
    assert harm_position(topic) == topic.index("bomb")


def test_graph_links_fills_missing_links_with_zero():
    nodes = pd.DataFrame({"name": ["harmful_request", 'Output "I"'], "kind": ["feature", "logit"]})
    edges = pd.DataFrame({"source": ["harmful_request"], "target": ['Output "I"'], "weight": [2.0]})
    links = graph_links(nodes, edges).set_index(["source", "target"])["weight"]
    assert links[("harmful_request", "output")] == 2.0
    assert links[("specific_harm", "harmful_request")] == 0.0


def test_position_groups_take_kept_features_outside_the_supernodes():
    g_nodes = pd.DataFrame({
        "kind": ["feature"] * 3, "layer": [0, 0, 1], "feature": [4, 5, 6],
        "position": [2, 3, 3], "kept": [True, True, True],
    })  # fmt: skip
    words = ["<bos>", "mix", "bleach", ":"]
    groups = position_groups(g_nodes, [Supernode("harmful_request", ((1, 6),), None, (3,))], words)
    assert {g.name: g.features for g in groups} == {
        "bleach features": ((0, 4),),
        "other last-token features": ((0, 5),),
    }
