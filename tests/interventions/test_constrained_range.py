"""Constrained patching over part of the layers, against a pass written out by hand."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.interventions.edits import Edit
from llmbio.interventions.engine import Intervener
from llmbio.transcoder.clt import CrossLayerTranscoder

IDS = torch.tensor([0, 5, 17, 33, 2, 60, 9, 41])


def two_layers() -> tuple[LlamaForCausalLM, CrossLayerTranscoder]:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval().double()
    clt = CrossLayerTranscoder(2, 32, 16).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.zero_()
    return model, clt


def by_hand(model, layer0_out) -> torch.Tensor:
    """Logits with layer 0's MLP output replaced by ``layer0_out`` ``(n, D)`` and layer 1's MLP
    left as it is (nothing added to it)."""
    mlp = model.model.layers[0].mlp
    handle = mlp.register_forward_hook(lambda _m, _i, _o: layer0_out[None])
    try:
        return model(input_ids=IDS[None]).logits[0]
    finally:
        handle.remove()


@torch.no_grad()
def test_edit_constrained_to_its_layer_writes_only_there():
    """Layer 0 constrained: the feature's layer-0 decoder write is added to the clean layer-0
    MLP output; the real layer-1 MLP responds to it, and its layer-0 -> 1 write is not added."""
    model, clt = two_layers()
    runner = Intervener(model, clt, IDS, constrained_layers=[0])
    clean0 = runner.clean.recording.mlp_out[0]  # (n, D)
    acts = runner.clean.acts[0]  # (n, F) layer-0 activations of the clean pass
    pos = int(acts.sum(1).argmax())
    feat = int(acts[pos].argmax())
    a = float(acts[pos, feat])
    assert a > 0.1  # an active feature, so the edit moves something

    out = runner.run([Edit.set_to((0, feat), 3 * a, [pos])])
    delta = torch.zeros_like(clean0)
    delta[pos] = 2 * a * clt.W_dec[0][feat, 0]  # (new - old) * W_dec[0 -> 0]
    expected = by_hand(model, clean0 + delta)
    torch.testing.assert_close(out.logits, expected, rtol=1e-9, atol=1e-9)

    # keeping the layer-0 -> 1 write as well would move the logits by more than the tolerance
    also = 2 * a * clt.W_dec[0][feat, 1]
    mlp1 = model.model.layers[1].mlp
    hook = mlp1.register_forward_hook(lambda _m, _i, o: o + torch.where(
        torch.arange(len(IDS))[:, None] == pos, also, 0.0)[None])  # fmt: skip
    try:
        doubled = by_hand(model, clean0 + delta)
    finally:
        hook.remove()
    assert (doubled - expected).abs().max() > 1e-3


@torch.no_grad()
def test_edit_before_the_range_writes_into_the_range_only():
    """Layer 1 constrained, edit at layer 0: layer 0 is the real MLP (the edit writes nothing
    there), layer 1's output is its clean value plus the edit's layer-0 -> 1 write."""
    model, clt = two_layers()
    runner = Intervener(model, clt, IDS, constrained_layers=[1])
    acts = runner.clean.acts[0]
    pos = int(acts.sum(1).argmax())
    feat = int(acts[pos].argmax())
    a = float(acts[pos, feat])
    out = runner.run([Edit.zero((0, feat), [pos])])
    clean1 = runner.clean.recording.mlp_out[1].clone()
    clean1[pos] -= a * clt.W_dec[0][feat, 1]
    hook = model.model.layers[1].mlp.register_forward_hook(lambda _m, _i, _o: clean1[None])
    try:
        expected = model(input_ids=IDS[None]).logits[0]
    finally:
        hook.remove()
    torch.testing.assert_close(out.logits, expected, rtol=1e-9, atol=1e-9)
