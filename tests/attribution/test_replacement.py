"""The local replacement model reproduces the real model and leaves it untouched."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

from llmbio.adapters import get_adapter
from llmbio.attribution.replacement import build_replacement, frozen, record
from llmbio.transcoder.clt import CrossLayerTranscoder

FAMILIES = ["llama", "qwen3", "gemma2", "gpt2"]
SMALL = dict(vocab_size=64, hidden_size=32, num_hidden_layers=3, num_attention_heads=4)


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A float64 random model; Gemma-2 with a sliding window shorter than the prompts."""
    torch.manual_seed(seed)
    gqa = dict(SMALL, intermediate_size=64, num_key_value_heads=2, head_dim=8)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**gqa))
    elif family == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**gqa))
    elif family == "gemma2":
        cfg = Gemma2Config(
            **gqa, sliding_window=4, attn_logit_softcapping=5.0, final_logit_softcapping=3.0
        )
        model = Gemma2ForCausalLM(cfg)
        with torch.no_grad():  # Gemma norms start at weight 0; make them matter
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.normal_(0, 0.3)
    else:
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=64,
                n_embd=32,
                n_layer=3,
                n_head=4,
                n_positions=64,
                bos_token_id=0,
                eos_token_id=0,
            )
        )
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "bias" in name or "ln" in name:
                    p.normal_(0, 0.3)
    return model.eval().double()


def random_clt(
    n_layers: int = 3, d_model: int = 32, n_features: int = 40, seed: int = 0
) -> CrossLayerTranscoder:
    torch.manual_seed(seed)
    clt = CrossLayerTranscoder(n_layers, d_model, n_features).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.uniform_(0.0, 0.3)
    return clt


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
