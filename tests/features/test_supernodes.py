"""Supernodes: member selection by id and label rule, and collapsing a graph's tables."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from llmbio.attribution.export import graph_tables
from llmbio.attribution.graph import Graph
from llmbio.attribution.plot import plot_supernode_graph
from llmbio.features.supernodes import (
    Supernode,
    parse_feature_id,
    resolve,
    supernode_graph,
    supernodes_from_dict,
)

LABELS = pd.DataFrame({
    "layer": [0, 1, 1, 2], "feature": [3, 4, 5, 6],
    "variable": ["state", "state", "state", "capital"],
    "value": ["Texas", "Texas", "Ohio", "Austin"], "precision": [0.9, 0.4, 0.9, 0.8],
    "recall": [0.8, 0.3, 0.9, 0.7], "f1": [0.85, 0.34, 0.9, 0.75],
})  # fmt: skip


def test_ids_and_rules():
    assert parse_feature_id("2/117") == (2, 117) and parse_feature_id(" 0 / 5 ") == (0, 5)
    with pytest.raises(ValueError, match="layer/feature"):
        parse_feature_id("2-117")
    texas = Supernode.make("Texas", ["2/6"], {"variable": "state", "value": "Texas", "min_f1": 0.5})
    query = Supernode.make("capitals", rule="variable == 'capital' and f1 > 0.5")
    (t, q) = resolve([texas, query], LABELS)
    assert t.features == ((2, 6), (0, 3)) and q.features == ((2, 6),)
    layered = Supernode.make("x", rule={"variable": "state", "layers": [1]})
    assert resolve([layered], LABELS)[0].features == ((1, 4), (1, 5))
    with pytest.raises(ValueError, match="pass the label table"):
        resolve([texas])
    with pytest.raises(ValueError, match="rule keys"):
        Supernode.make("bad", rule={"variable": "state", "min_F1": 0.5})
    with pytest.raises(ValueError, match="neither features nor"):
        Supernode.make("empty")
    with pytest.raises(ValueError, match="Bad label query"):
        resolve([Supernode.make("q", rule="nonsense ==")], LABELS)
    spec = {"Texas": {"features": ["0/3"], "positions": [4, 5]}}
    assert supernodes_from_dict(spec) == [Supernode("Texas", ((0, 3),), None, (4, 5))]
    with pytest.raises(ValueError, match="unknown keys"):
        supernodes_from_dict({"T": {"feature": ["0/3"]}})


def _graph() -> Graph:
    """Tokens a b c; features 0/3@1, 1/4@2, 1/5@2, 2/6@2; one logit."""
    feats = torch.tensor([[0, 1, 3], [1, 2, 4], [1, 2, 5], [2, 2, 6]])
    k, n, n_layers = 4, 3, 3
    size = k + n_layers * n + n + 1
    adj = torch.zeros(size, size)
    tok = k + n_layers * n
    adj[0, tok + 1] = 1.0  # token b -> 0/3
    adj[1, 0], adj[2, 0], adj[3, 1], adj[3, 2] = 0.5, 0.25, 2.0, -1.0
    adj[size - 1, 3] = 3.0
    adj[size - 1, 1] = 0.1
    return Graph("a b c", ["a", "b", "c"], torch.tensor([1, 2, 3]), feats,
                 torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([9]), torch.tensor([0.7]),
                 adj, n_layers)  # fmt: skip


def test_supernode_graph_sums_edges(tmp_path):
    nodes, edges = graph_tables(_graph(), logit_strings=["Austin"])
    groups = [Supernode.make("mid", ["1/4", "1/5"]), Supernode.make("late", ["2/6"], positions=2)]
    sn, se = supernode_graph(nodes, edges, groups, keep_unassigned=False)
    assert set(sn["name"]) == {"a", "b", "c", "mid", "late", 'Output "Austin"'}
    weights = se.set_index(["source", "target"])["weight"]
    assert weights[("mid", "late")] == pytest.approx(1.0)  # 2.0 - 1.0
    assert weights[("mid", 'Output "Austin"')] == pytest.approx(0.1)
    assert ("b", "mid") not in weights  # 0/3 was dropped with its edges
    mid = sn.set_index("name").loc["mid"]
    assert mid["n_members"] == 2 and mid["y"] == 2 and mid["total_activation"] == 5.0
    kept, kept_edges = supernode_graph(nodes, edges, groups)
    assert set(kept["name"]) == set(sn["name"]) | {"0/3@1"}  # errors have no edges: dropped
    assert kept_edges.set_index(["source", "target"])["weight"][("0/3@1", "mid")] == 0.75
    fig = plot_supernode_graph(kept, kept_edges, tmp_path / "sn.png")
    assert isinstance(fig, Figure) and (tmp_path / "sn.png").exists()
    moved = supernode_graph(nodes, edges, [Supernode.make("late", ["2/6"], positions=1)])[0]
    assert "late" not in set(moved["name"])  # position restriction excludes 2/6@2
