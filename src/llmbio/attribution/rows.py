"""Adjacency rows of the frozen local replacement model, many targets per backward pass.

The frozen model is affine in its inputs (the residual stream entering block 0 and every MLP
block's output), so one batch-1 forward pass builds a graph that serves every target: a batch of
``S`` targets is one ``autograd.grad`` call with ``is_grads_batched`` (vmap over the cotangents),
seeded with each target's direction at its hook. The forward runs on the shortest prompt prefix
that holds the batch's targets (attention is causal), and is redone only when that prefix changes.
The gradients at ``hook_embed`` and at every ``hook_mlp_out`` are then contracted with the sources:

- token ``p``: ``g_embed[p] . embed[p]``; error ``(l, p)``: ``g_mlp[l][p] . error[l, p]``;
- feature ``s`` at ``(l_s, p_s)``: ``sum_{l' >= l_s} g_mlp[l'][p_s] . a_s W_dec[l_s -> l'][f_s]``,
  one matmul per (source layer, position) against the concatenated, activation-scaled decoders.

A target at layer ``l`` reads only MLP outputs of layers ``< l`` and positions ``<=`` its own, so
those are the only blocks computed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from llmbio.attribution.replacement import (
    FrozenModel,
    LocalReplacement,
    output_layers,
    scaled_decoders,
)
from llmbio.transcoder.clt import CrossLayerTranscoder


@dataclass
class _SourceLayer:
    """The feature columns of one source layer, sorted by position."""

    outputs: list[int]  # MLP outputs these features write to, ascending
    # (K_l, len(outputs) * D): a_s * W_dec, output layers concatenated, in the transcoder's dtype
    # (upcast per block: a 64-token Gemma CLT graph has GBs of them)
    decoders: torch.Tensor
    col0: int  # column of this layer's first feature
    bounds: list[int]  # (n + 1,) offsets of each position's features within the layer
    positions: list[int]  # positions that have at least one feature


class RowComputer:
    """Computes rows ``adjacency[target, :n_cols]`` for one prompt inside :func:`frozen`.

    Columns: ``n_feature_cols`` feature sources (``columns`` of ``rep.active_features``, in
    order), then ``L * n`` error nodes (layer-major), then ``n`` token embeddings.
    """

    def __init__(self, fm: FrozenModel, rep: LocalReplacement, transcoder: CrossLayerTranscoder):
        rec = rep.recording
        self.rep, self.transcoder = rep, transcoder
        self.n_layers, self.n_pos, self.d_model = rec.n_layers, rec.n_pos, rec.embed.shape[-1]
        self.model_dtype = rec.embed.dtype
        self.dtype = torch.promote_types(self.model_dtype, torch.float32)
        self.device = rec.embed.device
        self._fm = fm
        self._prefix = 0  # length of the prompt prefix the current graph covers
        self.errors = rep.error.to(self.dtype).clone()
        self.errors[:, : rep.skip_positions] = 0  # BOS error nodes get no edges (circuit-tracer)
        self.tokens = rec.embed.to(self.dtype)
        self.set_columns(torch.arange(len(rep.active_features)))

    @torch.no_grad()
    def set_columns(self, columns: torch.Tensor) -> None:
        """Use ``rep.active_features[columns]`` (sorted indices) as the feature columns."""
        feats = self.rep.active_features[columns]
        vals = self.rep.activation_values[columns]
        self.n_feature_cols = len(feats)
        self._sources, col0 = [], 0
        for layer in range(self.n_layers):
            pos = feats[feats[:, 0] == layer, 1]
            decs = scaled_decoders(self.transcoder, feats, vals, layer).to(self.device)
            bounds = torch.searchsorted(pos, torch.arange(self.n_pos + 1)).tolist()
            present = [p for p in range(self.n_pos) if bounds[p + 1] > bounds[p]]
            outs = output_layers(self.transcoder, layer)
            self._sources.append(_SourceLayer(outs, decs.flatten(1), col0, bounds, present))
            col0 += len(pos)

    def _build_graph(self, m: int) -> None:
        """Forward the frozen model on the first ``m`` positions with leaf inputs.

        Targets at positions ``< m`` only see those positions, so a batch's backward runs on the
        shortest prefix holding its targets; the forward (batch 1) costs about one target.
        """
        if m == self._prefix:
            return
        rec = self.rep.recording
        self._embed_leaf = rec.embed[None, :m].detach().clone().requires_grad_(True)
        self._mlp_leaves = [
            x[None, :m].detach().clone().requires_grad_(True) for x in self.rep.mlp_out()
        ]
        with torch.enable_grad():
            out = self._fm(self._embed_leaf, self._mlp_leaves)
        # Target hooks: resid_mid of each layer, then the final normed residual (logits).
        self._targets = [*out.resid_mid, out.final_normed]
        self._prefix = m

    @property
    def n_cols(self) -> int:
        return self.n_feature_cols + (self.n_layers + 1) * self.n_pos

    def rows(
        self, layer: int, positions: torch.Tensor, vectors: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Write the rows of ``S`` targets into ``out`` ``(S, >= n_cols)``, which must be zero.

        Targets read ``hook_resid_mid`` of ``layer`` (or, for ``layer == L``, the final normed
        residual) at ``positions`` ``(S,)`` (ascending) along ``vectors`` ``(S, D)``.
        """
        positions = positions.cpu().contiguous()
        if positions.numel() > 1 and bool((positions[1:] < positions[:-1]).any()):
            raise ValueError("Target positions must be sorted ascending within a batch.")
        g_embed, g_mlp = self._gradients(layer, positions, vectors)
        n, m = self.n_pos, g_embed.shape[1]
        tok0 = self.n_feature_cols + self.n_layers * n
        out[:, tok0 : tok0 + m] = torch.einsum("smd,md->sm", g_embed, self.tokens[:m])
        if layer == 0:
            return
        err = torch.einsum("psld,lpd->slp", g_mlp, self.errors[:layer, :m])
        err_cols = out[:, self.n_feature_cols : self.n_feature_cols + layer * n]
        err_cols.unflatten(1, (layer, n))[:, :, :m] = err
        starts = torch.searchsorted(positions, torch.arange(m)).tolist()
        for src in self._sources[:layer]:
            self._feature_block(src, g_mlp, layer, starts, out)

    def _gradients(
        self, layer: int, positions: torch.Tensor, vectors: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gradients at hook_embed ``(S, m, D)`` and at mlp_out of layers ``< layer``.

        The latter are position-major, ``(m, S, layer, D)``, so that one position's block is a
        strided matrix; ``m`` is the prefix up to the last target position.
        """
        m = int(positions[-1]) + 1
        self._build_graph(m)
        S, D = len(positions), self.d_model
        seeds = torch.zeros(S, 1, m, D, dtype=self.model_dtype, device=self.device)
        seeds[torch.arange(S), 0, positions] = vectors.detach().to(self.model_dtype)
        inputs = [self._embed_leaf, *self._mlp_leaves[:layer]]
        grads = torch.autograd.grad(
            self._targets[layer],
            inputs,
            seeds,
            retain_graph=True,
            is_grads_batched=True,
            allow_unused=True,
            materialize_grads=True,
        )
        g_mlp = torch.empty(m, S, layer, D, dtype=self.dtype, device=self.device)
        for j, g in enumerate(grads[1:]):
            g_mlp[:, :, j] = g[:, 0].transpose(0, 1)
        return grads[0][:, 0].to(self.dtype), g_mlp

    def _feature_block(
        self,
        src: _SourceLayer,
        g_mlp: torch.Tensor,
        layer: int,
        starts: list[int],
        out: torch.Tensor,
    ) -> None:
        """Columns of one source layer: per position, (targets at >= p) x (its features)."""
        outs = [t for t in src.outputs if t < layer]
        if not outs or not src.positions:
            return
        m, S, _, D = g_mlp.shape
        # (m, S, len(outs) * D): the output layers are consecutive, concatenated like the decoders
        gcat = g_mlp[:, :, outs[0] : outs[-1] + 1].reshape(m, S, len(outs) * D)
        decs = src.decoders[:, : len(outs) * D]
        for p in src.positions:
            if p >= m:
                break
            s0 = starts[p]
            if s0 == S:
                break  # every target sits before p, and later positions too
            k0, k1 = src.bounds[p], src.bounds[p + 1]
            out[s0:, src.col0 + k0 : src.col0 + k1] = gcat[p, s0:] @ decs[k0:k1].to(gcat.dtype).T
