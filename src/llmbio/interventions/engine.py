"""Feature interventions on the real forward pass of a Hugging Face model, via forward hooks.

At every layer ``l`` a pre-hook on the MLP's input norm reads ``blocks.{l}.hook_resid_mid``,
encodes it with the transcoder, applies the layer's edits (``new = scale * a + offset``) and
queues ``(new - a) W_dec[l -> l']`` for every MLP output ``l' >= l`` the feature writes to; a
hook on the MLP output adds what is queued. Modes:

- **unconstrained** (default): ``a`` is computed from the live (already edited) residual
  stream, so edits downstream of other edits see their effects; the real MLPs run as usual.
- **constrained** (``constrained_layers``): the MLP outputs of those layers are replaced by their
  clean values plus the queued decoder contributions, and edits there act on the clean
  activations, so effects cannot propagate through those MLPs (circuit-tracer's
  ``constrained_layers``). Unlike circuit-tracer, layers outside the range still receive the
  edits' decoder contributions, as in the unconstrained mode.
- ``freeze_attention``: attention patterns are those of the clean run (the attribution tracer's
  frozen attention). When every layer is constrained, norm denominators are frozen too, so
  the pass is the local replacement model's linear map: the effects equal graph edges.
- ``freeze_final_norm``: the final norm divides by its clean denominator, as the attribution
  graph's logit nodes do. An edit then cannot rescale every logit by changing the final
  residual's norm (the output "temperature"), an effect the graph holds fixed by construction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from typing import NamedTuple

import torch
from torch import nn

from llmbio.adapters import Adapter
from llmbio.attribution.attention import FROZEN_ATTENTION, use_attention
from llmbio.attribution.replacement import Recording, check_transcoder, record
from llmbio.interventions.edits import Edit, LayerEdits, compile_edits
from llmbio.tokenizer import check_prompt_length
from llmbio.transcoder.clt import CrossLayerTranscoder


class PassOutput(NamedTuple):
    """One forward pass of one prompt of ``n`` tokens."""

    logits: torch.Tensor  # (n, vocab), at least float32
    resid_mid: torch.Tensor  # (L, n, D): hook_resid_mid as the pass saw it
    activations: torch.Tensor  # (L, n, F): transcoder activations, edited entries as edited


def as_input_ids(input_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """A 1-D long tensor ``(n,)`` from ``(n,)``, ``(1, n)`` or a list of ids."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.numel() == 0 or ids.dtype != torch.long:
        raise ValueError(
            f"input_ids must be a non-empty 1-D long tensor (one prompt), got {tuple(ids.shape)} "
            f"{ids.dtype}; intervene on one prompt at a time."
        )
    return ids


def check_layers(layers: Iterable[int] | None, n_layers: int) -> frozenset[int]:
    """``constrained_layers`` as a set; raises on layers the model does not have."""
    chosen = frozenset(int(layer) for layer in layers or ())
    bad = sorted(layer for layer in chosen if not 0 <= layer < n_layers)
    if bad:
        raise ValueError(
            f"constrained_layers {bad} out of range: the model has layers 0..{n_layers - 1}."
        )
    return chosen


def hook_layers(
    stack: ExitStack,
    model: nn.Module,
    adapter: Adapter,
    n_layers: int,
    read: Callable[..., None],
    write: Callable[..., object],
) -> None:
    """Until ``stack`` closes, call ``read(layer, module, args, kwargs)`` before every layer's MLP
    input norm (its input is ``hook_resid_mid``) and ``write(layer, module, args, output)`` after
    its MLP (``hook_mlp_out``; a return value other than None replaces the output)."""
    for layer in range(n_layers):
        norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
        out = adapter.layer_module(model, layer, adapter.mlp_out)
        pre_hook = functools.partial(read, layer)
        stack.callback(norm.register_forward_pre_hook(pre_hook, with_kwargs=True).remove)
        stack.callback(out.register_forward_hook(functools.partial(write, layer)).remove)


