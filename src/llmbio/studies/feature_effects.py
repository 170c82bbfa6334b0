"""Dense feature edits on a batch of equal-length prompts, and each feature's first-order effect.

Both rest on one splice of the transcoder into the *real* model: at every layer ``l`` a
pre-hook on the MLP's input norm encodes ``hook_resid_mid`` into activations ``a`` (B, n, F),
takes ``new = scale * a + offset`` and adds ``(new - a) W_dec[l -> l']`` to every MLP output
``l' >= l``, which is what :class:`llmbio.interventions.Intervener` does in its default
(unconstrained) mode, with one ``scale`` / ``offset`` entry per (prompt, layer, position,
feature) instead of a list of edits. Scale 1 and offset 0 leave an entry as it is.

- :func:`edited_pass`: logits and activations of the edited batch (sweeps over hundreds of
  prompts cost one forward pass per prompt length on a small model);
- :func:`feature_effects`: ``d metric / d scale`` at ``scale = 1``, i.e. ``a * (W_dec .
  d metric / d mlp_out)`` through the real MLPs, attention and norms downstream. Zeroing a feature
  changes the metric by about ``-effect``: a linear estimate of every single-feature ablation
  from one backward pass (attribution patching). It misses the model's nonlinearity (the final
  norm saturates), so check the top features with real edits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from contextlib import ExitStack
from typing import NamedTuple

import torch
from torch import nn

from llmbio.attribution.replacement import check_transcoder
from llmbio.transcoder.clt import CrossLayerTranscoder

Metric = Callable[[torch.Tensor], torch.Tensor]  # last-position logits (B, V) -> (B,)


class BatchOutput(NamedTuple):
    logits: torch.Tensor  # (B, V) at the last position, float32
    activations: torch.Tensor  # (B, L, n, F), edited entries as edited


class _Splice:
    """Hook state of one pass: the edits per layer and the decoder outputs queued per layer."""

    def __init__(self, clt: CrossLayerTranscoder, scale: torch.Tensor, offset: torch.Tensor):
        self.clt, self.scale, self.offset = clt, scale, offset  # (B, L, n, F) each
        self.acts: list[torch.Tensor | None] = [None] * clt.n_layers
        self.pending: list[torch.Tensor | None] = [None] * clt.n_layers

    def read(self, layer: int, _module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]  # (B, n, D)
        acts = self.clt.encode(x.detach().to(self.clt.W_enc.dtype), layer)  # (B, n, F)
        scale, offset = self.scale[:, layer], self.offset[:, layer]
        new = scale * acts + offset
        self.acts[layer] = new.detach()
        if scale.requires_grad:
            pos = slice(None)  # the gradient needs every entry
        else:  # only positions with an edit change the MLP outputs
            pos = ((scale != 1) | (offset != 0)).any(2).any(0).nonzero().flatten()
            if pos.numel() == 0:
                return
        delta = (new - acts)[:, pos]
        for target in self.clt.target_layers(layer):
            out = torch.zeros_like(x, dtype=delta.dtype)
            out[:, pos] = delta @ self.clt.decoder_to(layer, target)  # (B, n, D)
            queued = self.pending[target]
            self.pending[target] = out if queued is None else queued + out

    def write(self, layer: int, _module, _args, output):
        if self.pending[layer] is None:
            return None
        y = output[0] if isinstance(output, tuple) else output
        new = y + self.pending[layer].to(y.dtype)
        return (new, *output[1:]) if isinstance(output, tuple) else new


def identity_edits(clt: CrossLayerTranscoder, batch: int, n_pos: int) -> tuple[torch.Tensor, ...]:
    """``(scale, offset)`` of shape ``(B, L, n, F)`` that change nothing (ones, zeros)."""
    shape = (batch, clt.n_layers, n_pos, clt.n_features)
    dtype, device = clt.W_enc.dtype, clt.W_enc.device
    return torch.ones(shape, dtype=dtype, device=device), torch.zeros(
        shape, dtype=dtype, device=device
    )


def _forward(model, clt, input_ids, state: _Splice) -> torch.Tensor:
    adapter = check_transcoder(model, clt)
    with ExitStack() as stack:
        for layer in range(clt.n_layers):
            norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
            out = adapter.layer_module(model, layer, adapter.mlp_out)
            read = functools.partial(state.read, layer)
            stack.callback(norm.register_forward_pre_hook(read, with_kwargs=True).remove)
            stack.callback(out.register_forward_hook(functools.partial(state.write, layer)).remove)
        logits = model(input_ids=input_ids, use_cache=False).logits[:, -1]
    return logits.float()


def edited_pass(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    scale: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> BatchOutput:
    """One pass of ``input_ids`` ``(B, n)`` with ``new = scale * a + offset`` everywhere."""
    base_scale, base_offset = identity_edits(clt, *input_ids.shape)
    scale = base_scale if scale is None else scale
    offset = base_offset if offset is None else offset
    state = _Splice(clt, scale, offset)
    with torch.no_grad():
        logits = _forward(model, clt, input_ids, state)
    return BatchOutput(logits, torch.stack(state.acts, dim=1))


def feature_effects(
    model: nn.Module, clt: CrossLayerTranscoder, input_ids: torch.Tensor, metric: Metric
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(effects, activations, metric)`` for ``input_ids`` ``(B, n)``: effects and activations
    ``(B, L, n, F)``, the metric of the unedited pass ``(B,)``."""
    scale, offset = identity_edits(clt, *input_ids.shape)
    scale.requires_grad_(True)
    state = _Splice(clt, scale, offset)
    with torch.enable_grad():
        values = metric(_forward(model, clt, input_ids, state))
        (grad,) = torch.autograd.grad(values.sum(), scale)
    return grad, torch.stack(state.acts, dim=1), values.detach()


def logit_difference(positive: int, negative: int) -> Metric:
    """``logit[positive] - logit[negative]`` at the last position."""
    return lambda logits: logits[:, positive] - logits[:, negative]
