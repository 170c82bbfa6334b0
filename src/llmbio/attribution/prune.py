"""Influence on the output, pruning, and the replacement / completeness scores of a graph.

Notation (``N`` nodes, order as in :mod:`llmbio.attribution.graph`): ``A`` is the adjacency
``(N, N)``, ``[target, source]``; ``A_n = |A|`` with every row scaled to sum to 1 (rows of nodes
without inputs stay 0). The total influence of ``s`` on ``t`` over paths of every length is
``B = A_n + A_n^2 + ... = (I - A_n)^-1 - I``, and a node's influence on the output is
``w @ B`` with ``w`` holding each logit's probability on the logit nodes and 0 elsewhere.

We never form ``B``: the graph is a DAG (tokens -> features/errors by layer -> logits), so
``A_n^k = 0`` once ``k`` exceeds the longest path (``n_layers + 1`` edges) and the series
``w A_n + w A_n^2 + ...`` is summed with a few vector-matrix products, ``O(depth * N^2)``.

These functions follow circuit-tracer 0.5.0 (``circuit_tracer/graph.py``): ``normalize_matrix``,
``compute_influence``, ``compute_edge_influence``, ``find_threshold`` and ``prune_graph`` give
the same masks and scores (tested against it when it is importable). Differences are stated
in :func:`compute_graph_scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from llmbio.attribution.graph import Graph


@dataclass(frozen=True)
class PrunedGraph:
    """Which nodes and edges of a :class:`Graph` survive pruning, and why.

    ``influence`` is each node's influence on the output in the unpruned graph (``w @ B``);
    ``cumulative_influence`` is the share of the total influence held by the nodes at least as
    influential as this one (the quantity circuit-tracer exports as a node's ``influence``),
    so the kept non-token/logit nodes are those with ``cumulative_influence`` up to about
    ``node_threshold``.
    """

    node_mask: torch.Tensor  # (N,) bool
    edge_mask: torch.Tensor  # (N, N) bool, [target, source]
    influence: torch.Tensor  # (N,) float
    cumulative_influence: torch.Tensor  # (N,) float in [0, 1]
    node_threshold: float
    edge_threshold: float

    @property
    def n_nodes(self) -> int:
        return int(self.node_mask.sum())

    @property
    def n_edges(self) -> int:
        return int(self.edge_mask.sum())


class GraphScores(NamedTuple):
    replacement: float  # share of token->logit influence not routed through error nodes
    completeness: float  # influence-weighted share of node inputs coming from non-error nodes


def normalize_rows(adjacency: torch.Tensor) -> torch.Tensor:
    """``|A|`` with each row scaled to sum to 1; all-zero rows stay zero. ``(N, N) -> (N, N)``.

    One new matrix: the division is in place, so a graph's pruning holds at most one
    ``N x N`` copy of its adjacency beside it.
    """
    absolute = adjacency.abs()
    return absolute.div_(absolute.sum(dim=1, keepdim=True).clamp(min=1e-10))


def logit_weights(graph: Graph) -> torch.Tensor:
    """``(N,)`` vector: each logit node's probability, 0 for every other node."""
    weights = torch.zeros(graph.n_nodes, dtype=graph.adjacency.dtype)
    weights[graph.n_nodes - graph.n_logits :] = graph.logit_probabilities.to(weights.dtype)
    return weights


def propagate(
    normalized: torch.Tensor, weights: torch.Tensor, max_iter: int = 1000
) -> torch.Tensor:
    """``weights @ ((I - normalized)^-1 - I)`` by summing ``weights @ normalized^k`` for k >= 1.

    ``normalized`` is ``(N, N)`` ``[target, source]`` and must be acyclic; ``weights`` is ``(N,)``.
    The loop stops when the propagated vector is exactly zero, which a DAG guarantees after
    at most its depth in steps.
    """
    current = weights @ normalized
    total = current.clone()
    for _ in range(max_iter):
        if not current.any():
            return total
        current = current @ normalized
        total += current
    raise RuntimeError(
        f"Influence did not vanish after {max_iter} steps: the adjacency has a cycle. "
        "Attribution graphs must be DAGs (edges only from earlier layers to later ones); "
        "check the tracer's adjacency for non-zero entries above the layer order."
    )


def node_influence(adjacency: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Influence of every node on the weighted output, ``w @ ((I - A_n)^-1 - I)``: ``(N,)``."""
    return propagate(normalize_rows(adjacency), weights)


def edge_influence(adjacency: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Edge scores ``A_n[t, s] * (influence[t] + w[t])``, shape ``(N, N)`` ``[target, source]``.

    A logit's own weight counts as its influence, so edges into logits score by probability.
    """
    normalized = normalize_rows(adjacency)
    target_influence = propagate(normalized, weights) + weights
    return normalized.mul_(target_influence[:, None])


def score_threshold(scores: torch.Tensor, fraction: float) -> torch.Tensor:
    """Smallest score to keep so that kept scores hold ``fraction`` of the total (0-d tensor).

    Ties at the threshold are all kept. Only positive scores are ranked (a fast sort of the
    few non-zero edge scores instead of all ``N^2``), so zero scores are never kept; where
    rounding makes ``fraction = 1`` fall past the last positive score, circuit-tracer's
    ``find_threshold`` returns 0 and keeps every zero entry too. All-zero ``scores`` give
    ``+inf`` (keep nothing), where circuit-tracer divides by zero.
    """
    flat = scores.flatten()
    ordered = torch.sort(flat[flat > 0], descending=True).values
    if len(ordered) == 0:
        return torch.tensor(float("inf"), dtype=scores.dtype)
    cumulative = torch.cumsum(ordered, dim=0) / ordered.sum()
    index = int(torch.searchsorted(cumulative, torch.tensor(fraction, dtype=cumulative.dtype)))
    return ordered[min(index, len(ordered) - 1)]


def _check_graph(graph: Graph) -> None:
    n = graph.n_nodes
    if tuple(graph.adjacency.shape) != (n, n):
        raise ValueError(
            f"Graph adjacency has shape {tuple(graph.adjacency.shape)} but its node counts give "
            f"N = {n} (features + layers*positions + positions + logits); re-trace the graph."
        )
    if graph.n_logits == 0:
        raise ValueError("Graph has no logit nodes, so influence on the output is undefined.")


def _drop_dangling(node_mask: torch.Tensor, edge_mask: torch.Tensor, graph: Graph) -> None:
    """In place: drop features/errors without kept outgoing edges and features without inputs.

    Repeats until stable, since each removal can strand other nodes (at most depth rounds).
    """
    n_inner = graph.n_nodes - graph.n_pos - graph.n_logits  # features and errors
    k = graph.n_features
    while True:
        before = node_mask.clone()
        edge_mask &= node_mask[:, None] & node_mask[None, :]
        has_output, has_input = edge_mask.any(0), edge_mask.any(1)
        node_mask[:n_inner] &= has_output[:n_inner]
        node_mask[:k] &= has_input[:k]
        if torch.equal(before, node_mask):
            return


def _edge_mask(
    adjacency: torch.Tensor, node_mask: torch.Tensor, weights: torch.Tensor, edge_threshold: float
) -> torch.Tensor:
    """Edges kept by their :func:`edge_influence` on the node-pruned adjacency ``(N, N)`` bool.

    The pruned copy is normalised and scored in place: one ``N x N`` float copy at a time.
    """
    scores = adjacency.abs()
    scores[~node_mask] = 0
    scores[:, ~node_mask] = 0
    scores.div_(scores.sum(dim=1, keepdim=True).clamp(min=1e-10))
    scores.mul_((propagate(scores, weights) + weights)[:, None])
    return scores >= score_threshold(scores, edge_threshold)


def prune_graph(
    graph: Graph, node_threshold: float = 0.8, edge_threshold: float = 0.98
) -> PrunedGraph:
    """Keep the nodes and edges that carry most of the influence on the output.

    1. Nodes (features and errors alike) are kept while their cumulative influence is within
       ``node_threshold`` of the total; tokens and logits are always kept.
    2. Edges among kept nodes are re-scored on the node-pruned adjacency (see
       :func:`edge_influence`) and kept up to ``edge_threshold`` of the total edge score.
    3. Features and errors left without a kept outgoing edge, and features without a kept
       incoming edge, are dropped, with their edges, until nothing changes.

    This is circuit-tracer's ``prune_graph``: errors are pruned like features and never forced in.
    """
    for name, value in (("node_threshold", node_threshold), ("edge_threshold", edge_threshold)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}.")
    _check_graph(graph)
    weights = logit_weights(graph)
    influence = node_influence(graph.adjacency, weights)

    node_mask = influence >= score_threshold(influence, node_threshold)
    node_mask[graph.n_nodes - graph.n_pos - graph.n_logits :] = True

    edge_mask = _edge_mask(graph.adjacency, node_mask, weights, edge_threshold)
    _drop_dangling(node_mask, edge_mask, graph)

    ordered, order = torch.sort(influence, descending=True)
    cumulative = torch.zeros_like(influence)
    total = ordered.sum()
    if total > 0:
        cumulative[order] = torch.cumsum(ordered, dim=0) / total
    return PrunedGraph(
        node_mask=node_mask,
        edge_mask=edge_mask,
        influence=influence,
        cumulative_influence=cumulative,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )


def _error_like_mask(graph: Graph, masks: PrunedGraph | torch.Tensor | None) -> torch.Tensor:
    """``(N,)`` bool: error nodes, plus the features a node mask dropped."""
    error_like = torch.zeros(graph.n_nodes, dtype=torch.bool)
    k, n_err = graph.n_features, graph.n_layers * graph.n_pos
    error_like[k : k + n_err] = True
    if masks is not None:
        node_mask = masks.node_mask if isinstance(masks, PrunedGraph) else masks
        if node_mask.shape != (graph.n_nodes,) or node_mask.dtype != torch.bool:
            raise ValueError(
                f"masks must be a PrunedGraph or a bool node mask of shape ({graph.n_nodes},), "
                f"got {node_mask.dtype} {tuple(node_mask.shape)}."
            )
        error_like[:k] = ~node_mask[:k]
    return error_like


def compute_graph_scores(
    graph: Graph,
    masks: PrunedGraph | torch.Tensor | None = None,
    convention: Literal["paper", "circuit_tracer"] = "paper",
) -> GraphScores:
    """Replacement and completeness scores of the graph, or of its pruned version.

    - replacement = ``I_tok / (I_tok + I_err)``, where ``I_tok`` and ``I_err`` are the summed
      output influences of token and error nodes: the share of end-to-end influence that
      reaches the logits from tokens through features only.
    - completeness = ``sum_t c_t (1 - e_t) / sum_t c_t`` where ``e_t`` is the share of
      ``t``'s normalised input from error nodes and ``c_t`` = influence + logit weight.

    Without ``masks`` both match circuit-tracer's ``compute_graph_scores``. With ``masks`` (a
    :class:`PrunedGraph` or a node mask), pruned-away features are treated as error nodes
    (our reading of [M]'s scores for pruned graphs: what the pruned graph leaves out is
    unexplained): their rows are cleared (they become inputs, like errors) and their outgoing
    influence counts as error. Edge pruning is not used. circuit-tracer has no pruned variant.

    ``convention="paper"`` sums completeness over nodes that have inputs (features, logits),
    following [M]'s "fraction of input edges". circuit-tracer also sums over input-less nodes
    (tokens, errors) with ``e_t = 0``, which counts errors as fully explained and inflates the
    score; pass ``convention="circuit_tracer"`` to reproduce its numbers.
    """
    if convention not in ("paper", "circuit_tracer"):
        raise ValueError(f"convention must be 'paper' or 'circuit_tracer', got {convention!r}.")
    _check_graph(graph)
    error_like = _error_like_mask(graph, masks)
    has_input = torch.zeros(graph.n_nodes, dtype=torch.bool)
    for rows in _row_blocks(graph.n_nodes):
        has_input[rows] = (graph.adjacency[rows] != 0).any(dim=1)
    has_input &= ~error_like
    normalized = graph.adjacency.abs()  # the only N x N copy: cleared and scaled in place
    normalized[error_like] = 0
    normalized.div_(normalized.sum(dim=1, keepdim=True).clamp(min=1e-10))
    weights = logit_weights(graph)
    influence = propagate(normalized, weights)

    tokens = slice(graph.token_index(0), graph.token_index(0) + graph.n_pos)
    token_influence = influence[tokens].sum()
    error_influence = influence[error_like].sum()
    replacement = token_influence / (token_influence + error_influence).clamp(min=1e-30)

    error_share = torch.empty(graph.n_nodes, dtype=normalized.dtype)
    for rows in _row_blocks(graph.n_nodes):  # a column selection copies: a block at a time
        error_share[rows] = normalized[rows][:, error_like].sum(dim=1)
    non_error_share = 1 - error_share
    output_influence = influence + weights
    if convention == "paper":
        output_influence = output_influence * has_input
    completeness = (non_error_share * output_influence).sum() / output_influence.sum()
    return GraphScores(float(replacement), float(completeness))


def _row_blocks(n: int, size: int = 1024) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]