class _Pass:
    """Hook state of one edited forward pass (see the module docstring)."""

    def __init__(
        self,
        clt: CrossLayerTranscoder,
        edits: dict[int, LayerEdits],
        clean: _Clean | None,
        constrained: frozenset[int],
        n_pos: int,
    ):
        self.clt, self.edits, self.clean, self.constrained = clt, edits, clean, constrained
        n_layers = clt.n_layers
        self.pending: list[torch.Tensor | None] = [None] * n_layers
        self.resid: list[torch.Tensor | None] = [None] * n_layers
        self.acts: list[torch.Tensor | None] = [None] * n_layers
        self.n_pos = n_pos

    def read(self, layer: int, _module, args, kwargs):
        x = (args[0] if args else kwargs["hidden_states"])[0]  # (n, D), batch of one
        self.resid[layer] = x.detach()
        live = self.clt.encode(x.to(self.clt.W_enc.dtype), layer)
        base = self.clean.acts[layer] if layer in self.constrained else live
        acts = live.clone()
        if layer in self.edits:
            pos, feat, scale, offset = (t.to(x.device) for t in self.edits[layer])
            old = base[pos, feat]
            new = scale.to(old.dtype) * old + offset.to(old.dtype)
            acts[pos, feat] = new
            self._queue(layer, pos, feat, new - old)
        self.acts[layer] = acts

    def _queue(self, layer: int, pos: torch.Tensor, feat: torch.Tensor, delta: torch.Tensor):
        """Add ``delta * W_dec[layer -> t]`` at ``pos`` to every output layer ``t``."""
        rows = self.clt.decoder_rows(layer, feat)  # (E, n_targets, D); decoders may be offloaded
        for j, target in enumerate(self.clt.target_layers(layer)):
            vectors = delta[:, None] * rows[:, j].to(delta.dtype)  # (E, D)
            if self.pending[target] is None:
                self.pending[target] = torch.zeros(
                    self.n_pos, vectors.shape[1], dtype=vectors.dtype, device=vectors.device
                )
            self.pending[target].index_add_(0, pos, vectors)

    def write(self, layer: int, _module, _args, output):
        y = output[0] if isinstance(output, tuple) else output  # (1, n, D)
        new = self.clean.mlp_out[layer][None] if layer in self.constrained else y
        if layer in self.constrained and self.clt.W_skip is not None:  # the skip path stays live
            live, clean = self.resid[layer], self.clean.recording.resid_mid[layer]
            dtype = self.clt.W_skip.dtype
            diff = self.clt.skip(live.to(dtype), layer) - self.clt.skip(clean.to(dtype), layer)
            new = new + diff.to(y.dtype)
        if self.pending[layer] is not None:
            new = new + self.pending[layer].to(y.dtype)
        if new is y:
            return None
        return (new, *output[1:]) if isinstance(output, tuple) else new


class _Clean(NamedTuple):
    recording: Recording
    mlp_out: torch.Tensor  # (L, n, D)
    acts: torch.Tensor  # (L, n, F)


def _frozen_norm_hook(adapter, scale: torch.Tensor, module, args, kwargs, _output):
    x = args[0] if args else next(iter(kwargs.values()))
    return adapter.frozen_norm(module, x, scale[:, : x.shape[-2]])


class Intervener:
    """Runs edits on one prompt: ``run(edits)`` is one forward pass of the real model.

    ``baseline`` is the pass without edits (same mode, so differences come from the edits only).
    """

    def __init__(
        self,
        model: nn.Module,
        clt: CrossLayerTranscoder,
        input_ids: torch.Tensor | Sequence[int],
        *,
        freeze_attention: bool = False,
        constrained_layers: Iterable[int] | None = None,
        freeze_final_norm: bool = False,
    ):
        if model.training:
            raise ValueError("The model is in training mode (dropout); call model.eval() first.")
        self.adapter = check_transcoder(model, clt)
        self.model, self.clt = model, clt
        self.device = next(model.parameters()).device
        self.input_ids = as_input_ids(input_ids).to(self.device)
        check_prompt_length(model, self.n_pos)
        self.freeze_attention = freeze_attention
        self.constrained = check_layers(constrained_layers, clt.n_layers)
        self.freeze_norms = self.constrained == frozenset(range(clt.n_layers))
        self.freeze_final_norm = freeze_final_norm or self.freeze_norms
        needs_clean = freeze_attention or self.constrained or self.freeze_final_norm
        self.clean = self._record() if needs_clean else None

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[0])

    @torch.no_grad()
    def _record(self) -> _Clean:
        rec = record(self.model, self.input_ids)
        dtype = self.clt.W_enc.dtype
        acts = torch.stack(
            [self.clt.encode(rec.resid_mid[i].to(dtype), i) for i in range(rec.n_layers)]
        )
        return _Clean(rec, rec.mlp_out, acts)

    def _frozen_norms(self) -> list[tuple[nn.Module, torch.Tensor]]:
        """(norm module, clean scale) pairs whose denominators this runner holds fixed."""
        if not self.freeze_final_norm:
            return []
        norms = self.adapter.all_norms(self.model)  # the final norm comes last
        pairs = list(zip(norms, self.clean.recording.norm_scales, strict=True))
        return pairs if self.freeze_norms else pairs[-1:]

    @functools.cached_property
    def baseline(self) -> PassOutput:
        return self.run(())

    @torch.no_grad()
    def run(self, edits: Iterable[Edit]) -> PassOutput:
        """The prompt's forward pass with ``edits`` applied."""
        clt, adapter, model = self.clt, self.adapter, self.model
        compiled = compile_edits(edits, clt.n_layers, clt.n_features, self.n_pos)
        state = _Pass(clt, compiled, self.clean, self.constrained, self.n_pos)
        with ExitStack() as stack:
            if self.freeze_attention:
                patterns = self.clean.recording.patterns
                use_attention(stack, model, adapter, FROZEN_ATTENTION, patterns)
            for norm, scale in self._frozen_norms():
                hook = functools.partial(_frozen_norm_hook, adapter, scale)
                stack.callback(norm.register_forward_hook(hook, with_kwargs=True).remove)
            hook_layers(stack, model, adapter, clt.n_layers, state.read, state.write)
            logits = model(input_ids=self.input_ids[None], use_cache=False).logits[0]
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        return PassOutput(logits, torch.stack(state.resid), torch.stack(state.acts))
