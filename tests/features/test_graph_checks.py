"""The paper's graph checks: exact where the frames make them exact, seeded intervals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.attribution.trace import trace
from llmbio.features.faithfulness import total_effects
from llmbio.features.graph_checks import feature_effects, feature_influence
from llmbio.interventions.edits import Edit
from llmbio.interventions.engine import Intervener
from llmbio.transcoder.clt import CrossLayerTranscoder

IDS = torch.tensor([0, 5, 17, 33, 2, 60, 9, 41])


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval().double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1, 0.3)
    clt = CrossLayerTranscoder(3, 32, 40).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.uniform_(0.0, 0.3)
    return model, clt, trace(model, clt, IDS, show_progress=False)


def test_last_layer_effects_equal_the_edge_in_the_graphs_frame(setup):
    model, clt, graph = setup
    last = [i for i in range(graph.n_features) if int(graph.active_features[i, 0]) == 2]
    early = [i for i in range(graph.n_features) if int(graph.active_features[i, 0]) == 0][:4]
    assert last and early
    table = feature_effects(model, clt, graph, last + early).set_index("node_index")
    at_last = table.loc[last]
    for column in ("actual_frame", "actual_replacement", "predicted_total"):
        np.testing.assert_allclose(
            at_last[column], at_last["predicted_direct"], rtol=1e-7, atol=1e-10
        )
    # the unfrozen model rescales through the norms: not the edge
    assert not np.allclose(at_last["actual_live"], at_last["predicted_direct"], rtol=1e-4)
    # downstream comparison only where layer l + 2 exists; the frame's cosine is well defined
    assert at_last["cosine_frame"].isna().all()
    assert table.loc[early, "cosine_frame"].between(-1, 1).all()
    assert (table.loc[early, "nmse_frame"] >= 0).all()


def test_the_graph_is_the_replacement_models_linearisation(setup):
    """Scaling a feature by 1 - eps in the local replacement model moves the top logit by
    eps times the graph's all-path prediction for zeroing it."""
    model, clt, graph = setup
    logit, token = graph.logit_index(0), int(graph.logit_tokens[0])
    total = total_effects(graph, logit)
    runner = Intervener(model, clt, IDS, replacement=True)
    real = model(input_ids=IDS[None]).logits[0]  # frozen norm factors agree to ~1e-8
    torch.testing.assert_close(runner.baseline.logits, real, rtol=1e-6, atol=1e-6)
    eps = 1e-6
    early = [i for i in range(graph.n_features) if int(graph.active_features[i, 0]) == 0]
    for i in early[:5]:
        layer, pos, feat = (int(v) for v in graph.active_features[i])
        out = runner.run([Edit.scale_by((layer, feat), 1 - eps, [pos])]).logits[-1]
        base = runner.baseline.logits[-1]
        moved = float((out[token] - out.mean()) - (base[token] - base.mean()))
        predicted = -float(graph.activation_values[i]) * float(total[i])
        assert moved / eps == pytest.approx(predicted, rel=1e-4, abs=1e-8)


def test_constrained_influence_equals_edges_with_norms_frozen(setup):
    model, clt, graph = setup
    sources = [i for i in range(graph.n_features) if int(graph.active_features[i, 0]) < 2]
    exact = feature_influence(model, clt, graph, sources, freeze_norms=True)
    assert len(exact) > 10 and set(exact["source_layer"]) == {0, 1}
    np.testing.assert_allclose(exact["actual"], exact["predicted"], rtol=1e-7, atol=1e-10)
    live = feature_influence(model, clt, graph, sources)
    assert list(live["target"]) == list(exact["target"])
    assert not np.allclose(live["actual"], live["predicted"], rtol=1e-4)
