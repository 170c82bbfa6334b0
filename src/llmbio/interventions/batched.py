"""Feature edits on a batch of equal-length prompts, each prompt with its own edits, through
the one splice of :mod:`llmbio.interventions.engine` (in its unconstrained mode).

One forward pass serves many prompts, which is what makes sweeps (edits x prompts x positions)
and greedy generation under edits affordable on a CPU, where a small model's forward pass
costs about the same for one prompt as for a hundred. Edits are listed per prompt
(:func:`run_batch`, :func:`generate_batch`) or :class:`~llmbio.interventions.engine.DenseEdits`;
:func:`feature_effects` / :func:`feature_gradients` take the gradient of a metric with respect
to every dense ``scale`` / ``offset``.

Prompts must have the same length: there is no attention mask, so right padding is harmless
only to the positions before it (causal attention). Positions ``None`` mean every position but
the first, resolved against the current length at each generation step, as
:func:`llmbio.interventions.generate_with_edits` does. A ``last_only`` pass reads, edits and
records the last position only and computes only its logits; its first ``prefix_len`` tokens,
shared by many prompts, then run once per distinct prefix, through the key-value cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
from torch import nn

from llmbio.attribution.replacement import check_eval
from llmbio.interventions.edits import Edit, LayerEdits, check_feature
from llmbio.interventions.engine import (
    BatchEdits,
    DenseEdits,
    Entries,
    at_least_float32,
    compile_batch,
    spliced,
    stack_compiled,
)
from llmbio.tokenizer import check_prompt_length
from llmbio.transcoder.clt import CrossLayerTranscoder

Metric = Callable[[torch.Tensor], torch.Tensor]  # last-position logits (B, V) -> (B,)


class BatchPass(NamedTuple):
    """One forward pass of ``B`` prompts of ``n`` tokens (``n = 1``, the last position, in a
    ``last_only`` pass)."""

    logits: torch.Tensor  # (B, n, vocab), at least float32
    activations: torch.Tensor | None  # (B, L, n, F) edited transcoder activations, if recorded


def spliced_pass(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    edits: BatchEdits = None,
    *,
    record: bool = False,
    last_only: bool = False,
    prefix_len: int = 0,
) -> BatchPass:
    """The core pass of ``input_ids`` ``(B, n)`` with compiled ``edits`` (see :func:`run_batch`);
    it leaves gradients on or off as the caller has them."""
    ids = input_ids.to(next(model.parameters()).device)
    kwargs = _prefix_cache(model, ids[:, :prefix_len]) if prefix_len else {"use_cache": False}
    if last_only:
        kwargs["logits_to_keep"] = 1
    with spliced(model, clt, edits, record=record, last_only=last_only) as state:
        out = model(input_ids=ids[:, prefix_len:], **kwargs)
    acts = torch.stack(state.acts, dim=1) if record else None
    return BatchPass(at_least_float32(out.logits), acts)


def _with_cache(model: nn.Module, cache) -> dict:
    """Keyword arguments that pass ``cache`` (``None``: start one) and ask for it back."""
    names = inspect.signature(model.forward).parameters
    return {"cache" if "cache" in names else "past_key_values": cache, "use_cache": True}


def _cache_of(out):
    return out["cache"] if "cache" in out else out["past_key_values"]


def _prefix_cache(model: nn.Module, prefixes: torch.Tensor) -> dict:
    """Keyword arguments that continue each prompt from its prefix ``(B, p)``; each distinct
    prefix runs once (unspliced) and the key-value cache is expanded back to the batch."""
    unique, index = torch.unique(prefixes, dim=0, return_inverse=True)
    cache = _cache_of(model(input_ids=unique, use_cache=True))
    cache.batch_select_indices(index)
    return _with_cache(model, cache)


@torch.no_grad()
def run_batch(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    edits: Sequence[Sequence[Edit]] | DenseEdits | None = None,
    *,
    record_activations: bool = False,
    last_only: bool = False,
    prefix_len: int = 0,
) -> BatchPass:
    """``input_ids`` ``(B, n)``; ``edits[b]`` are prompt ``b``'s edits, or :class:`DenseEdits`
    (``None``: no edits).

    ``last_only``: the transcoder reads, edits and records the last position only, and only
    its logits are computed (``DenseEdits`` of one position). ``prefix_len`` (``last_only``
    passes): the first tokens run once per distinct prefix, outside the splice.
    """
    ids = _check(model, clt, input_ids, edits, last_only)
    if prefix_len and not last_only:
        raise ValueError("prefix_len needs last_only: the cached prefix runs outside the splice")
    if edits is not None and not isinstance(edits, DenseEdits):
        edits = compile_batch(edits, clt, ids.shape[1])
    return spliced_pass(
        model, clt, ids, edits, record=record_activations, last_only=last_only,
        prefix_len=prefix_len,
    )  # fmt: skip


@torch.no_grad()
def run_compiled(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    compiled: Sequence[dict[int, LayerEdits]],
) -> BatchPass:
    """:func:`run_batch` with each prompt's edits already compiled (``compiled[b]``, as
    :func:`~llmbio.interventions.edits.compile_edits` returns them), for callers that build
    many large edits from tensors and would spend most of the pass making ``Edit`` objects."""
    ids = _check(model, clt, input_ids, list(compiled))
    entries = stack_compiled(compiled)
    for layer, e in entries.items():
        _check_entries(layer, e, clt, ids.shape[1])
    return spliced_pass(model, clt, ids, entries)


def _check_entries(layer: int, e: Entries, clt: CrossLayerTranscoder, n_pos: int) -> None:
    """Raise on a compiled layer, position or feature the pass does not have."""
    check_feature(layer, 0, clt.n_layers, clt.n_features)
    for name, values, size in (
        ("positions", e.positions, n_pos),
        ("features", e.features, clt.n_features),
    ):
        if len(values) and not 0 <= int(values.min()) <= int(values.max()) < size:
            raise ValueError(f"compiled edits of layer {layer} name {name} outside 0..{size - 1}")


def _check(model: nn.Module, clt, input_ids, edits, last_only: bool = False) -> torch.Tensor:
    check_eval(model)
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, n_tokens), got {tuple(ids.shape)}")
    check_prompt_length(model, ids.shape[1], "each prompt of the batch")
    if isinstance(edits, DenseEdits):
        shape = (ids.shape[0], clt.n_layers, 1 if last_only else ids.shape[1], clt.n_features)
        if tuple(edits.scale.shape) != shape or tuple(edits.offset.shape) != shape:
            raise ValueError(f"DenseEdits must be {shape} (batch, layers, positions, features)")
    elif edits is not None:
        if last_only:
            raise ValueError("a last_only pass takes DenseEdits of the last position")
        if len(edits) != ids.shape[0]:
            raise ValueError(f"{len(edits)} edit lists for a batch of {ids.shape[0]} prompts")
    return ids


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    edits: Sequence[Sequence[Edit]] | None = None,
    max_new_tokens: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuations under edits: new tokens ``(B, T)`` and the next-token
    probabilities ``(B, T, vocab)`` each step chose from.

    The prompt runs once, with its edits, and fills the key-value cache; each later step runs
    only the new token, with the edits of its position (positions ``None`` reach every new
    token; explicit positions refer to the prompt). The layers see the same values as in a
    rerun of the whole sequence under the same edits, since no position attends to a later one
    (equal up to float rounding: checked against :func:`generate_with_edits` in the tests).
    """
    ids = _check(model, clt, input_ids, edits)
    edits = edits if edits is not None else [()] * ids.shape[0]
    # explicit positions do not depend on the length: compile them once
    fixed = all(e.positions is not None for chosen in edits for e in chosen)
    entries = compile_batch(edits, clt, ids.shape[1]) if fixed else None
    ids = ids.to(next(model.parameters()).device)
    tokens, probs, cache = [], [], None
    for _ in range(max_new_tokens):
        n = ids.shape[1]
        step = entries if fixed else compile_batch(edits, clt, n)
        if cache is not None:  # only the newest token runs: its edits, moved to position 0
            step = _at_position(step, n - 1)
        new_ids = ids if cache is None else ids[:, -1:]
        with spliced(model, clt, step):
            out = model(input_ids=new_ids, **_with_cache(model, cache))
        cache = _cache_of(out)
        p = at_least_float32(out.logits[:, -1]).softmax(-1)  # (B, vocab)
        token = p.argmax(-1)
        tokens.append(token)
        probs.append(p)
        ids = torch.cat([ids, token[:, None].to(ids.device)], dim=1)
    return torch.stack(tokens, 1), torch.stack(probs, 1)


