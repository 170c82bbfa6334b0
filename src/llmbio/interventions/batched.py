"""Feature edits on a batch of equal-length prompts, each prompt with its own edits.

The batched twin of :class:`llmbio.interventions.Intervener` in its default (unconstrained)
mode: at every layer a pre-hook on the MLP's input norm encodes ``hook_resid_mid`` with the
transcoder, applies each prompt's edits to the live activations (``new = scale * a +
offset``) and adds ``(new - a) W_dec[l -> l']`` to every MLP output ``l' >= l``. One forward
pass then serves many prompts, which is what makes sweeps (edits x prompts x positions) and
greedy generation under edits affordable on a CPU, where a small model's forward pass costs
about the same for one prompt as for a hundred.

Prompts must have the same length (no padding, so no attention mask is needed). Positions
``None`` mean every position but the first, resolved against the current length at each
generation step, as :func:`llmbio.interventions.generate_with_edits` does.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from contextlib import ExitStack
from typing import NamedTuple

import torch
from torch import nn

from llmbio.attribution.replacement import check_transcoder
from llmbio.interventions.edits import Edit, compile_edits
from llmbio.transcoder.clt import CrossLayerTranscoder


class BatchPass(NamedTuple):
    """One forward pass of ``B`` prompts of ``n`` tokens."""

    logits: torch.Tensor  # (B, n, vocab), at least float32
    activations: torch.Tensor | None  # (B, L, n, F) edited transcoder activations, if recorded


class _Entries(NamedTuple):
    """The edited entries of one layer over the batch, ``E`` of them."""

    batch: torch.Tensor  # (E,) long
    positions: torch.Tensor  # (E,) long
    features: torch.Tensor  # (E,) long
    scale: torch.Tensor  # (E,)
    offset: torch.Tensor  # (E,)


def compile_batch(
    edits: Sequence[Sequence[Edit]], clt: CrossLayerTranscoder, n_pos: int
) -> dict[int, _Entries]:
    """Per layer, every prompt's compiled edits stacked with their prompt index."""
    parts: dict[int, list[tuple]] = {}
    for b, chosen in enumerate(edits):
        for layer, e in compile_edits(chosen, clt.n_layers, clt.n_features, n_pos).items():
            parts.setdefault(layer, []).append((torch.full_like(e.positions, b), *e))
    return {
        layer: _Entries(*(torch.cat(column) for column in zip(*rows, strict=True)))
        for layer, rows in parts.items()
    }


class _BatchHooks:
    def __init__(self, clt: CrossLayerTranscoder, entries: dict[int, _Entries], record: bool):
        self.clt, self.entries, self.record = clt, entries, record
        self.pending: dict[int, torch.Tensor] = {}
        self.acts: list[torch.Tensor | None] = [None] * clt.n_layers

    def read(self, layer: int, _module, args, kwargs):
        if layer not in self.entries and not self.record:
            return
        x = args[0] if args else kwargs["hidden_states"]  # (B, n, D)
        acts = self.clt.encode(x.to(self.clt.W_enc.dtype), layer)  # (B, n, F)
        if layer in self.entries:
            b, pos, feat, scale, offset = (t.to(x.device) for t in self.entries[layer])
            old = acts[b, pos, feat]
            new = scale.to(old.dtype) * old + offset.to(old.dtype)
            acts = acts.clone()
            acts[b, pos, feat] = new
            for target in self.clt.target_layers(layer):
                vectors = (new - old)[:, None] * self.clt.decoder_to(layer, target)[feat]
                if target not in self.pending:
                    self.pending[target] = x.new_zeros(x.shape, dtype=vectors.dtype)
                self.pending[target].index_put_((b, pos), vectors, accumulate=True)
        if self.record:
            self.acts[layer] = acts

    def write(self, layer: int, _module, _args, output):
        if layer not in self.pending:
            return None
        y = output[0] if isinstance(output, tuple) else output
        new = y + self.pending[layer].to(y.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new


@torch.no_grad()
def run_batch(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    edits: Sequence[Sequence[Edit]] | None = None,
    *,
    record_activations: bool = False,
) -> BatchPass:
    """``input_ids`` ``(B, n)``; ``edits[b]`` are prompt ``b``'s edits (``None``: no edits)."""
    ids = _check(model, input_ids, edits)
    edits = edits if edits is not None else [()] * ids.shape[0]
    return _run(model, clt, ids, compile_batch(edits, clt, ids.shape[1]), record_activations)


def _check(model: nn.Module, input_ids, edits) -> torch.Tensor:
    if model.training:
        raise ValueError("The model is in training mode (dropout); call model.eval() first.")
    ids = torch.as_tensor(input_ids)
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, n_tokens), got {tuple(ids.shape)}")
    if edits is not None and len(edits) != ids.shape[0]:
        raise ValueError(f"{len(edits)} edit lists for a batch of {ids.shape[0]} prompts")
    return ids


def _run(model, clt, ids: torch.Tensor, entries: dict[int, _Entries], record: bool) -> BatchPass:
    adapter = check_transcoder(model, clt)
    hooks = _BatchHooks(clt, entries, record)
    with ExitStack() as stack:
        for layer in range(clt.n_layers):
            norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
            out = adapter.layer_module(model, layer, adapter.mlp_out)
            read = functools.partial(hooks.read, layer)
            stack.callback(norm.register_forward_pre_hook(read, with_kwargs=True).remove)
            stack.callback(out.register_forward_hook(functools.partial(hooks.write, layer)).remove)
        device = next(model.parameters()).device
        logits = model(input_ids=ids.to(device), use_cache=False).logits
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    acts = torch.stack(hooks.acts, dim=1) if record else None
    return BatchPass(logits, acts)


@torch.no_grad()
def generate_batch(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    edits: Sequence[Sequence[Edit]] | None = None,
    max_new_tokens: int = 8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy continuations under edits: new tokens ``(B, T)`` and the next-token
    probabilities ``(B, T, vocab)`` each step chose from. Every step reruns the whole
    sequence, so explicit positions (the prompt's) stay edited while the line is written."""
    ids = _check(model, input_ids, edits)
    edits = edits if edits is not None else [()] * ids.shape[0]
    # explicit positions do not depend on the length: compile them once
    fixed = all(e.positions is not None for chosen in edits for e in chosen)
    entries = compile_batch(edits, clt, ids.shape[1]) if fixed else None
    tokens, probs = [], []
    for _ in range(max_new_tokens):
        step = entries if fixed else compile_batch(edits, clt, ids.shape[1])
        p = _run(model, clt, ids, step, False).logits[:, -1].softmax(-1)  # (B, vocab)
        token = p.argmax(-1)
        tokens.append(token)
        probs.append(p)
        ids = torch.cat([ids, token[:, None].to(ids.device)], dim=1)
    return torch.stack(tokens, 1), torch.stack(probs, 1)
