"""Tiny float64 random models and transcoders for intervention tests."""

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
)

from llmbio.transcoder.clt import CrossLayerTranscoder

IDS = torch.tensor([0, 5, 17, 33, 2, 60, 9, 41])


def tiny_model(family: str = "llama") -> torch.nn.Module:
    """vocab 64, d_model 32, 3 layers; norm weights and biases randomised."""
    torch.manual_seed(0)
    if family == "gpt2":
        model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_embd=32, n_layer=3, n_head=4))
    elif family == "gemma2":  # sliding windows and attention softcaps, no final logit cap
        config = Gemma2Config(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, head_dim=8, sliding_window=4,
            attn_logit_softcapping=5.0, final_logit_softcapping=None,
        )  # fmt: skip
        model = Gemma2ForCausalLM(config)
    else:
        config = LlamaConfig(
            vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, eos_token_id=None,
        )  # fmt: skip
        model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or "bias" in name:
                p.normal_(0, 0.3)
    return model.eval().double()


def random_clt(n_features: int = 40, cross_layer: bool = True) -> CrossLayerTranscoder:
    torch.manual_seed(1)
    clt = CrossLayerTranscoder(3, 32, n_features, cross_layer=cross_layer).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.uniform_(0.0, 0.3)
    return clt


@pytest.fixture
def llama():
    return tiny_model("llama")


@pytest.fixture
def clt():
    return random_clt()


@pytest.fixture
def gpt2():
    return tiny_model("gpt2")


@pytest.fixture
def gemma2():
    return tiny_model("gemma2")


@pytest.fixture
def ids():
    return IDS.clone()
