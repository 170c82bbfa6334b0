"""The splice: transcoder feature edits inside the real forward pass of a batch of prompts.

At every layer ``l`` the hook at ``blocks.{l}.hook_resid_mid`` encodes the residual stream with
the transcoder into activations ``a`` ``(B, n, F)``, applies each prompt's edits
(``new = scale * a + offset``) and queues ``(new - a) W_dec[l -> l']`` for every MLP output
``l' >= l`` the feature writes to; the hook at ``blocks.{l'}.hook_mlp_out`` adds what is queued.
Every intervention of the package (one prompt or many, edits listed or dense, generation,
gradients) runs through :func:`spliced`. Modes, given by a clean pass of the prompt:

- **unconstrained** (default): ``a`` is computed from the live (already edited) residual
  stream, so edits downstream of other edits see their effects; the real MLPs run as usual.
- **constrained** (``constrained_layers``): the MLP outputs of those layers are replaced by their
  clean values plus the queued decoder contributions, and edits there act on the clean
  activations, so effects cannot propagate through those MLPs (circuit-tracer's
  ``constrained_layers``). The edits write to the MLP outputs of those layers only: outside the
  range the real MLPs run and already respond to the edit through the residual stream, so adding
  the decoder's writes there too would count that response twice.
- ``freeze_attention``: attention patterns are those of the clean run (the attribution tracer's
  frozen attention). When every layer is constrained, norm denominators are frozen too, so
  the pass is the local replacement model's linear map: the effects equal graph edges.
- ``freeze_norms``: every norm divides by its clean denominator, as in the attribution graph;
  with ``freeze_attention`` the real MLPs are the only nonlinearity left (the graph's frame).
- ``replacement``: the local replacement model. Every MLP output is its clean value plus the
  transcoder's response, ``(a_live - a_clean) W_dec``, with ``a_live`` encoded from the live
  residual stream (edited entries as edited), so later features respond to an edit through
  their JumpReLU; attention and every norm are frozen. Its linearisation is the graph.
- ``freeze_final_norm``: the final norm divides by its clean denominator, as the attribution
  graph's logit nodes do. An edit then cannot rescale every logit by changing the final
  residual's norm (the output "temperature"), an effect the graph holds fixed by construction.

Edits come in two layouts: the edited entries only (:func:`compile_batch` of
:class:`~llmbio.interventions.Edit` lists; their decoder rows are fetched with
``clt.decoder_rows``, so offloaded decoders work), or :class:`DenseEdits`, one ``scale`` and
``offset`` per (prompt, layer, position, feature), for sweeps and for gradients with respect to
every edit (they use the whole decoder).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import NamedTuple

import torch
from torch import nn

from llmbio.adapters import hooks, mlp_out_hook, replace_forward, resid_mid_hook
from llmbio.attribution.attention import FROZEN_ATTENTION, use_attention
from llmbio.attribution.replacement import (
    Recording,
    as_input_ids,
    check_eval,
    check_transcoder,
    frozen_norm_forward,
    record,
)
from llmbio.interventions.edits import Edit, LayerEdits, compile_edits
from llmbio.tokenizer import check_prompt_length
from llmbio.transcoder.clt import CrossLayerTranscoder


class PassOutput(NamedTuple):
    """One forward pass of one prompt of ``n`` tokens."""

    logits: torch.Tensor  # (n, vocab), at least float32
    resid_mid: torch.Tensor  # (L, n, D): hook_resid_mid as the pass saw it
    activations: torch.Tensor  # (L, n, F): transcoder activations, edited entries as edited


class DenseEdits(NamedTuple):
    """``new = scale * a + offset`` at every entry, ``(B, L, n, F)`` each (``n = 1`` in a
    ``last_only`` pass). Scale 1 and offset 0 leave an entry as it is."""

    scale: torch.Tensor
    offset: torch.Tensor

    @classmethod
    def identity(cls, clt: CrossLayerTranscoder, batch: int, n_pos: int) -> DenseEdits:
        """Edits that change nothing (ones, zeros), to be filled in."""
        shape = (batch, clt.n_layers, n_pos, clt.n_features)
        dtype, device = clt.W_enc.dtype, clt.W_enc.device
        ones = torch.ones(shape, dtype=dtype, device=device)
        return cls(ones, torch.zeros(shape, dtype=dtype, device=device))

    @classmethod
    def setting(cls, mask: torch.Tensor, values: torch.Tensor, dtype: torch.dtype) -> DenseEdits:
        """Set the entries where ``mask`` is true to ``values`` (both ``(B, L, n, F)``)."""
        return cls((~mask).to(dtype), torch.where(mask, values, 0).to(dtype))


class Entries(NamedTuple):
    """The edited entries of one layer over the batch, ``E`` of them."""

    batch: torch.Tensor  # (E,) long
    positions: torch.Tensor  # (E,) long
    features: torch.Tensor  # (E,) long
    scale: torch.Tensor  # (E,)
    offset: torch.Tensor  # (E,)


BatchEdits = dict[int, Entries] | DenseEdits | None


def compile_batch(
    edits: Sequence[Sequence[Edit]], clt: CrossLayerTranscoder, n_pos: int
) -> dict[int, Entries]:
    """Per layer, the edited entries of every prompt (``edits[b]`` are prompt ``b``'s)."""
    return stack_compiled(
        [compile_edits(chosen, clt.n_layers, clt.n_features, n_pos) for chosen in edits]
    )


def stack_compiled(compiled: Sequence[dict[int, LayerEdits]]) -> dict[int, Entries]:
    """Per layer, the prompts' compiled edits (:func:`~llmbio.interventions.edits.compile_edits`,
    one dict per prompt) stacked with their prompt index."""
    parts: dict[int, list[tuple]] = {}
    for b, per_layer in enumerate(compiled):
        for layer, e in per_layer.items():
            parts.setdefault(layer, []).append((torch.full_like(e.positions, b), *e))
    return {
        layer: Entries(*(torch.cat(column) for column in zip(*rows, strict=True)))
        for layer, rows in parts.items()
    }


class Clean(NamedTuple):
    """The clean pass of one prompt, which the modes hold parts of the edited pass at."""

    recording: Recording
    acts: torch.Tensor  # (L, n, F) transcoder activations
    constrained: frozenset[int]  # layers whose MLP outputs are the clean ones
    freeze_attention: bool
    replacement: bool  # every MLP output: clean + the transcoder's response
    frozen_norms: tuple[tuple[nn.Module, torch.Tensor], ...]  # (norm, clean factor (1, n, 1))


class Splice:
    """Hook state of one pass: the decoder outputs queued per layer, what is recorded."""

    def __init__(
        self,
        clt: CrossLayerTranscoder,
        edits: BatchEdits,
        record: bool,
        last: bool,
        clean: Clean | None,
    ):
        self.clt, self.edits, self.record, self.clean = clt, edits, record, clean
        self.constrained = clean.constrained if clean is not None else frozenset()
        self.replacement = clean is not None and clean.replacement
        self.window = slice(-1, None) if last else slice(None)  # the positions the CLT reads
        self.pending: list[torch.Tensor | None] = [None] * clt.n_layers
        self.acts: list[torch.Tensor | None] = [None] * clt.n_layers
        self.resid: list[torch.Tensor | None] = [None] * clt.n_layers

    def read(self, layer: int, hidden: torch.Tensor) -> None:
        dense = isinstance(self.edits, DenseEdits)
        sparse = isinstance(self.edits, dict) and layer in self.edits
        if self.record or layer in self.constrained:
            self.resid[layer] = hidden[:, self.window].detach()
        if not (dense or sparse or self.record or self.replacement):
            return
        x = hidden[:, self.window]  # (B, n, D)
        acts = self.clt.encode(x.detach().to(self.clt.W_enc.dtype), layer)  # (B, n, F)
        if dense:
            acts = self._dense(layer, acts)
        elif sparse:
            clean_base = layer in self.constrained and not self.replacement
            base = self.clean.acts[layer][None] if clean_base else acts
            acts = self._sparse(layer, acts, base, queue=not self.replacement)
        if self.replacement:
            self._respond(layer, acts)
        if self.record:
            self.acts[layer] = acts.detach()

    def _sparse(
        self, layer: int, acts: torch.Tensor, base: torch.Tensor, queue: bool = True
    ) -> torch.Tensor:
        """Edit entries of ``base`` (the live ``acts`` or the clean ones); the edited values
        replace those entries of ``acts`` (``queue``: and their decoder writes are queued)."""
        b, pos, feat, scale, offset = (t.to(acts.device) for t in self.edits[layer])
        old = base[b, pos, feat]
        new = scale.to(old.dtype) * old + offset.to(old.dtype)
        acts = acts.clone()
        acts[b, pos, feat] = new
        if not queue:
            return acts
        rows = self.clt.decoder_rows(layer, feat)  # (E, n_targets, D)
        for j, target in enumerate(self.clt.target_layers(layer)):
            if not self._writes_to(target):
                continue
            vectors = (new - old)[:, None] * rows[:, j].to(new.dtype)  # (E, D)
            self._queued(target, acts).index_put_((b, pos), vectors, accumulate=True)
        return acts

    def _respond(self, layer: int, acts: torch.Tensor) -> None:
        """Queue the transcoder's response ``(acts - clean acts) W_dec`` (replacement mode)."""
        delta = acts - self.clean.acts[layer][None]  # (B, n, F)
        if not delta.any():
            return
        for target in self.clt.target_layers(layer):
            vectors = delta @ self.clt.decoder_to(layer, target).to(delta.dtype)  # (B, n, D)
            self._queued(target, acts).add_(vectors)

    def _dense(self, layer: int, acts: torch.Tensor) -> torch.Tensor:
        scale, offset = self.edits.scale[:, layer], self.edits.offset[:, layer]  # (B, n, F)
        new = scale * acts + offset
        if scale.requires_grad or offset.requires_grad:  # the gradient needs every entry
            pos = torch.arange(acts.shape[1], device=acts.device)
        else:  # only positions with an edit change the MLP outputs
            pos = ((scale != 1) | (offset != 0)).any(2).any(0).nonzero().flatten()
        if pos.numel():
            delta = (new - acts)[:, pos]  # (B, n_edited, F)
            for target in self.clt.target_layers(layer):
                vectors = delta @ self.clt.decoder_to(layer, target)  # (B, n_edited, D)
                self._queued(target, acts).index_add_(1, pos, vectors)
        return new

    def _queued(self, target: int, acts: torch.Tensor) -> torch.Tensor:
        """What is queued for ``target``'s MLP output, ``(B, n, D)``; zeros at first."""
        if self.pending[target] is None:
            self.pending[target] = acts.new_zeros(*acts.shape[:2], self.clt.d_model)
        return self.pending[target]

    def write(self, layer: int, y: torch.Tensor) -> torch.Tensor | None:
        """The MLP output ``y`` ``(B, n, D)`` as the pass continues with it (None: as it is)."""
        if layer in self.constrained:
            new = self._clean_output(layer, y)
        elif self.pending[layer] is None:
            return None
        else:
            new = y.clone()
        if self.pending[layer] is not None:
            new[:, self.window] += self.pending[layer].to(y.dtype)
        return new

    def _writes_to(self, layer: int) -> bool:
        """Whether queued decoder writes reach ``layer``'s MLP output (constrained: only the
        constrained layers do)."""
        return not self.constrained or layer in self.constrained

    def _clean_output(self, layer: int, y: torch.Tensor) -> torch.Tensor:
        """The clean MLP output, with the skip path (if any) live."""
        new = self.clean.recording.mlp_out[layer][None].expand_as(y).clone()
        if self.clt.W_skip is not None:
            live, clean = self.resid[layer], self.clean.recording.resid_mid[layer]
            dtype = self.clt.W_skip.dtype
            diff = self.clt.skip(live.to(dtype), layer) - self.clt.skip(clean.to(dtype), layer)
            new += diff.to(y.dtype)
        return new


@contextmanager
def spliced(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    edits: BatchEdits = None,
    *,
    record: bool = False,
    last_only: bool = False,
    clean: Clean | None = None,
) -> Iterator[Splice]:
    """Within the block, ``model``'s forward passes run with ``clt`` spliced in and ``edits``
    applied (compiled: :func:`compile_batch`, or :class:`DenseEdits`); the yielded state holds
    what a pass recorded (``record``: activations ``acts[l]`` ``(B, n, F)`` and the residual
    ``resid[l]`` ``(B, n, D)``). ``last_only``: the transcoder reads, edits and records the
    last position only. ``clean``, the clean pass of the one prompt that runs
    (:attr:`Intervener.clean`), sets the modes."""
    adapter = check_transcoder(model, clt)
    if clean is not None and (last_only or isinstance(edits, DenseEdits)):
        raise ValueError("constrained and frozen modes take listed edits of every position")
    state = Splice(clt, edits, record, last_only, clean)
    points = {}
    for layer in range(clt.n_layers):
        points[resid_mid_hook(layer)] = functools.partial(state.read, layer)
        points[mlp_out_hook(layer)] = functools.partial(state.write, layer)
    with ExitStack() as stack:
        if clean is not None and clean.freeze_attention:
            use_attention(stack, model, adapter, FROZEN_ATTENTION, clean.recording.patterns)
        for norm, scale in clean.frozen_norms if clean is not None else ():
            stack.enter_context(replace_forward(norm, frozen_norm_forward(adapter, norm, scale)))
        stack.enter_context(hooks(model, points, adapter))
        yield state


def check_layers(layers: Iterable[int] | None, n_layers: int) -> frozenset[int]:
    """``constrained_layers`` as a set; raises on layers the model does not have."""
    chosen = frozenset(int(layer) for layer in layers or ())
    bad = sorted(layer for layer in chosen if not 0 <= layer < n_layers)
    if bad:
        raise ValueError(
            f"constrained_layers {bad} out of range: the model has layers 0..{n_layers - 1}."
        )
    return chosen


class Intervener:
    """Runs edits on one prompt in one mode: ``run(edits)`` is one spliced forward pass.
    ``replacement`` implies every layer constrained, attention and every norm frozen.

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
        freeze_norms: bool = False,
        replacement: bool = False,
    ):
        check_eval(model)
        self.adapter = check_transcoder(model, clt)
        self.model, self.clt = model, clt
        self.device = next(model.parameters()).device
        self.input_ids = as_input_ids(input_ids).to(self.device)
        check_prompt_length(model, self.n_pos)
        every = frozenset(range(clt.n_layers))
        constrained = every if replacement else check_layers(constrained_layers, clt.n_layers)
        freeze_attention = freeze_attention or replacement
        freeze_norms = freeze_norms or constrained == every
        freeze_final_norm = freeze_final_norm or freeze_norms
        needs_clean = freeze_attention or constrained or freeze_final_norm
        self.clean = (
            self._record(
                constrained, freeze_attention, replacement, freeze_final_norm, freeze_norms
            )
            if needs_clean
            else None
        )

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[0])

    @torch.no_grad()
    def _record(
        self,
        constrained: frozenset[int],
        freeze_attention: bool,
        replacement: bool,
        final: bool,
        every: bool,
    ) -> Clean:
        rec = record(self.model, self.input_ids)
        dtype = self.clt.W_enc.dtype
        acts = torch.stack(
            [self.clt.encode(rec.resid_mid[i].to(dtype), i) for i in range(rec.n_layers)]
        )
        norms = []
        if final:  # the final norm comes last
            pairs = list(zip(self.adapter.all_norms(self.model), rec.norm_scales, strict=True))
            norms = pairs if every else pairs[-1:]
        return Clean(rec, acts, constrained, freeze_attention, replacement, tuple(norms))

    @functools.cached_property
    def baseline(self) -> PassOutput:
        return self.run(())

    @torch.no_grad()
    def run(self, edits: Iterable[Edit]) -> PassOutput:
        """The prompt's forward pass with ``edits`` applied."""
        compiled = compile_batch([tuple(edits)], self.clt, self.n_pos)
        with spliced(self.model, self.clt, compiled, record=True, clean=self.clean) as state:
            logits = self.model(input_ids=self.input_ids[None], use_cache=False).logits[0]
        resid = torch.cat(state.resid)  # (L, n, D)
        return PassOutput(at_least_float32(logits), resid, torch.cat(state.acts))


def at_least_float32(logits: torch.Tensor) -> torch.Tensor:
    """Logits in float32, or in their own dtype where that is wider (float64)."""
    return logits.to(torch.promote_types(logits.dtype, torch.float32))