def _at_position(entries: dict[int, Entries], position: int) -> dict[int, Entries]:
    """The compiled entries at ``position``, for a pass of that one position (index 0)."""
    out = {}
    for layer, e in entries.items():
        keep = e.positions == position
        if keep.any():
            out[layer] = Entries(
                e.batch[keep], torch.zeros_like(e.positions[keep]), e.features[keep],
                e.scale[keep], e.offset[keep],
            )  # fmt: skip
    return out


def feature_effects(
    model: nn.Module, clt: CrossLayerTranscoder, input_ids: torch.Tensor, metric: Metric
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every feature's first-order effect on ``metric`` (of the last-position logits) in
    prompts ``input_ids`` ``(B, n)``: ``d metric / d scale`` at ``scale = 1``, i.e. ``a *
    (W_dec . d metric / d mlp_out)`` through the real MLPs, attention and norms downstream.

    Zeroing a feature changes the metric by about ``-effect``: a linear estimate of every
    single-feature ablation from one backward pass (attribution patching). It misses the
    model's nonlinearity (the final norm saturates), so check the top features with real edits.
    Returns ``(effects, activations, metric)``: effects and activations ``(B, L, n, F)``, the
    metric of the unedited pass ``(B,)``.
    """
    return _edit_gradient(model, clt, input_ids, metric, "scale")


def feature_gradients(
    model: nn.Module, clt: CrossLayerTranscoder, input_ids: torch.Tensor, metric: Metric
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``d metric / d a`` of every feature activation in prompts ``input_ids`` ``(B, n)``: the
    gradient with respect to the edit ``offset``, i.e. ``W_dec . d metric / d mlp_out`` through
    the real MLPs, attention and norms downstream. Active or not, patching a feature from
    ``a`` to ``a'`` changes the metric by about ``gradient * (a' - a)`` (attribution patching).
    Returns ``(gradients, activations, metric)`` as :func:`feature_effects` does.
    """
    return _edit_gradient(model, clt, input_ids, metric, "offset")


def _edit_gradient(model, clt, input_ids, metric: Metric, wrt: Literal["scale", "offset"]):
    _check(model, clt, input_ids, None)
    edits = DenseEdits.identity(clt, *input_ids.shape)
    leaf = getattr(edits, wrt).requires_grad_(True)
    with torch.enable_grad():
        out = spliced_pass(model, clt, input_ids, edits, record=True)
        values = metric(out.logits[:, -1])
        (grad,) = torch.autograd.grad(values.sum(), leaf)
    return grad, out.activations, values.detach()


def logit_difference(positive: int, negative: int) -> Metric:
    """``logit[positive] - logit[negative]`` at the last position."""
    return lambda logits: logits[:, positive] - logits[:, negative]


def logit_differences(positive: torch.Tensor, negative: torch.Tensor) -> Metric:
    """``logit[positive[b]] - logit[negative[b]]`` at the last position of each prompt ``b``;
    ``positive`` and ``negative`` are token ids ``(B,)``."""

    def metric(logits: torch.Tensor) -> torch.Tensor:
        pick = torch.stack([positive, negative], 1).to(logits.device)  # (B, 2)
        both = logits.gather(1, pick)
        return both[:, 0] - both[:, 1]

    return metric
