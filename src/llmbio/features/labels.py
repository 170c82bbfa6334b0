"""Ground-truth labels of features: which world variable each feature tracks (organism only).

Every cached token carries world variables (:mod:`llmbio.features.variables`). For a feature
``f`` and a value ``v`` (e.g. ``state = Texas``), over the parsed tokens:

- precision = share of ``f``'s active tokens that carry ``v``;
- recall = share of the tokens carrying ``v`` on which ``f`` is active;
- F1 = their harmonic mean, ``2 |f and v| / (|f| + |v|)``.

Labels come only from where features fire, never from their logits. Tables (written by
:func:`save_labels` under ``results/<run>/features/``):

``labels.parquet``, one row per (layer, feature): ``layer``, ``feature``, ``label``
(``"variable=value"`` of the best F1, "" for features never active on parsed tokens; values
that always co-occur, like a state and its capital, tie, and the first in (variable, value)
order is shown),
``variable``, ``value``, ``precision``, ``recall``, ``f1``, ``n_active``, ``n_value``,
``n_both`` (the counts behind the scores).

``label_scores.parquet``: the ``n_best`` best (variable, value) pairs of every feature, same
columns plus ``rank`` (0 = best).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llmbio.activations import ActivationReader
from llmbio.features.streaming import Entries, iter_active
from llmbio.features.variables import TokenLabels, token_labels
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.world import World


class LabelScorer:
    """Accumulates feature / value co-occurrence counts over batches of active entries."""

    def __init__(self, token_values: TokenLabels, n_layers: int, n_features: int):
        self.parsed = token_values.parsed
        values = token_values.labels
        pairs = values[["variable", "value"]].drop_duplicates().sort_values(["variable", "value"])
        self.pairs = pairs.reset_index(drop=True)
        column = pd.MultiIndex.from_frame(self.pairs).get_indexer(
            pd.MultiIndex.from_frame(values[["variable", "value"]])
        )
        n, m = len(self.parsed), len(self.pairs)
        ones = np.ones(len(values), dtype=np.float64)
        self.matrix = sp.csr_matrix((ones, (values["row"].to_numpy(), column)), shape=(n, m))
        self.matrix.data[:] = 1.0  # duplicates would have summed
        self.n_value = np.asarray(self.matrix[self.parsed].sum(0)).ravel()  # (m,)
        self.both = np.zeros((n_layers, n_features, m))
        self.n_active = np.zeros((n_layers, n_features), dtype=np.int64)

    def update(self, layer: int, first_row: int, entries: Entries) -> None:
        """Count a batch's active entries (batch row ``i`` is token row ``first_row + i``)."""
        rows = entries.rows.numpy() + first_row
        keep = self.parsed[rows]
        rows, feats = rows[keep], entries.features.numpy()[keep]
        n_features = self.n_active.shape[1]
        self.n_active[layer] += np.bincount(feats, minlength=n_features)
        active = sp.csr_matrix(
            (np.ones(len(rows)), (feats, rows)), shape=(n_features, self.matrix.shape[0])
        )
        self.both[layer] += (active @ self.matrix).toarray()

    def scores(self, n_best: int = 5) -> pd.DataFrame:
        """The ``n_best`` values of each feature by F1 (columns in the module docstring)."""
        n_layers, n_features, m = self.both.shape
        if m == 0:
            raise ValueError("No token carries a world variable: is this the organism's cache?")
        k = min(n_best, m)
        total = self.n_active[:, :, None] + self.n_value[None, None, :]
        f1 = np.divide(2 * self.both, total, out=np.zeros_like(self.both), where=total > 0)
        best = np.argsort(-f1, axis=2, kind="stable")[:, :, :k]  # (L, F, k)
        layer, feature, rank = np.indices(best.shape)
        col = best.ravel()
        both = np.take_along_axis(self.both, best, 2).ravel()
        n_active = np.repeat(self.n_active.ravel(), k)
        n_value = self.n_value[col]
        table = pd.DataFrame({
            "layer": layer.ravel(), "feature": feature.ravel(), "rank": rank.ravel(),
            "variable": self.pairs["variable"].to_numpy()[col],
            "value": self.pairs["value"].to_numpy()[col],
            "precision": both / np.maximum(n_active, 1), "recall": both / np.maximum(n_value, 1),
            "f1": np.take_along_axis(f1, best, 2).ravel(),
            "n_active": n_active, "n_value": n_value.astype(np.int64),
            "n_both": both.astype(np.int64),
        })  # fmt: skip
        table.insert(3, "label", table["variable"] + "=" + table["value"])
        dead = table["n_both"] == 0
        table.loc[dead, ["label", "variable", "value"]] = ""
        table.loc[dead, ["precision", "recall", "f1"]] = np.nan
        return table


def score_labels(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    token_values: TokenLabels,
    split: str = "train",
    batch_size: int = 4096,
    n_best: int = 5,
    show_progress: bool = True,
) -> pd.DataFrame:
    """Label scores of every feature over ``split`` (the ``label_scores`` table)."""
    if len(token_values.parsed) != reader.n_tokens(split):
        raise ValueError(
            f"token_values cover {len(token_values.parsed)} tokens but split {split!r} has "
            f"{reader.n_tokens(split)}; build them from reader.read_index({split!r})."
        )
    scorer = LabelScorer(token_values, clt.n_layers, clt.n_features)
    for layer, row, entries in iter_active(
        clt, reader, split, batch_size, "feature labels", show_progress
    ):
        scorer.update(layer, row, entries)
    return scorer.scores(n_best)


def best_labels(scores: pd.DataFrame) -> pd.DataFrame:
    """One row per feature: its best-scoring label (the ``labels`` table)."""
    best = scores[scores["rank"] == 0].drop(columns="rank")
    return best.reset_index(drop=True)


def build_labels(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    world: World,
    tokenizer,
    split: str = "train",
    batch_size: int = 4096,
    n_best: int = 5,
    show_progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """``{"labels", "label_scores"}`` for the organism's cache (see the module docstring)."""
    values = token_labels(world, tokenizer, reader.read_index(split))
    if not values.parsed.any():
        raise ValueError(
            "No cached document could be parsed: the cache must hold the organism's corpus, "
            "with BOS tokens separating documents."
        )
    scores = score_labels(clt, reader, values, split, batch_size, n_best, show_progress)
    return {"labels": best_labels(scores), "label_scores": scores}


def save_labels(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> Path:
    """Write ``labels.parquet`` and ``label_scores.parquet`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        tmp = out_dir / f".{name}.parquet.tmp"
        table.to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{name}.parquet")
    return out_dir
