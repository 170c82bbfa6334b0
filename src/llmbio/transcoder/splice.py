"""Splicing a transcoder into a model: MLP blocks replaced by the transcoder's reconstruction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from llmbio.adapters import get_adapter
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
    adapter = get_adapter(model)
    acts: dict[int, torch.Tensor] = {}
    handles = []

    def encode_hook(layer: int):
        def hook(_module, args):
            acts[layer] = clt.encode(args[0].to(clt.W_enc.dtype), layer)

        return hook

    def decode_hook(layer: int):
        def hook(_module, _args, output):
            out = output[0] if isinstance(output, tuple) else output
            recon = clt.decode([acts.get(s) for s in range(layer + 1)], layer).to(out.dtype)
            if keep_first_position:
                recon = torch.cat([out[:, :1], recon[:, 1:]], dim=1)
            return (recon, *output[1:]) if isinstance(output, tuple) else recon

        return hook

    for layer in range(clt.n_layers):
        norm = adapter.layer_module(model, layer, adapter.mlp_in_norm)
        mlp_out = adapter.layer_module(model, layer, adapter.mlp_out)
        handles.append(norm.register_forward_pre_hook(encode_hook(layer)))
        handles.append(mlp_out.register_forward_hook(decode_hook(layer)))
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        acts.clear()
