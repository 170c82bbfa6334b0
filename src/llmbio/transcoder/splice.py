"""Splicing a transcoder into a model: MLP blocks replaced by the transcoder's reconstruction."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from llmbio.adapters import hooks, mlp_out_hook, resid_mid_hook
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import check_compatible


@contextmanager
def splice_transcoder(
    model: nn.Module, clt: CrossLayerTranscoder, keep_first_position: bool = True
) -> Iterator[None]:
    """Within the block, every ``blocks.{l}.hook_mlp_out`` is replaced by ``clt``'s reconstruction.

    Features are computed from the live ``hook_resid_mid`` of the spliced forward pass, so errors
    compound through the layers (unlike the offline reconstruction of cached activations).
    ``keep_first_position`` leaves position 0 (BOS, never seen in training) unchanged.
    """
    check_compatible(clt, model, "being spliced")
    acts: dict[int, torch.Tensor] = {}

    def encode(layer: int, x: torch.Tensor) -> None:
        acts[layer] = clt.encode(x.to(clt.W_enc.dtype), layer)

    def decode(layer: int, out: torch.Tensor) -> torch.Tensor:
        recon = clt.decode([acts.get(s) for s in range(layer + 1)], layer).to(out.dtype)
        if keep_first_position:
            recon = torch.cat([out[:, :1], recon[:, 1:]], dim=1)
        return recon

    points = {}
    for layer in range(clt.n_layers):
        points[resid_mid_hook(layer)] = functools.partial(encode, layer)
        points[mlp_out_hook(layer)] = functools.partial(decode, layer)
    try:
        with hooks(model, points):
            yield
    finally:
        acts.clear()
