"""The cross-layer transcoder (CLT) and its per-layer special case (PLT).

Layout (L layers, F features per layer, D = d_model), matching circuit-tracer's on-disk layout:

- ``W_enc[l]``: ``(F, D)``; ``b_enc[l]``: ``(F,)``; ``threshold[l]``: ``(F,)``
- ``W_dec[l]``: ``(F, L - l, D)`` for a CLT (feature at layer ``l`` writes to layers ``l..L-1``),
  ``(F, 1, D)`` for a PLT (writes only to layer ``l``).
- ``b_dec[l]``: ``(D,)``

A feature at layer ``l`` reads ``blocks.{l}.hook_resid_mid`` and the reconstruction of
``blocks.{l}.hook_mlp_out`` is ``sum_{l' <= l} W_dec[l'][:, l - l'] . a_{l'} + b_dec[l]``.
All weights act on raw (unnormalised) activations: training-time normalisation is folded in.

Released transcoders add two things (see :mod:`llmbio.transcoder.io`):

- ``input_norm_eps``: the encoder reads the RMS-normalised residual ``x / rms(x)`` (GemmaScope's
  ``ln2.hook_normalized``; a norm gain is folded into ``W_enc``), not ``x`` itself;
- ``W_skip`` ``(L, D, D)``: a linear skip path of per-layer "skip transcoders" (Llama-3.2-1B and
  Qwen3 PLTs): the reconstruction adds ``input @ W_skip[l].T``.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossLayerTranscoder(nn.Module):
    """JumpReLU cross-layer (``cross_layer=True``) or per-layer transcoder."""

    def __init__(
        self,
        n_layers: int,
        d_model: int,
        n_features: int,
        cross_layer: bool = True,
        skip: bool = False,
        input_norm_eps: float | None = None,
    ):
        super().__init__()
        self.n_layers, self.d_model, self.n_features = n_layers, d_model, n_features
        self.cross_layer = cross_layer
        self.input_norm_eps = input_norm_eps  # None: the encoder reads the raw residual
        L, D, F = n_layers, d_model, n_features
        self.W_enc = nn.Parameter(torch.zeros(L, F, D))
        self.b_enc = nn.Parameter(torch.zeros(L, F))
        self.threshold = nn.Parameter(torch.zeros(L, F))
        self.b_dec = nn.Parameter(torch.zeros(L, D))
        self.W_dec = nn.ParameterList(
            [nn.Parameter(torch.zeros(F, (L - i) if cross_layer else 1, D)) for i in range(L)]
        )
        self.W_skip = nn.Parameter(torch.zeros(L, D, D)) if skip else None

    def input_scale(self, x: torch.Tensor) -> torch.Tensor | None:
        """``1 / rms(x)`` ``(..., 1)`` when the encoder reads normalised input, else None."""
        if self.input_norm_eps is None:
            return None
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        return torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.input_norm_eps)

    def encoder_input(self, x: torch.Tensor) -> torch.Tensor:
        """What the encoder (and the skip path) reads from ``hook_resid_mid`` ``x``."""
        scale = self.input_scale(x)
        return x if scale is None else (x * scale).to(x.dtype)

    def skip(self, x: torch.Tensor, layer: int) -> torch.Tensor | None:
        """The skip path's contribution to ``layer``'s MLP output, or None without one."""
        if self.W_skip is None:
            return None
        return self.encoder_input(x) @ self.W_skip[layer].T

    def pre_activation(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """Encoder pre-activation ``W_enc x + b_enc``: ``(..., D) -> (..., F)``."""
        return self.encoder_input(x) @ self.W_enc[layer].T + self.b_enc[layer]

    def encode(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """JumpReLU feature activations at ``layer``: ``(..., D) -> (..., F)``."""
        h = self.pre_activation(x, layer)
        return h * (h > self.threshold[layer])

    def decoder_to(self, source_layer: int, target_layer: int) -> torch.Tensor:
        """Decoder of ``source_layer``'s features into ``target_layer``'s MLP output: ``(F, D)``.

        Raises for a PLT when the layers differ (a PLT feature writes only to its own layer).
        """
        if target_layer < source_layer:
            raise ValueError(f"layer {source_layer} features cannot write to layer {target_layer}")
        if not self.cross_layer:
            if target_layer != source_layer:
                raise ValueError("a per-layer transcoder only writes to its own layer")
            return self.W_dec[source_layer][:, 0]
        return self.W_dec[source_layer][:, target_layer - source_layer]

    def decoder_rows(self, source_layer: int, ids: torch.Tensor) -> torch.Tensor:
        """Decoders of some of ``source_layer``'s features, ``(K, n_targets, D)``, on the device
        of the encoder (``target_layers(source_layer)`` order).

        The decoders may live in host memory (``load_transcoder(offload_decoders=True)``): only
        the rows asked for travel to the GPU.
        """
        w = self.W_dec[source_layer]
        return w[ids.to(w.device)].to(self.b_dec.device, non_blocking=True)

    def source_layers(self, target_layer: int) -> range:
        """Layers whose features write to ``target_layer``'s MLP output."""
        return (
            range(target_layer + 1) if self.cross_layer else range(target_layer, target_layer + 1)
        )

    def target_layers(self, source_layer: int) -> range:
        """Layers whose MLP outputs ``source_layer``'s features write to (``W_dec[l]``'s dim 1)."""
        return range(source_layer, self.n_layers if self.cross_layer else source_layer + 1)

    def decode(self, acts: list[torch.Tensor], target_layer: int) -> torch.Tensor:
        """Reconstruct ``target_layer``'s MLP output from ``acts[l]`` ``(..., F)``, l <= target."""
        out = self.b_dec[target_layer]
        for s in self.source_layers(target_layer):
            out = out + acts[s] @ self.decoder_to(s, target_layer)
        return out

    def forward(self, resid_mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruct every layer's MLP output.

        ``resid_mid`` ``(L, ..., D)`` -> (reconstruction ``(L, ..., D)``, acts ``(L, ..., F)``).
        """
        layers = range(self.n_layers)
        acts = [self.encode(resid_mid[i], i) for i in layers]
        recon = torch.stack([self.decode(acts, i) for i in layers])
        if self.W_skip is not None:
            recon = recon + torch.stack([self.skip(resid_mid[i], i) for i in layers])
        return recon, torch.stack(acts)

    def decoder_norms(self) -> torch.Tensor:
        """Norm of each feature's concatenated decoders, ``(L, F)``."""
        return torch.stack([w.flatten(1).norm(dim=1) for w in self.W_dec])
