"""Transcoder training: config, schedules, normalisation folding, end to end, resume."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.activations import ActivationReader, cache_activations
from llmbio.transcoder import train
from llmbio.transcoder.evaluate import evaluate_transcoder
from llmbio.transcoder.io import load_transcoder
from llmbio.transcoder.train import TranscoderConfig, train_transcoder

torch.set_num_threads(1)
TINY = TranscoderConfig(
    n_features=64,
    n_steps=300,
    batch_size=256,
    lr=4e-3,
    sparsity_coefficient=0.1,
    checkpoint_every=100,
    log_every=50,
)
NMSE_BOUND = 0.2


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> ActivationReader:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    model = LlamaForCausalLM(cfg)
    gen = torch.Generator().manual_seed(0)
    seqs = [torch.randint(0, 64, (32, 32), generator=gen) for _ in range(8)]
    out = tmp_path_factory.mktemp("train") / "cache"
    return ActivationReader(
        cache_activations(model, seqs, out, eval_fraction=0.1, shard_tokens=2048)
    )


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="n_features"):
        TranscoderConfig(n_features=0)
    with pytest.raises(TypeError, match="cross_layer"):
        TranscoderConfig(cross_layer=1)
    with pytest.raises(ValueError, match=r"unknown TranscoderConfig keys \['lamda'\]"):
        TranscoderConfig.from_dict({"lamda": 1.0})
    assert TranscoderConfig.from_dict(TINY.to_dict()) == TINY


def test_lambda_ramps_linearly_and_lr_warms_up_and_decays():
    cfg = dataclasses.replace(TINY, n_steps=100, lambda_ramp_fraction=0.5)
    lrs, lams = zip(*(train._schedules(step, cfg) for step in range(100)), strict=True)
    assert lams[0] == pytest.approx(cfg.sparsity_coefficient / 50)
    assert lams[49] == lams[99] == cfg.sparsity_coefficient
    assert lrs[0] < lrs[10] == cfg.lr > lrs[99] > 0


def test_folded_transcoder_on_raw_activations_equals_training_model(reader):
    for cross_layer in (True, False):
        cfg = dataclasses.replace(TINY, cross_layer=cross_layer, initial_threshold=0.2)
        model = train._Trainable(3, 32, cfg)
        train._init(model, cfg, torch.randn(3, 32))
        s_in, s_out = torch.tensor([0.5, 2.0, 3.0]), torch.tensor([0.1, 4.0, 1.5])
        x = torch.randn(3, 10, 32)
        recon, code, *_ = model(x / s_in[:, None, None], cfg)
        clt = train._fold_normalisation(model, s_in, s_out)
        raw_recon, raw_acts = clt(x)
        torch.testing.assert_close(raw_acts, code.dense())
        torch.testing.assert_close(raw_recon, recon * s_out[:, None, None])


def test_tiny_end_to_end_reaches_low_nmse(reader, tmp_path):
    """A random 3-layer model's MLP outputs are smooth functions of resid_mid that 64 features
    per layer reconstruct well (measured NMSE 0.08-0.12 at L0 ~11); the untrained initialisation
    explains nothing (NMSE > 1). The bound 0.2 leaves margin for noise while catching a broken
    loss, gradient or normalisation."""
    clt = train_transcoder(reader, TINY, tmp_path / "tc", progress=False)
    df = evaluate_transcoder(clt, reader)
    per_layer = df[(df.scope == "layer") & (df.metric == "nmse")]["value"]
    assert len(per_layer) == 3 and (per_layer < NMSE_BOUND).all(), per_layer.tolist()
    l0 = df[(df.scope == "layer") & (df.metric == "l0")]["value"]
    assert (l0 < TINY.n_features / 2).all()
    untrained = train._Trainable(3, 32, TINY)
    train._init(untrained, TINY, torch.zeros(3, 32))
    s_in, s_out = train._scales(reader)
    init_df = evaluate_transcoder(train._fold_normalisation(untrained, s_in, s_out), reader)
    assert (init_df[(init_df.scope == "all") & (init_df.metric == "nmse")]["value"] > 1).all()
    log = pd.read_parquet(tmp_path / "tc" / "train_log.parquet")
    assert (
        log["step"].iloc[-1] == TINY.n_steps
        and not (tmp_path / "tc" / "checkpoint.safetensors").exists()
    )


def _train_until_killed(reader, cfg, out_dir, monkeypatch, after_step: int, **kwargs) -> None:
    """Train until the checkpoint of ``after_step`` is written, then stop as a killed job would."""
    real_save = train.save_checkpoint

    def save_then_crash(*args, **kw):
        real_save(*args, **kw)
        if args[4] == after_step:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train_transcoder(reader, cfg, out_dir, progress=False, **kwargs)
    monkeypatch.setattr(train, "save_checkpoint", real_save)


def test_same_seed_same_weights_and_resume_after_interrupt(reader, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, n_steps=30, checkpoint_every=10)
    reference = train_transcoder(reader, cfg, tmp_path / "a", progress=False)
    again = train_transcoder(reader, cfg, tmp_path / "b", progress=False)
    for p, q in zip(reference.parameters(), again.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)

    _train_until_killed(reader, cfg, tmp_path / "c", monkeypatch, after_step=20)
    assert (tmp_path / "c" / "checkpoint.safetensors").exists()
    resumed = train_transcoder(reader, cfg, tmp_path / "c", progress=False)
    for p, q in zip(reference.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert len(pd.read_parquet(tmp_path / "c" / "train_log.parquet")) == len(
        pd.read_parquet(tmp_path / "a" / "train_log.parquet")
    )

    done = train_transcoder(reader, cfg, tmp_path / "c", progress=False)  # finished: just loads
    for p, q in zip(
        load_transcoder(tmp_path / "c" / "transcoder").parameters(), done.parameters(), strict=True
    ):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"different config .*'seed'"):
        train_transcoder(reader, dataclasses.replace(cfg, seed=1), tmp_path / "c", progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_training_matches_cpu_and_resumes(reader, tmp_path, monkeypatch):
    cfg = dataclasses.replace(TINY, n_steps=30, checkpoint_every=10)
    on_cpu = train_transcoder(reader, cfg, tmp_path / "cpu", progress=False)
    on_gpu = train_transcoder(reader, cfg, tmp_path / "gpu", progress=False, device="cuda")
    assert all(p.device.type == "cpu" for p in on_gpu.parameters())
    cpu_log = pd.read_parquet(tmp_path / "cpu" / "train_log.parquet")
    gpu_log = pd.read_parquet(tmp_path / "gpu" / "train_log.parquet")
    # other kernels round differently: the same run up to float noise, not bit for bit
    assert gpu_log["nmse"].iloc[-1] == pytest.approx(cpu_log["nmse"].iloc[-1], rel=0.05)
    torch.testing.assert_close(on_gpu.W_enc, on_cpu.W_enc, rtol=0, atol=5e-3)

    _train_until_killed(reader, cfg, tmp_path / "resumed", monkeypatch, 20, device="cuda")
    resumed = train_transcoder(reader, cfg, tmp_path / "resumed", progress=False, device="cuda")
    for p, q in zip(on_gpu.parameters(), resumed.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
