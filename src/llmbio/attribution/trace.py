"""Attribution graphs: :func:`trace` one prompt through the local replacement model.

Nodes and the adjacency convention are those of :class:`llmbio.attribution.graph.Graph`. Edge
``s -> t`` is the direct linear effect of ``s`` on ``t`` through the frozen local replacement
model (see :mod:`llmbio.attribution.replacement`):

- a feature target's value is its pre-activation ``W_enc . resid_mid`` (without ``b_enc``);
- a logit target's value is the de-meaned logit ``(W_U[t] - mean_v W_U[v]) . final_norm(resid)``
  at the last position (before any final logit softcapping);
- a feature source writes ``a_s W_dec[l -> l']`` into every MLP output ``l' >= l``; errors and
  token embeddings write their vectors.

Incoming edges of a target sum to its value minus constant terms (``b_dec``, attention and norm
biases, the MLP outputs at the skipped BOS position). Rows come from :class:`RowComputer`.
"""

from __future__ import annotations

import ctypes
import logging
import math
import sys
import time
from collections.abc import Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from llmbio.attribution.budget import Ranking, rank_features
from llmbio.attribution.graph import Graph
from llmbio.attribution.replacement import (
    LocalReplacement,
    build_replacement,
    check_transcoder,
    frozen,
)
from llmbio.attribution.rows import RowComputer
from llmbio.tokenizer import check_prompt_length, encode
from llmbio.transcoder.clt import CrossLayerTranscoder

log = logging.getLogger(__name__)

MAX_DENSE_BYTES = 2**29
"""Largest dense adjacency :func:`trace` builds unasked (~11.5k nodes in float32, a 0.5 GB graph
file): the default node budget. Tracing, pruning and scoring such a graph peaks at about 2 GB
(adjacency, one normalised copy, the batched gradients); a 128-token prompt of the organism
(~20k active features) must choose a budget (``max_feature_nodes``), the default run's prompts
(< 2k) are far below it."""


def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim if sys.platform == "linux" else None
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory() -> None:
    """Give freed heap memory back to the operating system (glibc; elsewhere nothing).

    Batched gradients and ranked rows are tensors of a few to tens of MB, which glibc serves
    from its heap once its mmap threshold has grown; freed, they stay resident. A 120-token
    graph left ~0.5 GB so held while its pruning made its own copy of the adjacency.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def prepare_prompt(
    prompt: str | torch.Tensor | Sequence[int], tokenizer=None
) -> tuple[torch.Tensor, str, list[str]]:
    """Token ids ``(n,)``, prompt text and token strings.

    A string is tokenized with special tokens; if it does not start with a special token, the
    tokenizer's BOS is prepended (position 0 is excluded from the graph, as in circuit-tracer).
    Words outside the vocabulary raise :class:`~llmbio.tokenizer.UnknownTokenError`. Ids are
    used as given.
    """
    if isinstance(prompt, str):
        if tokenizer is None:
            raise ValueError("A text prompt needs a tokenizer; pass tokenizer= or token ids.")
        ids = encode(tokenizer, prompt)  # refuses words outside the vocabulary
        if not ids or ids[0] not in tokenizer.all_special_ids:
            raise ValueError("The tokenizer has no BOS token; pass ids that start with one.")
        input_ids = torch.tensor(ids, dtype=torch.long)
    else:
        input_ids = torch.as_tensor(prompt, dtype=torch.long).reshape(-1)
    if input_ids.numel() < 2:
        raise ValueError("The prompt needs at least 2 tokens (BOS plus text).")
    if tokenizer is None:
        return input_ids, prompt if isinstance(prompt, str) else "", [str(i) for i in input_ids]
    text = prompt if isinstance(prompt, str) else tokenizer.decode(input_ids)
    return input_ids, text, tokenizer.convert_ids_to_tokens(input_ids.tolist())


def select_logits(
    logits: torch.Tensor,
    max_logits: int = 10,
    logit_probability: float = 0.95,
    target_tokens: Sequence[int | str] | torch.Tensor | None = None,
    tokenizer=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logit node tokens ``(T,)`` and their probabilities ``(T,)`` from last-position ``logits``.

    Without ``target_tokens``: the most likely tokens until their cumulative probability reaches
    ``logit_probability``, at most ``max_logits``.
    """
    probs = torch.softmax(logits.detach().double().cpu(), dim=-1).float()
    if target_tokens is not None:
        tokens = torch.tensor([_token_id(t, tokenizer) for t in target_tokens], dtype=torch.long)
        if tokens.numel() == 0 or (tokens < 0).any() or (tokens >= len(probs)).any():
            raise ValueError(f"target_tokens must be ids in [0, {len(probs)}), got {tokens}.")
        return tokens, probs[tokens]
    top_p, top = torch.topk(probs, min(max_logits, len(probs)))
    cut = int(torch.searchsorted(torch.cumsum(top_p, 0), logit_probability)) + 1
    return top[:cut], top_p[:cut]


