"""A tiny organism-like setup: a random Llama over the tiny world's tokenizer, an activation
cache of packed corpus documents, and a random CLT calibrated to fire on ~10% of tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.activations import ActivationReader, cache_activations
from llmbio.corpus import pack_documents
from llmbio.transcoder.clt import CrossLayerTranscoder

N_FEATURES = 24


@pytest.fixture(scope="module")
def tiny_setup(tiny_tokenizer, tiny_corpus, tmp_path_factory):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tiny_tokenizer), hidden_size=32, intermediate_size=64,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    docs = tiny_tokenizer(list(tiny_corpus["text"][:400]))["input_ids"]
    seqs = pack_documents(docs, 32)[:60]
    cache = tmp_path_factory.mktemp("features") / "cache"
    cache_activations(model, seqs.split(20), cache, dtype="float32", eval_fraction=0.0)
    reader = ActivationReader(cache)
    resid = torch.cat([r for r, _ in reader.iter_batches(10_000, shuffle=False)])  # (N, L, D)
    clt = CrossLayerTranscoder(3, 32, N_FEATURES)
    with torch.no_grad():
        clt.W_enc.normal_()
        for w in clt.W_dec:
            w.normal_(0, 0.3)
        for layer in range(3):
            pre = clt.pre_activation(resid[:, layer], layer)
            clt.threshold[layer] = torch.quantile(pre, 0.9, dim=0)
    return model, clt, reader, resid
