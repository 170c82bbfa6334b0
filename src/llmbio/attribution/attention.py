"""Attention with recorded or frozen patterns, through transformers' attention-interface registry.

Two implementations are registered under ``RECORD_ATTENTION`` and ``FROZEN_ATTENTION``; a model
uses them after ``model.set_attn_implementation(name)``. The record pass computes the pattern as
the eager path does (GQA ``repeat_kv``, additive masks incl. sliding windows, Gemma-2 logit
softcapping, softmax in at least float32) and stores it; the frozen pass computes
``pattern @ V`` with the stored pattern, so gradients flow only through the values.
:func:`use_attention` switches a model for the duration of an ``ExitStack``.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.masking_utils import eager_mask

from llmbio.adapters import Adapter

RECORD_ATTENTION = "llmbio_record"
FROZEN_ATTENTION = "llmbio_frozen"


@dataclass
class _AttentionSlot:
    """Where the attention function of one layer reads or writes its pattern."""

    patterns: list[torch.Tensor | None]
    layer: int


# id(attention module) -> slot; filled only while a record/frozen context is active.
_SLOTS: dict[int, _AttentionSlot] = {}


def _slot(module: nn.Module) -> _AttentionSlot:
    slot = _SLOTS.get(id(module))
    if slot is None:
        raise RuntimeError(
            "The llmbio attention implementation ran outside llmbio.attribution.replacement's "
            "record()/frozen(); restore the model's attention with "
            "model.set_attn_implementation('sdpa')."
        )
    return slot


def _repeat_kv(x: torch.Tensor, n_rep: int) -> torch.Tensor:
    """``(B, H_kv, n, d) -> (B, H_kv * n_rep, n, d)``, each kv head repeated for its query group."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)


def _record_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention that stores its pattern ``(B, H, n, n)``; q/k/v are ``(B, H(_kv), n, d)``."""
    if dropout:
        raise ValueError("Attention dropout is active; call model.eval() before tracing.")
    n_rep = query.shape[1] // key.shape[1]
    scaling = query.shape[-1] ** -0.5 if scaling is None else scaling
    scores = query @ _repeat_kv(key, n_rep).transpose(2, 3) * scaling
    if softcap is not None:  # Gemma-2 caps attention logits before masking
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        scores = scores + attention_mask[..., : key.shape[-2]]
    probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(query.dtype, torch.float32))
    probs = probs.to(query.dtype)
    slot = _slot(module)
    slot.patterns[slot.layer] = probs.detach()
    out = probs @ _repeat_kv(value, n_rep)
    return out.transpose(1, 2).contiguous(), probs


def _frozen_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``pattern @ V`` with the recorded pattern ``(1, H, n, n)`` broadcast over the batch.

    A shorter input (a prefix of the recorded prompt) uses the pattern's top-left block: with
    causal attention, the first ``m`` positions never see later ones.
    """
    slot = _slot(module)
    pattern, m = slot.patterns[slot.layer], value.shape[-2]
    if pattern is None or pattern.shape[-1] < m:
        raise ValueError(
            f"Layer {slot.layer}: no recorded pattern for {m} positions; "
            "run the frozen model on (a prefix of) the recorded prompt."
        )
    pattern = pattern[..., :m, :m]
    out = pattern @ _repeat_kv(value, query.shape[1] // key.shape[1])
    return out.transpose(1, 2).contiguous(), pattern


AttentionInterface.register(RECORD_ATTENTION, _record_attention)
AttentionInterface.register(FROZEN_ATTENTION, _frozen_attention)
# Custom implementations get the eager additive masks (sliding windows included).
AttentionMaskInterface.register(RECORD_ATTENTION, eager_mask)
AttentionMaskInterface.register(FROZEN_ATTENTION, eager_mask)


def use_attention(
    stack: ExitStack, model: nn.Module, adapter: Adapter, name: str, patterns: list
) -> None:
    """Run ``model``'s attention as ``name`` until ``stack`` closes; layer ``l`` reads or writes
    ``patterns[l]`` (``(1, H, n, n)``)."""
    original = model.config._attn_implementation
    for layer in range(adapter.n_layers(model)):
        attn = adapter.layer_module(model, layer, adapter.attn)
        _SLOTS[id(attn)] = _AttentionSlot(patterns, layer)
        stack.callback(_SLOTS.pop, id(attn), None)
    model.set_attn_implementation(name)
    stack.callback(model.set_attn_implementation, original)
