"""The exact local replacement model of one prompt, run on the real Hugging Face model.

Two passes, both through the model's own ``forward`` (nothing is re-implemented):

1. :func:`record` runs the real model once and stores what the replacement model freezes: the
   attention pattern of every layer (computed as the eager path does: GQA ``repeat_kv``, masks incl.
   sliding windows, Gemma-2 logit softcapping) and the data-dependent factor of every norm, plus the
   activations at the hook points (``hook_embed``, ``hook_resid_mid``, ``hook_mlp_out``).
2. Inside :func:`frozen`, the same model computes ``pattern.detach() @ V`` (gradients flow only
   through values), every norm uses its recorded factor (mean-centring of LayerNorm stays live), and
   the residual stream entering block 0 and every MLP block's output are replaced by given tensors.
   The frozen model is affine in those tensors; :class:`FrozenModel` exposes it.

:func:`build_replacement` adds a transcoder: active features from the true ``hook_resid_mid``, their
reconstruction and the error ``mlp_out - reconstruction``. Feeding ``reconstruction + error`` to the
frozen model reproduces the model's logits. A transcoder with a skip path (``W_skip``) keeps it
live, as circuit-tracer does: the error excludes the recorded skip term and the frozen model adds
``skip(hook_resid_mid)`` to every MLP output (:meth:`FrozenModel.use_skip`); a transcoder reading
the normalised residual does so with the norm factor frozen at its recorded value.

The model is restored on exit of every context, also on exceptions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from llmbio.adapters import (
    Adapter,
    get_adapter,
    hook_input,
    hooks,
    mlp_out_hook,
    replace_forward,
    resid_mid_hook,
)
from llmbio.attribution.attention import FROZEN_ATTENTION, RECORD_ATTENTION, use_attention
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import check_compatible


@dataclass
class Recording:
    """What one real forward pass of ``n`` tokens leaves for the replacement model (batch 1)."""

    input_ids: torch.Tensor  # (n,) long
    logits: torch.Tensor  # (n, vocab): the model's own output
    embed: torch.Tensor  # (n, D): hook_embed, the residual stream entering block 0
    resid_mid: torch.Tensor  # (L, n, D): hook_resid_mid
    mlp_out: torch.Tensor  # (L, n, D): hook_mlp_out
    final_resid: torch.Tensor  # (n, D): residual stream entering the final norm
    patterns: list[torch.Tensor]  # L x (1, H, n, n) attention probabilities
    norm_scales: list[torch.Tensor]  # per Adapter.all_norms module: (1, n, 1)

    @property
    def n_layers(self) -> int:
        return int(self.resid_mid.shape[0])

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[0])


class FrozenOutputs(NamedTuple):
    resid_mid: list[torch.Tensor]  # L x (B, n, D)
    final_normed: torch.Tensor  # (B, n, D): output of the frozen final norm
    logits: torch.Tensor  # (B, n, vocab)


def as_input_ids(input_ids: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """A 1-D long tensor ``(n,)`` from ``(n,)``, ``(1, n)`` or a list of ids."""
    ids = torch.as_tensor(input_ids)
    if ids.ndim == 2 and ids.shape[0] == 1:
        ids = ids[0]
    if ids.ndim != 1 or ids.numel() == 0 or ids.dtype != torch.long:
        raise ValueError(
            f"input_ids must be a non-empty 1-D long tensor (one prompt), got {tuple(ids.shape)} "
            f"{ids.dtype}; pass one prompt at a time."
        )
    return ids


def _store_scale(adapter: Adapter, norm: nn.Module, scales: list, i: int, x: torch.Tensor) -> None:
    scales[i] = adapter.norm_scale(norm, x).detach()


def _setter(store: list, i: int, x: torch.Tensor) -> None:
    store[i] = x[0]


def check_eval(model: nn.Module) -> None:
    """Raises unless ``model`` is in eval mode (dropout would make every pass differ)."""
    if model.training:
        raise ValueError("The model is in training mode (dropout); call model.eval() first.")


@torch.no_grad()
def record(model: nn.Module, input_ids: torch.Tensor) -> Recording:
    """Run the real model on ``input_ids`` ``(n,)`` and record what the replacement model needs."""
    check_eval(model)
    adapter, ids = get_adapter(model), as_input_ids(input_ids)
    n_layers = adapter.n_layers(model)
    patterns: list = [None] * n_layers
    norms = adapter.all_norms(model)
    scales: list = [None] * len(norms)
    embed, resid_mid, mlp_out, final = [], [None] * n_layers, [None] * n_layers, []
    points = {"hook_embed": lambda x: embed.append(x[0])}
    for layer in range(n_layers):
        points[resid_mid_hook(layer)] = partial(_setter, resid_mid, layer)
        points[mlp_out_hook(layer)] = partial(_setter, mlp_out, layer)
    points["ln_final.hook_in"] = lambda x: final.append(x[0])
    with ExitStack() as stack:
        use_attention(stack, model, adapter, RECORD_ATTENTION, patterns)
        for i, norm in enumerate(norms):
            stack.enter_context(hook_input(norm, partial(_store_scale, adapter, norm, scales, i)))
        stack.enter_context(hooks(model, points, adapter))
        logits = model(input_ids=ids[None].to(_device(model)), use_cache=False).logits[0]
    if any(p is None for p in patterns):
        raise RuntimeError(
            f"{type(model).__name__} did not run its attention through transformers' "
            "AttentionInterface, so its patterns cannot be frozen; use a model class that does."
        )
    return Recording(
        ids,
        logits,
        embed[0],
        torch.stack(resid_mid),
        torch.stack(mlp_out),
        final[0],
        patterns,
        scales,
    )


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def frozen_norm_forward(
    adapter: Adapter, norm: nn.Module, scale: torch.Tensor
) -> Callable[[torch.Tensor], torch.Tensor]:
    """A ``forward`` for ``norm`` that divides by its recorded factors ``scale`` ``(1, n, 1)``
    (:func:`llmbio.adapters.replace_forward` installs it); a prefix input ``(B, m, D)`` uses
    the first ``m``."""
    return partial(_frozen_norm, adapter, norm, scale)


def _frozen_norm(
    adapter: Adapter, norm: nn.Module, scale: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    return adapter.frozen_norm(norm, x, scale[:, : x.shape[-2]])


class FrozenModel:
    """The model with frozen attention patterns and norm factors; affine in its inputs.

    Only valid inside :func:`frozen`. Parameters do not require gradients there.
    """

    def __init__(self, model: nn.Module, adapter: Adapter, recording: Recording):
        self.model, self.adapter, self.recording = model, adapter, recording
        self._embed: torch.Tensor | None = None
        self._mlp_out: list[torch.Tensor] = []
        self._resid_mid: list[torch.Tensor | None] = [None] * recording.n_layers
        self._final: list[torch.Tensor] = []
        self._skip: Callable[[int, torch.Tensor], torch.Tensor] | None = None

    def use_skip(self, skip: Callable[[int, torch.Tensor], torch.Tensor] | None) -> None:
        """Add ``skip(layer, hook_resid_mid)`` ``(B, m, D)`` to every MLP output (linear)."""
        self._skip = skip

    def forward(
        self, embed: torch.Tensor, mlp_out: list[torch.Tensor] | torch.Tensor
    ) -> FrozenOutputs:
        """Run the frozen model with ``embed`` ``(B, m, D)`` entering block 0 and ``mlp_out[l]``
        ``(B, m, D)`` (or ``(1, m, D)``, broadcast) as the output of every MLP block.

        ``m <= n`` runs on the first ``m`` recorded positions (causal, so they are unchanged).
        The outputs stay connected to the inputs' autograd graph.
        """
        rec = self.recording
        m = embed.shape[1] if embed.ndim == 3 else -1
        if not 0 < m <= rec.n_pos or embed.shape[2] != rec.embed.shape[1]:
            raise ValueError(f"embed must be (B, m <= {rec.n_pos}, D), got {tuple(embed.shape)}.")
        if len(mlp_out) != rec.n_layers:
            raise ValueError(f"mlp_out needs {rec.n_layers} layers, got {len(mlp_out)}.")
        self._embed, self._mlp_out, self._final = embed, list(mlp_out), []
        ids = rec.input_ids[None, :m].expand(embed.shape[0], -1).to(embed.device)
        try:
            logits = self.model(input_ids=ids, use_cache=False).logits
        finally:
            self._embed, self._mlp_out = None, []
        return FrozenOutputs(list(self._resid_mid), self._final[0], logits)

    __call__ = forward

    def mlp_value(self, layer: int) -> torch.Tensor:
        if not self._mlp_out:
            raise RuntimeError("Inside frozen(), run the FrozenModel it yields, not the model.")
        if self._skip is None:
            return self._mlp_out[layer]
        return self._mlp_out[layer] + self._skip(layer, self._resid_mid[layer])


@contextmanager
def frozen(model: nn.Module, recording: Recording) -> Iterator[FrozenModel]:
    """Freeze ``model`` at ``recording`` for the duration of the context (see module docstring)."""
    check_eval(model)
    adapter = get_adapter(model)
    if adapter.n_layers(model) != recording.n_layers:
        raise ValueError("The recording was made on a model with a different number of layers.")
    fm = FrozenModel(model, adapter, recording)
    with ExitStack() as stack:
        use_attention(stack, model, adapter, FROZEN_ATTENTION, recording.patterns)
        for norm, scale in zip(adapter.all_norms(model), recording.norm_scales, strict=True):
            stack.enter_context(replace_forward(norm, frozen_norm_forward(adapter, norm, scale)))
        points = {"hook_embed": lambda x: fm._embed}
        for layer in range(recording.n_layers):
            stack.enter_context(
                replace_forward(
                    adapter.layer_module(model, layer, adapter.mlp_out),
                    lambda *a, layer=layer, **k: fm.mlp_value(layer),
                )
            )
            if adapter.mlp_inner is not None:  # its output is discarded: do not compute it
                inner = adapter.layer_module(model, layer, adapter.mlp_inner)
                stack.enter_context(replace_forward(inner, lambda x, *a, **k: x))
            points[resid_mid_hook(layer)] = partial(fm._resid_mid.__setitem__, layer)
        points["ln_final.hook_normalized"] = lambda out: fm._final.append(out)  # a new list per run
        stack.enter_context(hooks(model, points, adapter))
        flags = [(p, p.requires_grad) for p in model.parameters()]
        stack.callback(lambda: [p.requires_grad_(f) for p, f in flags])
        for p, _ in flags:
            p.requires_grad_(False)
        yield fm


@dataclass
class LocalReplacement:
    """The local replacement model of one prompt: recording + transcoder features and errors.

    Features at the first ``skip_positions`` positions (BOS) are dropped, as in circuit-tracer:
    their output stays inside the error there, and those error nodes get no edges.
    """

    recording: Recording
    active_features: torch.Tensor  # (K, 3) long on CPU: layer, position, feature id; sorted
    activation_values: torch.Tensor  # (K,) transcoder dtype
    reconstruction: torch.Tensor  # (L, n, D): b_dec + decoded active features, model dtype
    error: torch.Tensor  # (L, n, D): mlp_out - reconstruction (- skip term), model dtype
    skip_positions: int = 1
    # (L, n, 1) frozen 1/rms of hook_resid_mid when the transcoder reads it normalised, else None
    input_scales: torch.Tensor | None = None

    def mlp_out(self) -> torch.Tensor:
        """The frozen model's MLP inputs ``(L, n, D)``: reconstruction + error (= recorded
        ``mlp_out``, minus the skip term when the transcoder has one: that one stays live)."""
        return self.reconstruction + self.error

    def encoder_vectors(self, transcoder, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Directions ``(K, D)`` at ``hook_resid_mid`` whose dot product is the pre-activation
        (without ``b_enc``) of ``features`` ``(K, 3)`` of ``layer``, norm factor frozen."""
        vectors = transcoder.W_enc[layer][features[:, 2].to(transcoder.W_enc.device)]
        if self.input_scales is None:
            return vectors
        scale = self.input_scales[layer, features[:, 1].to(self.input_scales.device)]
        return (vectors * scale.to(vectors.device)).to(vectors.dtype)

    def skip_fn(self, transcoder) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
        """The transcoder's skip path with the recorded norm factors, for :meth:`use_skip`."""
        if transcoder.W_skip is None:
            return None
        scales = self.input_scales

        def skip(layer: int, x: torch.Tensor) -> torch.Tensor:
            if scales is not None:
                x = x * scales[layer, : x.shape[-2]].to(x.dtype)
            w = transcoder.W_skip[layer]
            return (x.to(w.dtype) @ w.T).to(x.dtype)

        return skip


