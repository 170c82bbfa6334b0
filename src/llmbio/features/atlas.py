"""The feature atlas: what each transcoder feature fires on and what it writes to the logits.

:func:`build_atlas` makes one streaming pass over an activation cache (the ``resid_mid`` of
every cached token, encoded layer by layer) and returns three tables, saved by
:func:`save_atlas` as Parquet under ``results/<run>/features/``:

``features.parquet``, one row per (layer, feature): ``layer``, ``feature``, ``n_active``
(tokens with a positive activation), ``density`` (``n_active / n_tokens``), ``mean_active``
(mean positive activation), ``max_activation``, ``q50``, ``q90``, ``q99`` (quantiles of the
positive activations from a log-binned histogram, see
:class:`llmbio.features.streaming.LogHistogram`), ``top_token_id`` and ``top_token`` (the token
of the strongest example).

``examples.parquet``, the top-k activating tokens of each feature: ``layer``, ``feature``,
``rank`` (0 = strongest), ``activation``, ``sequence_id``, ``position``, ``token_id``, ``token``,
``context`` (the token window, the example's token in ``«»``, newlines as ``⏎``),
``context_ids`` (list of token ids of the window, -1 where the cache has no token, e.g. BOS)
and ``window_start`` (position of the window's first token).

``logits.parquet`` (only with ``model``): ``layer``, ``feature``, ``direction`` (``top`` /
``bottom``), ``rank``, ``token_id``, ``token``, ``weight``. The weight is the feature's direct
effect on the logits under two approximations: the feature's decoders into every output layer
are summed (as if each MLP output went straight to the unembedding, ignoring later attention
and MLPs), and the final norm's data-dependent factor is 1 (only its weight, and for LayerNorm
its mean-centring, are applied; no bias, no softcap).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from llmbio.activations import ActivationReader
from llmbio.adapters import get_adapter
from llmbio.features.streaming import LogHistogram, RunningTopK, iter_active
from llmbio.transcoder.clt import CrossLayerTranscoder

QUANTILES = (0.5, 0.9, 0.99)


class TokenText:
    """Decoded token strings, one ``decode`` per distinct id; ``#id`` without a tokenizer."""

    def __init__(self, tokenizer: Any = None):
        self.tokenizer, self._cache = tokenizer, {}

    def __call__(self, token_id: int) -> str:
        if token_id < 0:
            return ""
        if token_id not in self._cache:
            tok = self.tokenizer
            self._cache[token_id] = tok.decode([token_id]) if tok is not None else f"#{token_id}"
        return self._cache[token_id]

    def separator(self, a: int, b: int) -> str:
        """ " " if the tokenizer puts a space between decoded tokens (word-level vocabularies)."""
        if self.tokenizer is None:
            return " "
        joined = self.tokenizer.decode([a, b])
        return " " if joined == f"{self(a)} {self(b)}" else ""


def scan_cache(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    top_k: int,
    split: str = "train",
    batch_size: int = 4096,
    show_progress: bool = True,
) -> tuple[list[LogHistogram], list[RunningTopK], int]:
    """One pass over ``split`` in file order: per-layer histograms, top-k, and the token count.

    Top-k rows index the tokens of ``reader.read_index(split)``.
    """
    hists = [LogHistogram(clt.n_features) for _ in range(clt.n_layers)]
    tops = [RunningTopK(clt.n_features, top_k) for _ in range(clt.n_layers)]
    for layer, row, entries in iter_active(
        clt, reader, split, batch_size, "feature atlas", show_progress
    ):
        hists[layer].update(entries)
        tops[layer].update(entries, row)
    return hists, tops, reader.n_tokens(split)


def _feature_table(hists, tops, n_tokens: int, index: dict, text: TokenText) -> pd.DataFrame:
    frames = []
    for layer, (hist, top) in enumerate(zip(hists, tops, strict=True)):
        n_features = hist.n_active.shape[0]
        q = hist.quantiles(list(QUANTILES)).numpy()
        best = top.rows[:, 0].numpy()
        token_id = np.where(best >= 0, index["token_id"][np.maximum(best, 0)], -1)
        n_active = hist.n_active.numpy()
        frame = pd.DataFrame(
            {
                "layer": layer,
                "feature": np.arange(n_features),
                "n_active": n_active,
                "density": n_active / max(n_tokens, 1),
                "mean_active": (hist.total / hist.n_active.clamp(min=1)).numpy(),
                "max_activation": top.values[:, 0].numpy(),
                **{f"q{round(100 * p)}": q[:, i] for i, p in enumerate(QUANTILES)},
                "top_token_id": token_id,
                "top_token": [text(int(t)) for t in token_id],
            }
        )
        frame.loc[frame["n_active"] == 0, "mean_active"] = np.nan
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _token_grid(index: dict) -> np.ndarray:
    """``grid[sequence_id, position]`` = token id, -1 where the cache has no token."""
    seq, pos = index["sequence_id"], index["position"]
    grid = np.full((int(seq.max()) + 1, int(pos.max()) + 1), -1, dtype=np.int64)
    grid[seq, pos] = index["token_id"]
    return grid


