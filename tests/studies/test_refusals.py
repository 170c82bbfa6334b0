"""The refusals study's batched edits and its pure helpers."""

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit, Intervener
from llmbio.studies.feature_effects import (
    edited_pass,
    feature_effects,
    identity_edits,
    logit_difference,
)
from llmbio.studies.refusal_tables import (
    contrast_top,
    graph_links,
    harm_position,
    position_groups,
    roc_auc,
)


@pytest.fixture(scope="module")
def organism():
    return tiny_model("llama"), random_clt()


def test_edited_pass_matches_intervener(organism):
    model, clt = organism
    ids = torch.randint(1, 64, (2, 6))
    scale, offset = identity_edits(clt, 2, 6)
    scale[0, 0, -1, 3] = -2.0
    scale[1, 1, 2:, 5] = 0.0
    offset[1, 1, 2:, 5] = 0.7
    out = edited_pass(model, clt, ids, scale, offset)
    expected = [
        Intervener(model, clt, ids[0]).run([Edit.scale_by("0/3", -2.0, (5,))]),
        Intervener(model, clt, ids[1]).run([Edit.set_to("1/5", 0.7, (2, 3, 4, 5))]),
    ]
    for b, ref in enumerate(expected):
        assert torch.allclose(out.logits[b], ref.logits[-1].float(), atol=1e-5)
        assert torch.allclose(out.activations[b], ref.activations, atol=1e-8)


def test_feature_effects_is_the_derivative(organism):
    model, clt = organism
    ids = torch.randint(1, 64, (1, 6))
    metric = logit_difference(3, 7)
    effects, acts, value = feature_effects(model, clt, ids, metric)
    layer, pos, feat = (acts[0] > 0).nonzero()[0].tolist()
    eps = 1e-4
    scale, offset = identity_edits(clt, 1, 6)
    scale[0, layer, pos, feat] = 1 + eps
    moved = metric(edited_pass(model, clt, ids, scale, offset).logits)
    assert float((moved - value) / eps) == pytest.approx(
        float(effects[0, layer, pos, feat]), rel=1e-3, abs=1e-6
    )


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
