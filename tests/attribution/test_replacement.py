"""The local replacement model reproduces the real model and leaves it untouched."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, random_clt, tiny_model

from llmbio.adapters import get_adapter
from llmbio.attribution.replacement import build_replacement, frozen, record


def _ids(n: int = 9, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, 64, (n,), generator=torch.Generator().manual_seed(seed))


def _state(model: torch.nn.Module) -> tuple:
    """Everything frozen() touches: attention implementation, own forwards, hooks, grad flags."""
    mods = list(model.modules())
    return (
        model.config._attn_implementation,
        sum("forward" in m.__dict__ for m in mods),
        sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in mods),
        tuple(p.requires_grad for p in model.parameters()),
    )


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("family", FAMILIES)
def test_replacement_reproduces_logits_and_restores_model(family):
    model, clt, ids = tiny_model(family), random_clt(), _ids()
    with torch.no_grad():
        ref = model(ids[None]).logits[0]
    before = _state(model)
    rep = build_replacement(model, clt, ids)
    assert len(rep.active_features) > 20
    assert (rep.active_features[:, 1] >= 1).all()  # BOS features dropped
    with torch.no_grad(), frozen(model, rep.recording) as fm:
        out = fm(rep.recording.embed[None], [x[None] for x in rep.mlp_out()])
    assert _rel(rep.recording.logits, ref) < 1e-6
    assert _rel(out.logits[0], ref) < 1e-4
    assert _state(model) == before
    with torch.no_grad():
        assert torch.equal(model(ids[None]).logits[0], ref)


@pytest.mark.parametrize("family", FAMILIES)
def test_frozen_model_is_affine_in_its_inputs(family):
    """Scaling the inputs' deviation from zero scales the outputs' deviation (frozen = affine)."""
    model, ids = tiny_model(family), _ids()
    rec = record(model, ids)
    zero_e, zero_m = (
        torch.zeros_like(rec.embed)[None],
        [torch.zeros_like(x)[None] for x in rec.mlp_out],
    )
    with torch.no_grad(), frozen(model, rec) as fm:
        c = fm(zero_e, zero_m).final_normed
        one = fm(rec.embed[None], [x[None] for x in rec.mlp_out]).final_normed
        two = fm(2 * rec.embed[None], [2 * x[None] for x in rec.mlp_out]).final_normed
    assert _rel(two - c, 2 * (one - c)) < 1e-10


@pytest.mark.parametrize("family", ["llama", "gemma2"])
def test_patterns_are_causal_masked_and_normalised(family):
    rec = record(tiny_model(family), _ids(n=9))
    for layer, pattern in enumerate(rec.patterns):
        assert pattern.shape == (1, 4, 9, 9)
        torch.testing.assert_close(pattern.sum(-1), torch.ones(1, 4, 9, dtype=pattern.dtype))
        assert (pattern.triu(1) == 0).all()
        if family == "gemma2" and layer % 2 == 0:  # sliding-window layers see 4 positions
            assert (pattern.tril(-4) == 0).all() and (pattern.tril(-3) != 0).any()


def test_prefix_forward_matches_full_forward():
    model, ids = tiny_model("llama"), _ids(n=9)
    rec = record(model, ids)
    with torch.no_grad(), frozen(model, rec) as fm:
        full = fm(rec.embed[None], [x[None] for x in rec.mlp_out])
        part = fm(rec.embed[None, :5], [x[None, :5] for x in rec.mlp_out])
    torch.testing.assert_close(part.logits, full.logits[:, :5])
    torch.testing.assert_close(part.resid_mid[2], full.resid_mid[2][:, :5])


def test_model_restored_after_exception():
    model = tiny_model("qwen3")
    before = _state(model)
    rec = record(model, _ids())
    with pytest.raises(RuntimeError, match="boom"), frozen(model, rec):
        raise RuntimeError("boom")
    assert _state(model) == before


def test_bad_inputs_raise_clear_errors():
    model = tiny_model("llama")
    with pytest.raises(ValueError, match="n_layers="):
        build_replacement(model, random_clt(n_layers=2), _ids())
    with pytest.raises(ValueError, match="1-D long"):
        record(model, torch.zeros(2, 3, dtype=torch.long))
    rec = record(model, _ids())
    with torch.no_grad(), frozen(model, rec) as fm, pytest.raises(ValueError, match="embed must"):
        fm(torch.zeros(1, 20, 32, dtype=torch.float64), [x[None] for x in rec.mlp_out])
    model.train()
    with pytest.raises(ValueError, match="eval"):
        record(model, _ids())
    model.eval()
    model.set_attn_implementation = lambda name: None  # a model outside the registry
    with pytest.raises(RuntimeError, match="AttentionInterface"):
        record(model, _ids())


def test_norm_kinds_cover_families():
    kinds = {f: get_adapter(tiny_model(f)).norm_kind for f in FAMILIES}
    assert kinds == {"llama": "rms", "qwen3": "rms", "gemma2": "rms_one_plus", "gpt2": "layernorm"}
