"""Tiny float64 random models of every supported architecture, and random transcoders.

Shared by the tests (pytest puts ``tests/`` on ``sys.path``): vocab 64, d_model 32, 3 layers,
GQA where the architecture has it, norms and biases randomised so that they matter.
"""

from __future__ import annotations

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

from llmbio.transcoder.clt import CrossLayerTranscoder

FAMILIES = ["llama", "qwen3", "gemma2", "gpt2"]
_DECODER = dict(
    vocab_size=64,
    hidden_size=32,
    num_hidden_layers=3,
    num_attention_heads=4,
    intermediate_size=64,
    num_key_value_heads=2,
    head_dim=8,
)


def tiny_model(family: str, seed: int = 0) -> torch.nn.Module:
    """A float64 random model; Gemma-2 has both softcaps and a sliding window of 4."""
    torch.manual_seed(seed)
    if family == "llama":
        model = LlamaForCausalLM(LlamaConfig(**_DECODER))
    elif family == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(**_DECODER))
    elif family == "gemma2":
        model = Gemma2ForCausalLM(
            Gemma2Config(
                **_DECODER,
                sliding_window=4,
                attn_logit_softcapping=5.0,
                final_logit_softcapping=3.0,
            )
        )
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
            )  # fmt: skip
        )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or "ln" in name or "bias" in name:
                p.normal_(0, 0.3)
    return model.eval().double()


def random_clt(
    n_layers: int = 3, d_model: int = 32, n_features: int = 40, seed: int = 0,
    cross_layer: bool = True,
) -> CrossLayerTranscoder:  # fmt: skip
    """A float64 CLT with N(0, 0.3) weights and thresholds in [0, 0.3)."""
    torch.manual_seed(seed)
    clt = CrossLayerTranscoder(n_layers, d_model, n_features, cross_layer=cross_layer).double()
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.uniform_(0.0, 0.3)
    return clt


def write_tiny_run(run_dir, config: dict | None = None):
    """A run folder as the pipeline leaves it, in miniature: ``model/`` (a float32 two-layer
    Llama and its word tokenizer, safetensors), ``transcoder/clt/`` and, when ``config`` is
    given, the ``config.yaml`` the run recorded. Returns ``run_dir``."""
    from pathlib import Path

    from llmbio.config import load_config, write_run_config
    from llmbio.tokenizer import build_tokenizer
    from llmbio.transcoder.io import save_transcoder

    run_dir = Path(run_dir)
    tok = build_tokenizer(["the capital of Texas is Austin .", "Dallas is in Texas ."])
    torch.manual_seed(0)
    config_ = LlamaConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, bos_token_id=tok.bos_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config_).save_pretrained(run_dir / "model")
    tok.save_pretrained(run_dir / "model")
    clt = CrossLayerTranscoder(2, 16, 8)
    with torch.no_grad():
        for p in clt.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
        clt.threshold.zero_()
    save_transcoder(clt, run_dir / "transcoder" / "clt")
    if config is not None:
        write_run_config(load_config({"run": run_dir.name, **config}), run_dir / "config.yaml")
    return run_dir
