"""Graph-predicted ablation effects vs real ablations."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.attribution.trace import trace
from llmbio.features.faithfulness import faithfulness, plot_faithfulness, total_effects
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
    clt = CrossLayerTranscoder(3, 32, 40).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.uniform_(0.0, 0.3)
    return model, clt, trace(model, clt, IDS, show_progress=False)


def test_constrained_ablations_match_direct_edges(setup):
    model, clt, graph = setup
    table, rho = faithfulness(
        model, clt, graph, n_features=12, freeze_attention=True, constrained_layers=range(3),
        show_progress=False,
    )  # fmt: skip
    assert len(table) == 12 and table["node_index"].is_monotonic_increasing
    torch.testing.assert_close(
        torch.tensor(table["actual"].to_numpy()), torch.tensor(table["predicted_direct"]),
        rtol=1e-6, atol=1e-8,
    )  # fmt: skip
    assert -1 <= rho <= 1


def test_total_effects_sum_paths(setup, tmp_path):
    model, clt, graph = setup
    logit = graph.logit_index(0)
    total = total_effects(graph, logit)
    w = graph.adjacency.double().clone()
    w[:, : graph.n_features] /= graph.activation_values.double()
    n = len(w)
    expected = torch.linalg.inv(torch.eye(n, dtype=w.dtype) - w)[logit]
    expected[logit] -= 1
    torch.testing.assert_close(total, expected, rtol=1e-8, atol=1e-10)
    table, rho = faithfulness(model, clt, graph, nodes=[0, 3, 5, 9], show_progress=False)
    assert list(table["node_index"]) == [0, 3, 5, 9] and not math.isnan(rho)
    fig = plot_faithfulness(table, tmp_path / "f.png")
    assert (tmp_path / "f.png").exists() and fig.axes
    with pytest.raises(ValueError, match="not feature nodes"):
        faithfulness(model, clt, graph, nodes=[graph.n_features])