def _token_id(token: int | str, tokenizer) -> int:
    if not isinstance(token, str):
        return int(token)
    if tokenizer is None:
        raise ValueError(f"Target token {token!r} is a string; pass tokenizer= or its id.")
    ids = tokenizer.encode(token, add_special_tokens=False)
    if len(ids) != 1:
        raise ValueError(f"Target {token!r} is {len(ids)} tokens; give a single-token string.")
    return ids[0]


def logit_directions(unembed: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """De-meaned unembedding rows ``(T, D)`` from ``unembed`` ``(vocab, D)``."""
    return unembed[tokens] - unembed.mean(0)


def default_batch_size(n_pos: int, d_model: int) -> int:
    """Targets per backward: gradients of ~2^22 numbers per hook keep memory at tens of MB."""
    return int(min(1024, max(16, 2**22 // (n_pos * d_model))))


@torch.no_grad()
def trace(
    model: nn.Module,
    transcoder: CrossLayerTranscoder,
    prompt: str | torch.Tensor | Sequence[int],
    tokenizer=None,
    max_logits: int = 10,
    logit_probability: float = 0.95,
    target_tokens: Sequence[int | str] | torch.Tensor | None = None,
    batch_size: int | None = None,
    max_feature_nodes: int | None = None,
    show_progress: bool = True,
    max_dense_bytes: int = MAX_DENSE_BYTES,
) -> Graph:
    """The attribution graph of ``prompt`` (text with ``tokenizer``, or token ids).

    ``batch_size`` targets share one backward pass (default: :func:`default_batch_size`).
    ``max_feature_nodes`` keeps only the features with the largest estimated influence on the
    logits (see :func:`llmbio.attribution.budget.rank_features`); the others are left out of the
    graph (their effects are neither nodes nor errors). Without it, every active feature outside
    position 0 is a node, and a dense adjacency over ``max_dense_bytes`` raises (naming the
    size it would need) before any row is computed.
    """
    start = time.perf_counter()
    adapter = check_transcoder(model, transcoder)
    ids, text, token_strs = prepare_prompt(prompt, tokenizer)
    check_prompt_length(model, len(ids))
    rep = build_replacement(model, transcoder, ids)
    rec = rep.recording
    logit_tokens, logit_probs = select_logits(
        rec.logits[-1], max_logits, logit_probability, target_tokens, tokenizer
    )
    directions = logit_directions(adapter.unembed(model).detach().to(rec.embed.dtype), logit_tokens)
    keep = _feature_budget(rep, len(logit_tokens), max_feature_nodes, max_dense_bytes)
    batch = batch_size or default_batch_size(rec.n_pos, rec.embed.shape[-1])
    if batch < 1:
        raise ValueError(f"batch_size must be a positive number of targets, got {batch_size}.")
    log.info(
        "Tracing %d tokens: %d active features, %d kept", rec.n_pos, len(rep.active_features), keep
    )
    with frozen(model, rec) as fm:
        fm.use_skip(rep.skip_fn(transcoder))
        rc = RowComputer(fm, rep, transcoder)
        adjacency, selected = _attribute(rc, directions, logit_probs, keep, batch, show_progress)
    release_freed_memory()
    return Graph(
        prompt=text,
        tokens=token_strs,
        input_ids=ids,
        active_features=rep.active_features[selected],
        activation_values=rep.activation_values[selected].detach().float().cpu(),
        logit_tokens=logit_tokens,
        logit_probabilities=logit_probs,
        adjacency=adjacency.cpu(),
        n_layers=rec.n_layers,
        metadata={
            "model": str(getattr(model.config, "_name_or_path", "")),
            "model_type": model.config.model_type,
            "n_active_features": len(rep.active_features),
            "max_feature_nodes": max_feature_nodes,
            "skip_positions": rep.skip_positions,
            "trace_seconds": round(time.perf_counter() - start, 3),
        },
    )


def _feature_budget(
    rep: LocalReplacement, n_logits: int, max_feature_nodes: int | None, max_dense_bytes: int
) -> int:
    """How many features become nodes; raise if all of them need too large an adjacency."""
    n_active, rec = len(rep.active_features), rep.recording
    if max_feature_nodes is not None and max_feature_nodes < 0:
        raise ValueError(f"max_feature_nodes must be >= 0 or None, got {max_feature_nodes}.")
    keep = n_active if max_feature_nodes is None else min(max_feature_nodes, n_active)
    n_other = (rec.n_layers + 1) * rec.n_pos + n_logits
    itemsize = torch.promote_types(rec.embed.dtype, torch.float32).itemsize
    nbytes = (keep + n_other) ** 2 * itemsize
    if max_feature_nodes is None and nbytes > max_dense_bytes:
        fit = max(math.isqrt(max_dense_bytes // itemsize) - n_other, 0)
        raise ValueError(
            f"{n_active} active features over {rec.n_pos} tokens need a "
            f"{nbytes / 2**30:.2f} GiB dense adjacency, over the budget of "
            f"{max_dense_bytes / 2**30:.2f} GiB; keep the most influential ones with "
            f"max_feature_nodes (--max-feature-nodes, trace.max_feature_nodes; up to {fit} fit "
            "the budget), or raise the budget with max_dense_bytes"
        )
    return keep


def _attribute(
    rc: RowComputer,
    directions: torch.Tensor,
    logit_probs: torch.Tensor,
    keep: int,
    batch: int,
    show_progress: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The adjacency ``(N, N)`` over ``keep`` features and the indices of those features."""
    n_active = len(rc.rep.active_features)
    selected, ranking = torch.arange(n_active), None
    if keep < n_active:
        ranking = rank_features(rc, directions, logit_probs, keep, batch, show_progress)
        release_freed_memory()  # the ranking's gradients, before the adjacency is allocated
        selected = ranking.selected
        rc.set_columns(selected)
    n_nodes = rc.n_cols + len(directions)
    adjacency = torch.zeros(n_nodes, n_nodes, dtype=rc.dtype, device=rc.device)
    _logit_rows(rc, directions, adjacency[rc.n_cols :], batch)
    if ranking is None or ranking.chunks is None:
        features = rc.rep.active_features[selected]
        _feature_rows(rc, rc.transcoder, features, adjacency, batch, show_progress)
    else:
        _gather_rows(ranking, adjacency[:keep, : rc.n_cols])
    return adjacency, selected


def _logit_rows(rc: RowComputer, directions: torch.Tensor, out: torch.Tensor, batch: int) -> None:
    last = torch.full((len(directions),), rc.n_pos - 1)
    for i in range(0, len(directions), batch):
        rc.rows(
            rc.n_layers,
            last[i : i + batch],
            directions[i : i + batch],
            out[i : i + batch, : rc.n_cols],
        )


def _gather_rows(ranking: Ranking, out: torch.Tensor) -> None:
    """The ranking's rows restricted to the selected features, into ``out`` ``(keep, n_cols)``
    (zero); a chunk's feature columns are the first active features, so the first selected."""
    selected, keep = ranking.selected, len(ranking.selected)
    while ranking.chunks:  # each chunk is released once copied
        chunk = ranking.chunks.pop()
        c = chunk.n_feature_cols
        n_sel = int(torch.searchsorted(selected, torch.tensor(c)))
        rows = torch.searchsorted(selected, chunk.features)
        out[rows, :n_sel] = chunk.rows[:, selected[:n_sel]]
        out[rows, keep:] = chunk.rows[:, c:]


def _feature_rows(
    rc: RowComputer,
    transcoder: CrossLayerTranscoder,
    features: torch.Tensor,
    adjacency: torch.Tensor,
    batch: int,
    show_progress: bool,
) -> None:
    """Rows of ``features`` ``(K, 3)`` (sorted) into ``adjacency[:K]``, batched per layer."""
    bar = tqdm(total=len(features), desc="attribution rows", disable=not show_progress, leave=False)
    for layer in range(rc.n_layers):
        idx = (features[:, 0] == layer).nonzero()[:, 0]
        for chunk in idx.split(batch) if len(idx) else ():
            f = features[chunk]
            vectors = rc.rep.encoder_vectors(transcoder, layer, f)
            r0, r1 = int(chunk[0]), int(chunk[-1]) + 1
            rc.rows(layer, f[:, 1], vectors, adjacency[r0:r1, : rc.n_cols])
            bar.update(len(chunk))
    bar.close()
