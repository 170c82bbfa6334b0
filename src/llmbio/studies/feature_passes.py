"""Transcoder features of many equal-length prompts in one batched forward pass, with optional
edits at the last position.

The arithmetic study reads every feature at the ``=`` of all ``n * n`` prompts ``calc : a + b
=``, and transplants groups of features from one prompt to another on hundreds of prompts; one
:class:`llmbio.interventions.Intervener` per prompt would cost a forward pass each. Here a
pre-hook on every layer's MLP input norm encodes ``hook_resid_mid`` with the transcoder, as the
Intervener does, on the whole batch at once.

:func:`last_position` is the Intervener's default (unconstrained) mode restricted to edits of
the last position: members of ``mask`` are *set* to ``values`` there, and ``(new - a)
W_dec[l -> l']`` is added to every MLP output ``l' >= l`` at that position, so later layers
see the edit. :func:`all_positions` records every position of right-padded prompts (causal
attention: padding after a token cannot change it).
"""

from __future__ import annotations

import functools
import inspect
from contextlib import ExitStack

import torch
from torch import nn

from llmbio.adapters import get_adapter
from llmbio.attribution.replacement import check_transcoder
from llmbio.transcoder.clt import CrossLayerTranscoder


class _LastHooks:
    def __init__(self, clt: CrossLayerTranscoder, mask, values):
        self.clt, self.mask, self.values = clt, mask, values
        self.acts: list[torch.Tensor | None] = [None] * clt.n_layers
        self.pending: dict[int, torch.Tensor] = {}

    def read(self, layer: int, _module, args, kwargs):
        x = (args[0] if args else kwargs["hidden_states"])[:, -1]  # (B, D)
        acts = self.clt.encode(x.to(self.clt.W_enc.dtype), layer)  # (B, F)
        if self.mask is not None and self.mask[layer].any():
            new = torch.where(self.mask[layer], self.values[layer].to(acts.dtype), acts)
            delta = new - acts
            for target in self.clt.target_layers(layer):
                add = delta @ self.clt.decoder_to(layer, target)  # (B, D)
                self.pending[target] = self.pending.get(target, 0) + add
            acts = new
        self.acts[layer] = acts

    def write(self, layer: int, _module, _args, output):
        if layer not in self.pending:
            return None
        y = output[0] if isinstance(output, tuple) else output  # (B, n, D)
        y = y.clone()
        y[:, -1] += self.pending[layer].to(y.dtype)
        return (y, *output[1:]) if isinstance(output, tuple) else y


@torch.no_grad()
def last_position(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    mask: torch.Tensor | None = None,
    values: torch.Tensor | None = None,
    prefix_len: int = 0,
    chunk: int = 2000,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits ``(B, vocab)`` and transcoder activations ``(L, B, F)`` of prompts
    ``input_ids`` ``(B, n)``; where ``mask`` ``(L, B, F)`` is true the activation is set to
    ``values`` ``(L, B, F)`` (the activations returned are the edited ones).

    ``prefix_len``: the first tokens, shared by many prompts (``calc : a +`` by the ``n``
    prompts of one ``a``), run once per distinct prefix and reused through the key-value cache.
    """
    if model.training:
        raise ValueError("The model is in training mode (dropout); call model.eval() first.")
    check_transcoder(model, clt)
    logits, acts = [], []
    for start in range(0, input_ids.shape[0], chunk):
        part = slice(start, start + chunk)
        hooks = _LastHooks(
            clt,
            None if mask is None else mask[:, part],
            None if values is None else values[:, part],
        )
        with ExitStack() as stack:
            out = _forward(model, input_ids[part], prefix_len, stack, hooks)
        logits.append(out.logits[:, -1].float())
        acts.append(torch.stack(hooks.acts))
    return torch.cat(logits), torch.cat(acts, dim=1)


def _forward(model, ids: torch.Tensor, prefix_len: int, stack: ExitStack, hooks: _LastHooks):
    """The model's output on ``ids``, with ``hooks`` on the pass that holds the last position."""
    kwargs = {}
    if prefix_len:
        prefixes, index = torch.unique(ids[:, :prefix_len], dim=0, return_inverse=True)
        out = model(input_ids=prefixes, use_cache=True)
        cache = out["cache"] if "cache" in out else out["past_key_values"]
        cache.batch_select_indices(index)
        names = inspect.signature(model.forward).parameters
        kwargs = {"cache" if "cache" in names else "past_key_values": cache, "use_cache": True}
        ids = ids[:, prefix_len:]
    adapter = get_adapter(model)
    for layer in range(hooks.clt.n_layers):
        norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
        read = functools.partial(hooks.read, layer)
        stack.callback(norm.register_forward_pre_hook(read, with_kwargs=True).remove)
        out_module = adapter.layer_module(model, layer, adapter.mlp_out)
        write = functools.partial(hooks.write, layer)
        stack.callback(out_module.register_forward_hook(write).remove)
    return model(input_ids=ids, logits_to_keep=1, **{"use_cache": False, **kwargs})


@torch.no_grad()
def all_positions(
    model: nn.Module, clt: CrossLayerTranscoder, input_ids: torch.Tensor
) -> torch.Tensor:
    """Transcoder activations ``(L, B, n, F)`` at every position of ``input_ids`` ``(B, n)``."""
    adapter = check_transcoder(model, clt)
    acts: list[torch.Tensor | None] = [None] * clt.n_layers

    def read(layer, _module, args, kwargs):
        x = args[0] if args else kwargs["hidden_states"]
        acts[layer] = clt.encode(x.to(clt.W_enc.dtype), layer)

    with ExitStack() as stack:
        for layer in range(clt.n_layers):
            norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
            hook = functools.partial(read, layer)
            stack.callback(norm.register_forward_pre_hook(hook, with_kwargs=True).remove)
        model(input_ids=input_ids, use_cache=False, logits_to_keep=1)
    return torch.stack(acts)
