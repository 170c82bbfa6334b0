"""The hook helper: named hook points read and replace activations, and leave no hook behind."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, tiny_model

from llmbio.adapters import get_adapter, hooks, mlp_out_hook, resid_mid_hook
from llmbio.attribution.replacement import record

IDS = torch.tensor([[0, 5, 17, 33, 2, 60, 9, 41]])


def _n_hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


@pytest.mark.parametrize("family", FAMILIES)
def test_named_hooks_read_the_recorded_activations(family):
    model = tiny_model(family)
    rec = record(model, IDS[0])
    n_layers = get_adapter(model).n_layers(model)
    seen: dict[str, torch.Tensor] = {}
    names = ["hook_embed", "ln_final.hook_in"]
    names += [f(layer) for layer in range(n_layers) for f in (resid_mid_hook, mlp_out_hook)]
    before = _n_hooks(model)
    with (
        torch.no_grad(),
        hooks(model, {n: lambda x, n=n: seen.__setitem__(n, x[0]) for n in names}),
    ):
        model(input_ids=IDS)
    assert _n_hooks(model) == before
    torch.testing.assert_close(seen["hook_embed"], rec.embed, rtol=0, atol=0)
    # the recording computes attention itself (softmax in float32, as the eager path): the
    # layers after the first agree to its rounding, far below a wrong hook point's difference
    near = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(seen["ln_final.hook_in"], rec.final_resid, **near)
    for layer in range(n_layers):
        torch.testing.assert_close(seen[resid_mid_hook(layer)], rec.resid_mid[layer], **near)
        torch.testing.assert_close(seen[mlp_out_hook(layer)], rec.mlp_out[layer], **near)


def test_a_returned_tensor_replaces_the_activation():
    model = tiny_model("llama")
    with torch.no_grad():
        clean = model(input_ids=IDS).logits
        with hooks(model, {mlp_out_hook(2): torch.zeros_like}):
            edited = model(input_ids=IDS).logits
        seen = []
        with hooks(model, {"ln_final.hook_in": seen.append}):
            model(input_ids=IDS)
        expected = model.lm_head(model.model.norm(seen[0] - record(model, IDS[0]).mlp_out[2]))
    assert not torch.allclose(clean, edited)
    torch.testing.assert_close(edited, expected)


def test_unknown_hook_points_are_named():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="blocks.7.hook_mlp_out"):
        with hooks(model, {"blocks.7.hook_mlp_out": print}):
            pass
    assert _n_hooks(model) == 0
