"""Choosing which active features become nodes when a prompt has too many (``max_feature_nodes``).

Greedy, like circuit-tracer: compute the logit rows; then repeatedly estimate every feature's
influence on the logits through the rows computed so far, and compute the rows of the next
``max(UPDATE_INTERVAL * batch, MIN_QUEUE)`` most influential unvisited features, until the budget
is spent.

Influence is that of the pruning step: rows normalised to ``|A| / sum |A|``, influence
``p^T (A + A^2 + ...)`` with ``p`` the logit probabilities, summed over paths through computed rows
only. The logit rows are kept whole, so direct effects on the logits are exact; to keep memory
flat for long prompts, each feature row is kept as its ``ROW_KEEP`` largest normalised entries
(multi-hop estimates ignore the tail). The exact rows of the chosen features are kept when they fit
in ``ROW_CACHE_BYTES``; otherwise the caller recomputes them over the chosen columns.

A kept row holds only the columns it can have edges from: a feature of layer ``l`` reads features
of layers ``< l`` (the first columns, as active features are sorted by layer), errors and tokens,
so the cache of a 4-layer organism is about half the ``keep x n_cols`` block.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from llmbio.attribution.rows import RowComputer

ROW_KEEP = 512  # entries kept per feature row while ranking
UPDATE_INTERVAL = 4  # batches computed between influence updates ...
MIN_QUEUE = 1024  # ... but at least this many features, to bound the number of updates
ROW_CACHE_BYTES = 2**30  # keep the exact rows of the chosen features if they fit


class RowChunk(NamedTuple):
    """Exact rows of one batch of same-layer features, over the columns they can read."""

    features: torch.Tensor  # (S,) indices into the active features
    n_feature_cols: int  # c: the rows' first c columns are active features 0..c-1
    rows: torch.Tensor  # (S, c + (L + 1) * n): those features, then errors and tokens


class Ranking(NamedTuple):
    selected: torch.Tensor  # (keep,) indices into the active features, ascending
    chunks: list[RowChunk] | None  # the selected features' exact rows, if they fit


def _normalised(rows: torch.Tensor) -> torch.Tensor:
    a = rows.abs()
    return a.div_(a.sum(dim=1, keepdim=True).clamp(min=1e-30))


class _InfluenceRows:
    """Normalised logit rows (whole) and feature rows (top ``ROW_KEEP`` entries), on CPU."""

    def __init__(self, logit_rows: torch.Tensor, logit_probs: torch.Tensor):
        # Direct influence of every column on the probability-weighted logits: exact.
        self.direct = logit_probs.float().cpu() @ _normalised(logit_rows).float().cpu()
        self.n_cols = logit_rows.shape[1]
        self.cols: list[torch.Tensor] = []
        self.vals: list[torch.Tensor] = []
        self.nodes: list[torch.Tensor] = []

    def add(self, rows: torch.Tensor, nodes: torch.Tensor) -> None:
        """Store feature rows ``(S, n_cols)`` of the features ``nodes`` ``(S,)``."""
        vals, cols = torch.topk(_normalised(rows), min(ROW_KEEP, self.n_cols), dim=1)
        self.cols.append(cols.cpu())
        self.vals.append(vals.float().cpu())
        self.nodes.append(nodes.cpu())

    def influence(self, max_hops: int) -> torch.Tensor:
        """Estimated influence ``(n_cols,)`` of each column node on the weighted logits."""
        total = self.direct.clone()
        if not self.nodes:
            return total
        cols, vals, nodes = torch.cat(self.cols), torch.cat(self.vals), torch.cat(self.nodes)
        cur = total[nodes]  # (R,) influence of each computed row's node
        for _ in range(max_hops):  # the graph is a DAG of depth <= L
            contrib = torch.zeros(self.n_cols).index_add_(
                0, cols.reshape(-1), (vals * cur[:, None]).reshape(-1)
            )
            total += contrib
            cur = contrib[nodes]
            if not cur.any():
                break
        return total


def rank_features(
    rc: RowComputer,
    directions: torch.Tensor,
    logit_probs: torch.Tensor,
    keep: int,
    batch: int,
    show_progress: bool = True,
) -> Ranking:
    """The ``keep`` active features with the largest estimated influence, and their rows.

    ``rc`` must have all active features as columns; ``directions`` ``(T, D)`` are the logit
    directions and ``logit_probs`` ``(T,)`` their probabilities.
    """
    features = rc.rep.active_features
    n_active = len(features)
    logit_rows = torch.zeros(len(directions), rc.n_cols, dtype=rc.dtype, device=rc.device)
    for i in range(0, len(directions), batch):
        d = directions[i : i + batch]
        rc.rows(rc.n_layers, torch.full((len(d),), rc.n_pos - 1), d, logit_rows[i : i + batch])
    store = _InfluenceRows(logit_rows, logit_probs)
    fits = keep * rc.n_cols * rc.dtype.itemsize <= ROW_CACHE_BYTES
    buffer = torch.empty(batch, rc.n_cols, dtype=rc.dtype, device=rc.device)
    # active features of layers < l: the feature columns a layer-l row can have edges from
    layer_col0 = torch.searchsorted(features[:, 0].contiguous(), torch.arange(rc.n_layers + 1))
    visited = torch.zeros(n_active, dtype=torch.bool)
    chunks: list[RowChunk] = []
    bar = tqdm(total=keep, desc="ranking features", disable=not show_progress, leave=False)
    n_visited = 0
    while n_visited < keep:
        influence = store.influence(rc.n_layers)[:n_active]
        influence[visited] = -1.0
        n_queue = min(max(UPDATE_INTERVAL * batch, MIN_QUEUE), keep - n_visited)
        for chunk in _layer_batches(features, torch.topk(influence, n_queue).indices, batch):
            rows = buffer[: len(chunk)].zero_()
            layer = int(features[chunk[0], 0])
            vectors = rc.rep.encoder_vectors(rc.transcoder, layer, features[chunk])
            rc.rows(layer, features[chunk, 1], vectors, rows)
            store.add(rows, chunk)
            if fits:
                c = int(layer_col0[layer])
                compact = torch.cat([rows[:, :c], rows[:, n_active:]], dim=1)
                chunks.append(RowChunk(chunk, c, compact))
            visited[chunk] = True
            n_visited += len(chunk)
            bar.update(len(chunk))
    bar.close()
    return Ranking(visited.nonzero()[:, 0], chunks if fits else None)


def _layer_batches(features: torch.Tensor, idx: torch.Tensor, batch: int) -> list[torch.Tensor]:
    """Split feature indices into single-layer batches sorted by position."""
    idx = idx.sort().values  # features are sorted by (layer, position)
    out = []
    for layer in features[idx, 0].unique().tolist():
        out += list(idx[features[idx, 0] == layer].split(batch))
    return out
