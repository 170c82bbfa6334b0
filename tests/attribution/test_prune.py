"""Influence, pruning and scores on hand-computable and random synthetic graphs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from llmbio.attribution.graph import Graph
from llmbio.attribution.prune import (
    PrunedGraph,
    _drop_dangling,
    compute_graph_scores,
    logit_weights,
    node_influence,
    normalize_rows,
    propagate,
    prune_graph,
    score_threshold,
)


def random_graph(n_layers=3, n_pos=4, n_features=30, n_logits=3, density=0.5, seed=0) -> Graph:
    """A random graph with the tracer's block structure: inputs only from earlier layers and
    positions; tokens and errors have no inputs; logits read everything at or before the end."""
    g = torch.Generator().manual_seed(seed)
    layer = torch.randint(0, n_layers, (n_features,), generator=g)
    pos = torch.randint(0, n_pos, (n_features,), generator=g)
    feats = torch.stack([layer, pos, torch.randint(0, 1000, (n_features,), generator=g)], 1)
    err_layer = torch.arange(n_layers).repeat_interleave(n_pos)
    err_pos = torch.arange(n_pos).repeat(n_layers)
    # Source "layer" (tokens -1, logits n_layers) and position of every node.
    src_layer = torch.cat([layer, err_layer, torch.full((n_pos,), -1), torch.full((n_logits,), 99)])
    src_pos = torch.cat([pos, err_pos, torch.arange(n_pos), torch.full((n_logits,), n_pos - 1)])
    n = len(src_layer)
    allowed = (src_layer[None, :] < src_layer[:, None]) & (src_pos[None, :] <= src_pos[:, None])
    allowed[n_features : n - n_logits] = False  # errors and tokens have no inputs
    allowed[:, n - n_logits :] = False  # logits feed nothing
    keep = torch.rand(n, n, generator=g) < density
    adjacency = torch.randn(n, n, generator=g) * allowed * keep
    probs = torch.softmax(torch.randn(n_logits, generator=g), 0) * 0.9
    return Graph(
        prompt="synthetic",
        tokens=[f"t{i}" for i in range(n_pos)],
        input_ids=torch.arange(n_pos) + 10,
        active_features=feats,
        activation_values=torch.rand(n_features, generator=g) + 0.1,
        logit_tokens=torch.arange(n_logits) + 500,
        logit_probabilities=probs,
        adjacency=adjacency,
        n_layers=n_layers,
    )


def tiny_graph() -> Graph:
    """1 layer, 1 position, 1 feature, 1 logit. Nodes: feature, error, token, logit.
    feature <- token (2); logit <- feature (3), error (1), token (-1)."""
    adjacency = torch.zeros(4, 4)
    adjacency[0, 2] = 2.0
    adjacency[3, 0], adjacency[3, 1], adjacency[3, 2] = 3.0, 1.0, -1.0
    return Graph(
        prompt="x",
        tokens=["x"],
        input_ids=torch.tensor([7]),
        active_features=torch.tensor([[0, 0, 5]]),
        activation_values=torch.tensor([1.5]),
        logit_tokens=torch.tensor([9]),
        logit_probabilities=torch.tensor([1.0]),
        adjacency=adjacency,
        n_layers=1,
    )


def test_influence_matches_dense_inverse():
    graph = random_graph()
    a_n = normalize_rows(graph.adjacency)
    eye = torch.eye(graph.n_nodes)
    expected = logit_weights(graph) @ (torch.linalg.inv(eye - a_n) - eye)
    got = node_influence(graph.adjacency, logit_weights(graph))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_tiny_graph_influence_and_scores_by_hand():
    graph = tiny_graph()
    influence = node_influence(graph.adjacency, logit_weights(graph))
    # Logit row normalised: feature .6, error .2, token .2; token also reaches it via feature.
    torch.testing.assert_close(influence, torch.tensor([0.6, 0.2, 0.8, 0.0]))
    replacement, completeness = compute_graph_scores(graph)
    assert replacement == pytest.approx(0.8)
    assert completeness == pytest.approx((0.6 * 1 + 1.0 * 0.8) / 1.6)
    _, ct_completeness = compute_graph_scores(graph, convention="circuit_tracer")
    assert ct_completeness == pytest.approx(2.4 / 2.6)


def test_pruned_features_count_as_errors():
    graph = tiny_graph()
    drop_feature = torch.tensor([False, True, True, True])
    replacement, completeness = compute_graph_scores(graph, drop_feature)
    assert replacement == pytest.approx(0.2)
    assert completeness == pytest.approx(0.2)


def test_score_threshold():
    scores = torch.tensor([2.0, 5.0, 3.0])
    assert score_threshold(scores, 0.5) == 5.0
    assert score_threshold(scores, 0.6) == 3.0
    assert score_threshold(scores, 1.0) == 2.0
    assert score_threshold(torch.zeros(3), 0.8) == float("inf")


def test_prune_graph_invariants():
    graph = random_graph(n_features=60, seed=1)
    pruned = prune_graph(graph, 0.8, 0.98)
    assert isinstance(pruned, PrunedGraph)
    n, k = graph.n_nodes, graph.n_features
    assert pruned.node_mask[graph.token_index(0) :].all()
    kept = pruned.node_mask
    assert not pruned.edge_mask[~kept].any() and not pruned.edge_mask[:, ~kept].any()
    assert (graph.adjacency[pruned.edge_mask] != 0).all()
    inner = slice(0, n - graph.n_pos - graph.n_logits)
    assert pruned.edge_mask[:, inner].any(0)[kept[inner]].all()  # kept nodes feed something
    assert pruned.edge_mask[:k].any(1)[kept[:k]].all()  # kept features have inputs
    assert 0 < kept[:k].sum() < k
    assert pruned.cumulative_influence.max() == pytest.approx(1.0)
    full = compute_graph_scores(graph)
    small = compute_graph_scores(graph, pruned)
    assert 0 <= small.replacement <= full.replacement <= 1
    assert 0 <= small.completeness <= full.completeness <= 1


def _dense_prune(graph: Graph, node_threshold: float, edge_threshold: float):
    """Node and edge masks written with full N x N temporaries (the formulas as stated)."""
    weights = logit_weights(graph)
    influence = propagate(graph.adjacency.abs() / _row_sums(graph.adjacency), weights)
    node_mask = influence >= score_threshold(influence, node_threshold)
    node_mask[graph.token_index(0) :] = True
    pruned = graph.adjacency.clone()
    pruned[~node_mask], pruned[:, ~node_mask] = 0, 0
    a_n = pruned.abs() / _row_sums(pruned)
    scores = a_n * (propagate(a_n, weights) + weights)[:, None]
    edge_mask = scores >= score_threshold(scores, edge_threshold)
    _drop_dangling(node_mask, edge_mask, graph)
    return node_mask, edge_mask


def _dense_scores(graph: Graph, node_mask: torch.Tensor) -> tuple[float, float]:
    error_like = torch.zeros(graph.n_nodes, dtype=torch.bool)
    error_like[graph.n_features : graph.token_index(0)] = True
    error_like[: graph.n_features] = ~node_mask[: graph.n_features]
    cleared = graph.adjacency.clone()
    cleared[error_like] = 0
    a_n = cleared.abs() / _row_sums(cleared)
    weights = logit_weights(graph)
    influence = propagate(a_n, weights)
    tokens, errors = influence[graph.token_index(0) : -graph.n_logits].sum(), influence[error_like]
    replacement = tokens / (tokens + errors.sum())
    output = (influence + weights) * (cleared != 0).any(dim=1)
    completeness = ((1 - a_n[:, error_like].sum(dim=1)) * output).sum() / output.sum()
    return float(replacement), float(completeness)


def _row_sums(a: torch.Tensor) -> torch.Tensor:
    return a.abs().sum(dim=1, keepdim=True).clamp(min=1e-10)


@pytest.mark.parametrize("seed", [3, 4])
def test_in_place_pruning_and_scores_equal_dense_formulas(seed):
    """Pruning and scores normalise one copy in place and select columns a block of rows at a
    time (a long prompt's graph has GBs of adjacency): the same bits as dense temporaries."""
    graph = random_graph(n_features=2500, n_pos=8, seed=seed)  # > 1 block of 1024 rows
    before = graph.adjacency.clone()
    pruned = prune_graph(graph, 0.8, 0.98)
    node_mask, edge_mask = _dense_prune(graph, 0.8, 0.98)
    assert 0 < int(node_mask[: graph.n_features].sum()) < graph.n_features
    assert torch.equal(pruned.node_mask, node_mask) and torch.equal(pruned.edge_mask, edge_mask)
    assert compute_graph_scores(graph, pruned) == _dense_scores(graph, node_mask)
    assert compute_graph_scores(graph) == _dense_scores(graph, torch.ones_like(node_mask))
    assert torch.equal(graph.adjacency, before)  # the graph is left as it was


def test_no_error_edges_gives_perfect_scores():
    graph = random_graph(seed=2)
    graph.adjacency[:, graph.n_features : graph.token_index(0)] = 0
    assert compute_graph_scores(graph) == pytest.approx((1.0, 1.0))


def test_bad_inputs_raise():
    graph = random_graph()
    with pytest.raises(ValueError, match="node_threshold"):
        prune_graph(graph, node_threshold=1.5)
    graph.adjacency = graph.adjacency[:-1]
    with pytest.raises(ValueError, match="shape"):
        prune_graph(graph)
    cyclic = tiny_graph()
    cyclic.adjacency[2, 3] = 1.0  # logit -> token closes a loop
    with pytest.raises(RuntimeError, match="cycle"):
        prune_graph(cyclic)


def _as_circuit_tracer(graph: Graph) -> SimpleNamespace:
    """Duck-typed circuit-tracer Graph with the attributes its pruning and scores read."""
    return SimpleNamespace(
        input_tokens=graph.input_ids,
        logit_targets=list(range(graph.n_logits)),
        selected_features=torch.arange(graph.n_features),
        adjacency_matrix=graph.adjacency,
        logit_probabilities=graph.logit_probabilities,
        cfg=SimpleNamespace(n_layers=graph.n_layers),
    )


@pytest.mark.crosscheck
def test_matches_circuit_tracer():
    ct = pytest.importorskip("circuit_tracer.graph", reason="circuit-tracer not importable")
    for seed in range(3):
        graph = random_graph(n_features=50, seed=seed)
        ours = prune_graph(graph, 0.8, 0.98)
        theirs = ct.prune_graph(_as_circuit_tracer(graph), 0.8, 0.98)
        assert torch.equal(ours.node_mask, theirs.node_mask)
        assert torch.equal(ours.edge_mask, theirs.edge_mask)
        torch.testing.assert_close(ours.cumulative_influence, theirs.cumulative_scores)
        expected = ct.compute_graph_scores(_as_circuit_tracer(graph))
        got = compute_graph_scores(graph, convention="circuit_tracer")
        assert got == pytest.approx(expected, rel=1e-5)