def check_transcoder(model: nn.Module, transcoder: CrossLayerTranscoder) -> Adapter:
    """The model's adapter; raises unless ``transcoder`` has the model's layers and width."""
    check_compatible(transcoder, model, "being traced")
    return get_adapter(model)


def output_layers(transcoder: CrossLayerTranscoder, layer: int) -> list[int]:
    """The MLP outputs that features of ``layer`` write to, ascending."""
    return [t for t in range(layer, transcoder.n_layers) if layer in transcoder.source_layers(t)]


def scaled_decoders(
    transcoder: CrossLayerTranscoder, features: torch.Tensor, values: torch.Tensor, layer: int
) -> torch.Tensor:
    """``a_s * W_dec[layer -> l']`` of ``layer``'s active ``features`` ``(K, 3)``.

    Returns ``(K_layer, len(output_layers(layer)), D)`` for the rows of ``features`` at ``layer``.
    """
    mask = features[:, 0] == layer
    ids, acts = features[mask, 2], values[mask]
    decs = transcoder.decoder_rows(layer, ids)  # (K, n_targets, D): output_layers(layer)
    return decs * acts.to(decs.device)[:, None, None]


@torch.no_grad()
def build_replacement(
    model: nn.Module,
    transcoder: CrossLayerTranscoder,
    input_ids: torch.Tensor,
    skip_positions: int = 1,
) -> LocalReplacement:
    """Record ``model`` on ``input_ids`` ``(n,)``; add the transcoder's features and errors."""
    check_transcoder(model, transcoder)
    rec = record(model, input_ids)
    tdtype = transcoder.W_enc.dtype
    scales = transcoder.input_scale(rec.resid_mid)  # (L, n, 1) or None
    feats, vals = [], []
    for layer in range(rec.n_layers):
        acts = transcoder.encode(rec.resid_mid[layer].to(tdtype), layer)
        acts[:skip_positions] = 0
        pos, fid = acts.nonzero(as_tuple=True)
        feats.append(torch.stack([torch.full_like(pos, layer), pos, fid], dim=1))
        vals.append(acts[pos, fid])
    features, values = torch.cat(feats), torch.cat(vals)
    recon = transcoder.b_dec[:, None, :].expand(-1, rec.n_pos, -1).clone()
    for layer in range(rec.n_layers):
        pos = features[features[:, 0] == layer, 1]
        decs = scaled_decoders(transcoder, features, values, layer)
        for j, target in enumerate(output_layers(transcoder, layer)):
            recon[target].index_add_(0, pos, decs[:, j])
    recon = recon.to(rec.mlp_out.dtype)
    error = rec.mlp_out - recon
    if transcoder.W_skip is not None:
        skip = [transcoder.skip(rec.resid_mid[i].to(tdtype), i) for i in range(rec.n_layers)]
        error = error - torch.stack(skip).to(error.dtype)
    return LocalReplacement(rec, features.cpu(), values, recon, error, skip_positions, scales)