def _example_table(tops, index: dict, window: tuple[int, int], text: TokenText) -> pd.DataFrame:
    before, after = window
    frames = []
    for layer, top in enumerate(tops):
        n_features, k = top.values.shape
        found = top.rows >= 0
        feats, ranks = found.nonzero(as_tuple=True)
        rows = top.rows[found].numpy()
        frames.append(
            pd.DataFrame(
                {
                    "layer": layer,
                    "feature": feats.numpy(),
                    "rank": ranks.numpy(),
                    "activation": top.values[found].numpy(),
                    "sequence_id": index["sequence_id"][rows],
                    "position": index["position"][rows].astype(np.int64),
                    "token_id": index["token_id"][rows].astype(np.int64),
                }
            )
        )
    table = pd.concat(frames, ignore_index=True)
    grid = _token_grid(index)
    offsets = np.arange(-before, after + 1)
    cols = table["position"].to_numpy()[:, None] + offsets[None, :]  # (R, W)
    inside = (cols >= 0) & (cols < grid.shape[1])
    ids = np.where(inside, grid[table["sequence_id"].to_numpy()[:, None], cols.clip(0, None)
                                .clip(None, grid.shape[1] - 1)], -1)  # fmt: skip
    table["token"] = [text(int(t)) for t in table["token_id"]]
    table["context"] = _contexts(ids, before, text)
    table["context_ids"] = list(ids)
    table["window_start"] = table["position"] - before
    return table


def _contexts(ids: np.ndarray, centre: int, text: TokenText) -> list[str]:
    """Readable windows ``(R, W)`` with the centre token marked (vectorised string ops)."""
    if len(ids) == 0:
        return []
    distinct, inverse = np.unique(ids, return_inverse=True)
    pieces = np.array([text(int(t)) for t in distinct])[inverse.reshape(ids.shape)]
    columns = list(pieces.T)  # a new column, not an assignment: fixed-width strings truncate
    columns[centre] = np.char.add(np.char.add("«", columns[centre]), "»")
    valid = distinct[distinct >= 0]
    sep = text.separator(int(valid[0]), int(valid[-1])) if len(valid) else " "
    # Missing tokens (-1) decode to "" and only sit at the window's ends: strip their separators.
    joined = functools.reduce(lambda a, b: np.char.add(np.char.add(a, sep), b), columns)
    if sep:
        joined = np.char.strip(joined, sep)
    return np.char.replace(joined, "\n", "⏎").tolist()


@torch.no_grad()
def logit_table(
    clt: CrossLayerTranscoder, model: torch.nn.Module, n: int = 10, text: TokenText | None = None
) -> pd.DataFrame:
    """Top and bottom ``n`` logits of each feature (approximation: module docstring)."""
    adapter = get_adapter(model)
    norm = adapter.get_final_norm(model)
    unembed = adapter.unembed(model).detach().float()  # (V, D)
    text = text or TokenText()
    frames = []
    for layer in range(clt.n_layers):
        dec = sum(clt.decoder_to(layer, t) for t in clt.target_layers(layer))  # (F, D)
        dec = dec.float().to(unembed.device)
        ones = torch.ones(dec.shape[0], 1, device=dec.device)
        normed = adapter.frozen_norm(norm, dec, ones) - adapter.frozen_norm(norm, 0 * dec, ones)
        for start in range(0, dec.shape[0], 256):  # chunks: (256, V) even for 256k vocabularies
            logits = normed[start : start + 256].float() @ unembed.T
            for direction, largest in (("top", True), ("bottom", False)):
                top = torch.topk(logits, min(n, logits.shape[1]), dim=1, largest=largest)
                vals, ids = top.values.cpu(), top.indices.cpu()
                feats = torch.arange(start, start + len(logits))[:, None].expand_as(ids)
                frames.append(
                    pd.DataFrame({
                        "layer": layer, "feature": feats.flatten().numpy(),
                        "direction": direction, "rank": np.tile(np.arange(ids.shape[1]), len(ids)),
                        "token_id": ids.flatten().numpy(), "weight": vals.flatten().numpy(),
                    })
                )  # fmt: skip
    table = pd.concat(frames, ignore_index=True)
    table = table.sort_values(["layer", "feature", "direction", "rank"], kind="stable")
    table.insert(5, "token", [text(int(t)) for t in table["token_id"]])
    return table.reset_index(drop=True)


def build_atlas(
    clt: CrossLayerTranscoder,
    reader: ActivationReader,
    tokenizer: Any = None,
    model: torch.nn.Module | None = None,
    top_k: int = 20,
    window: tuple[int, int] = (12, 4),
    split: str = "train",
    batch_size: int = 4096,
    n_logits: int = 10,
    show_progress: bool = True,
) -> dict[str, pd.DataFrame]:
    """``{"features", "examples", "logits"}`` tables (module docstring) from one pass over the
    cache; ``window`` is (tokens before, tokens after) the example's token. Without ``model``
    the logits table is empty."""
    if top_k < 1 or min(window) < 0:
        raise ValueError(f"top_k must be >= 1 and window >= (0, 0); got {top_k}, {window}.")
    start = time.perf_counter()
    hists, tops, n_tokens = scan_cache(clt, reader, top_k, split, batch_size, show_progress)
    index = reader.read_index(split)
    text = TokenText(tokenizer)
    atlas = {
        "features": _feature_table(hists, tops, n_tokens, index, text),
        "examples": _example_table(tops, index, window, text),
        "logits": logit_table(clt, model, n_logits, text) if model is not None else _no_logits(),
    }
    atlas["features"].attrs["seconds"] = time.perf_counter() - start
    return atlas


def _no_logits() -> pd.DataFrame:
    columns = ["layer", "feature", "direction", "rank", "token_id", "token", "weight"]
    return pd.DataFrame({c: [] for c in columns})


def save_atlas(atlas: dict[str, pd.DataFrame], out_dir: str | Path) -> Path:
    """Write ``features.parquet``, ``examples.parquet`` and ``logits.parquet`` to ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in atlas.items():
        tmp = out_dir / f".{name}.parquet.tmp"
        table.to_parquet(tmp, index=False)
        tmp.replace(out_dir / f"{name}.parquet")
    return out_dir
