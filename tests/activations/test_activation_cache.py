"""Activation cache: hook semantics, manifest, shuffling reader, atomic writes."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from llmbio.activations import ActivationReader, cache_activations

torch.set_num_threads(1)
VOCAB, B, T = 64, 8, 12


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def sequences() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return [torch.randint(0, VOCAB, (B, T), generator=gen) for _ in range(4)]


@pytest.fixture(scope="module")
def cache(model, sequences, tmp_path_factory):
    out = tmp_path_factory.mktemp("acts") / "cache"
    return cache_activations(
        model, sequences, out, shard_tokens=50, dtype="float32", eval_fraction=0.25
    )


def _by_token(reader: ActivationReader, split: str) -> dict[tuple[int, int], tuple]:
    batches = reader.iter_batches(1000, shuffle=False, split=split, with_index=True)
    out = {}
    for x, y, idx in batches:
        for i, (s, p) in enumerate(
            zip(idx.sequence_id.tolist(), idx.position.tolist(), strict=True)
        ):
            out[(s, p)] = (x[i], y[i], idx.token_id[i].item())
    return out


def test_cached_activations_match_the_residual_stream(model, sequences, cache):
    """resid_mid + mlp_out of layer l is the residual stream entering layer l + 1."""
    reader = ActivationReader(cache)
    rows = _by_token(reader, "train") | _by_token(reader, "eval")
    assert len(rows) == len(sequences) * B * (T - 1)  # position 0 skipped
    with torch.no_grad():
        hidden = model(sequences[1], output_hidden_states=True).hidden_states
    for (seq, pos), (x, y, token) in rows.items():
        if seq // B != 1:
            continue
        b = seq % B
        assert token == sequences[1][b, pos]
        for layer in range(2):
            torch.testing.assert_close(x[layer] + y[layer], hidden[layer + 1][b, pos])


def test_manifest_records_shapes_and_norms(cache):
    manifest = json.loads((cache / "manifest.json").read_text())
    assert (manifest["n_layers"], manifest["d_model"], manifest["dtype"]) == (3, 32, "float32")
    assert manifest["n_tokens"] == 4 * B * (T - 1) == sum(manifest["n_tokens_split"].values())
    assert all(s["n_tokens"] <= 50 for s in manifest["shards"])
    reader = ActivationReader(cache)
    x = torch.cat([b[0] for b in reader.iter_batches(10_000, shuffle=False)])
    expected = x.pow(2).sum(-1).mean(0)
    torch.testing.assert_close(reader.mean_sq_norm("resid_mid"), expected, rtol=1e-4, atol=0)


def test_whole_sequences_go_to_one_split(cache):
    reader = ActivationReader(cache)
    train, held_out = (set(reader.read_index(s)["sequence_id"]) for s in ("train", "eval"))
    assert train and held_out and not train & held_out


def test_reader_shuffles_deterministically_and_covers_every_token_once(cache):
    reader = ActivationReader(cache)
    n = reader.n_tokens("train")

    def order(seed: int) -> list[tuple[int, int]]:
        batches = reader.iter_batches(16, seed=seed, with_index=True, buffer_shards=2)
        return [
            (s, p)
            for *_, idx in batches
            for s, p in zip(idx.sequence_id.tolist(), idx.position.tolist(), strict=True)
        ]

    first = order(0)
    assert len(first) == n and len(set(first)) == n
    assert first == order(0)
    assert first != order(1)
    assert first != sorted(first)


def test_start_batch_resumes_the_same_stream(cache):
    reader = ActivationReader(cache)
    full = [x for x, _ in reader.iter_batches(16, seed=3, epochs=2)]
    resumed = [x for x, _ in reader.iter_batches(16, seed=3, epochs=2, start_batch=5)]
    assert len(resumed) == len(full) - 5
    torch.testing.assert_close(torch.cat(resumed), torch.cat(full[5:]))


def test_float16_cache_is_close_to_float32(model, sequences, cache, tmp_path):
    half = ActivationReader(cache_activations(model, sequences, tmp_path / "c", eval_fraction=0.25))
    full = ActivationReader(cache)
    assert half.manifest["dtype"] == "float16"
    x16, _ = next(half.iter_batches(10_000, shuffle=False))
    x32, _ = next(full.iter_batches(10_000, shuffle=False))
    torch.testing.assert_close(x16, x32, rtol=2e-3, atol=1e-4)


def test_interrupted_write_leaves_nothing(model, sequences, tmp_path):
    def failing():
        yield sequences[0]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache_activations(model, failing(), tmp_path / "cache", shard_tokens=10)
    assert list(tmp_path.iterdir()) == []


def test_bad_input_raises_clear_errors(model, sequences, cache, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        cache_activations(model, [sequences[0][0]], tmp_path / "a")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        cache_activations(model, sequences, cache)
    with pytest.raises(FileNotFoundError, match="not an activation cache"):
        ActivationReader(tmp_path)
    with pytest.raises(ValueError, match="split"):
        next(ActivationReader(cache).iter_batches(4, split="test"))


def test_gpt2_is_cached_through_its_adapter(tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=2, n_head=2, n_positions=T)
    gpt2 = GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, VOCAB, (4, T))
    reader = ActivationReader(cache_activations(gpt2, [ids], tmp_path / "c", eval_fraction=0.0))
    x, y = next(reader.iter_batches(100, shuffle=False))
    assert x.shape == y.shape == (4 * (T - 1), 2, 16)
    assert np.isfinite(x.numpy()).all() and y.abs().sum() > 0


def test_cache_sequences_add_task_only_sequences(tiny_cfg, tiny_corpus, tiny_tokenizer):
    from llmbio.stages.transcoder import cache_sequences

    def cfg_with(**cache):
        return dataclasses.replace(
            tiny_cfg, cache=dataclasses.replace(tiny_cfg.cache, n_sequences=40, **cache)
        )

    plain = cache_sequences(tiny_corpus, tiny_tokenizer, cfg_with())
    assert plain.shape == (40, tiny_cfg.train.seq_len)
    assert torch.equal(plain, cache_sequences(tiny_corpus, tiny_tokenizer, cfg_with()))
    poems = cache_sequences(tiny_corpus, tiny_tokenizer, cfg_with(task_sequences={"poetry": 0.5}))
    rhyming = tiny_tokenizer.convert_tokens_to_ids("rhyming")
    assert poems.shape == plain.shape
    assert (poems == rhyming).sum() > 2 * (plain == rhyming).sum()
    for bad in ({"poems": 0.2}, {"poetry": 1.0}):
        with pytest.raises(ValueError, match="cache.task_sequences"):
            cache_sequences(tiny_corpus, tiny_tokenizer, cfg_with(task_sequences=bad))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cache_of_a_model_on_the_gpu_equals_the_cpu_cache(model, sequences, cache, tmp_path):
    import copy

    on_gpu = copy.deepcopy(model).cuda()
    gpu = ActivationReader(
        cache_activations(
            on_gpu, sequences, tmp_path / "g", shard_tokens=50, dtype="float32", eval_fraction=0.25
        )
    )
    cpu = ActivationReader(cache)
    assert gpu.manifest["n_tokens"] == cpu.manifest["n_tokens"]
    xg, yg = next(gpu.iter_batches(10_000, shuffle=False))
    xc, yc = next(cpu.iter_batches(10_000, shuffle=False))
    torch.testing.assert_close(xg, xc, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(yg, yc, rtol=1e-4, atol=1e-5)
