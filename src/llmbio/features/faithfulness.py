"""Is an attribution graph faithful? Its predicted feature effects vs real ablations.

For sampled feature nodes ``s`` of a :class:`~llmbio.attribution.graph.Graph`, the graph
predicts the change of the top logit node's value (the de-meaned logit of the most likely
token) when ``s`` is zeroed:

- ``predicted_direct = -A[logit, s]`` (the edge itself);
- ``predicted_total = -a_s * R[logit, s]`` where ``R = (I - W)^-1`` and ``W`` is the adjacency
  per unit of source activation (feature columns divided by their activation): every path,
  with features responding linearly to their inputs (a JumpReLU above its threshold passes
  changes of its pre-activation unchanged).

The real effect (``actual``) zeroes the feature at its position with
:func:`llmbio.interventions.intervene` and measures the change of the same de-meaned logit.
With every layer constrained and attention frozen the pass is the graph's linear model, and
``actual`` equals ``predicted_direct``. Softcapped logits (Gemma-2) are compared after the cap.
``freeze_final_norm`` holds the final norm's denominator at its clean value, as the graph's
logit node does: the real pass then keeps every nonlinearity but the output's rescaling.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from scipy.stats import spearmanr
from torch import nn
from tqdm.auto import tqdm

from llmbio.attribution.graph import Graph
from llmbio.interventions.edits import Edit
from llmbio.interventions.engine import Intervener
from llmbio.transcoder.clt import CrossLayerTranscoder


def total_effects(graph: Graph, target: int) -> torch.Tensor:
    """``R[target, :]`` ``(N,)``: summed path effects per unit of source activation.

    Uses ``W = A`` with feature columns divided by their activations and sums
    ``e_t W^k`` for ``k >= 1`` (the graph is a DAG, so the series ends).
    """
    weights = graph.adjacency.double().clone()
    k = graph.n_features
    weights[:, :k] /= graph.activation_values.double().clamp(min=1e-12)[None, :]
    current = weights[target].clone()
    total = current.clone()
    for _ in range(graph.n_layers + 2):
        current = current @ weights
        if not current.any():
            return total
        total += current
    raise RuntimeError("The adjacency is not a DAG (effects did not vanish); re-trace the graph.")


def _demeaned(logits: torch.Tensor, token: int) -> float:
    last = logits[-1].double()
    return float(last[token] - last.mean())


def faithfulness(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    graph: Graph,
    n_features: int = 50,
    seed: int = 0,
    nodes: Iterable[int] | None = None,
    *,
    freeze_attention: bool = False,
    constrained_layers: Iterable[int] | None = None,
    freeze_final_norm: bool = False,
    show_progress: bool = True,
) -> tuple[pd.DataFrame, float]:
    """Predicted vs real ablation effects of sampled feature nodes on the top logit.

    ``nodes`` (feature node indices) overrides the seeded sample of ``n_features`` nodes.
    Returns the table (``node_index``, ``layer``, ``position``, ``feature``, ``activation``,
    ``logit_token``, ``predicted_direct``, ``predicted_total``, ``actual``) and the Spearman
    correlation of ``predicted_total`` with ``actual`` (NaN for fewer than 3 nodes).
    """
    if graph.n_features == 0:
        raise ValueError("The graph has no feature nodes to ablate.")
    if nodes is None:
        gen = torch.Generator().manual_seed(seed)
        count = min(n_features, graph.n_features)
        chosen = torch.randperm(graph.n_features, generator=gen)[:count].sort().values.tolist()
    else:
        chosen = [int(i) for i in nodes]
        bad = [i for i in chosen if not 0 <= i < graph.n_features]
        if bad:
            raise ValueError(f"Nodes {bad} are not feature nodes (0..{graph.n_features - 1}).")
    logit = graph.logit_index(0)
    token = int(graph.logit_tokens[0])
    total = total_effects(graph, logit)
    runner = Intervener(
        model, clt, graph.input_ids,
        freeze_attention=freeze_attention, constrained_layers=constrained_layers,
        freeze_final_norm=freeze_final_norm,
    )  # fmt: skip
    base = _demeaned(runner.baseline.logits, token)
    rows = []
    for i in tqdm(chosen, desc="ablations", disable=not show_progress, leave=False):
        layer, pos, feat = (int(v) for v in graph.active_features[i])
        act = float(graph.activation_values[i])
        out = runner.run([Edit.zero((layer, feat), pos)])
        rows.append(dict(
            node_index=i, layer=layer, position=pos, feature=feat, activation=act,
            logit_token=token, predicted_direct=-float(graph.adjacency[logit, i]),
            predicted_total=-act * float(total[i]),
            actual=_demeaned(out.logits, token) - base,
        ))  # fmt: skip
    table = pd.DataFrame(rows)
    rho = (
        spearmanr(table["predicted_total"], table["actual"]).statistic if len(rows) > 2 else np.nan
    )
    return table, float(rho)


def plot_faithfulness(table: pd.DataFrame, path: str | Path | None = None) -> Figure:
    """Scatter of ``actual`` vs ``predicted_total`` (one dot per ablated feature)."""
    missing = {"predicted_total", "actual"} - set(table.columns)
    if missing:
        raise ValueError(f"The faithfulness table lacks columns {sorted(missing)}.")
    fig = Figure(figsize=(4.2, 4.0))
    ax = fig.add_subplot()
    x, y = table["predicted_total"].to_numpy(), table["actual"].to_numpy()
    colour = table["layer"] if "layer" in table else None
    points = ax.scatter(x, y, c=colour, s=18, cmap="viridis", edgecolors="none")
    if colour is not None:
        fig.colorbar(points, ax=ax, label="layer")
    lo, hi = (float(np.nanmin([x.min(), y.min()])), float(np.nanmax([x.max(), y.max()])))
    ax.plot([lo, hi], [lo, hi], color="#888888", lw=0.8, ls="--", zorder=0)
    rho = spearmanr(x, y).statistic if len(table) > 2 else float("nan")
    ax.set_xlabel("graph prediction (change of top logit)")
    ax.set_ylabel("ablation on the real model")
    ax.set_title(f"Feature ablations (n={len(table)}, Spearman {rho:.2f})", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig
