"""Saving and loading transcoders in circuit-tracer's layouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import load_transcoder, save_transcoder

torch.set_num_threads(1)
L, D, F = 3, 8, 12


def random_transcoder(cross_layer: bool, seed: int = 0) -> CrossLayerTranscoder:
    torch.manual_seed(seed)
    clt = CrossLayerTranscoder(L, D, F, cross_layer)
    with torch.no_grad():
        for p in clt.parameters():
            p.normal_()
        clt.threshold.uniform_(0, 0.5)
    return clt


def assert_same(a: CrossLayerTranscoder, b: CrossLayerTranscoder) -> None:
    assert (a.n_layers, a.d_model, a.n_features, a.cross_layer) == (
        b.n_layers,
        b.d_model,
        b.n_features,
        b.cross_layer,
    )
    for (name, p), q in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=name)
    x = torch.randn(L, 5, D)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("cross_layer", [True, False])
def test_round_trip_gives_identical_transcoder(cross_layer, tmp_path):
    clt = random_transcoder(cross_layer)
    save_transcoder(clt, tmp_path / "tc", model_name="tiny")
    assert_same(clt, load_transcoder(tmp_path / "tc"))


def test_clt_files_follow_circuit_tracer_layout(tmp_path):
    save_transcoder(random_transcoder(True), tmp_path / "tc")
    config = yaml.safe_load((tmp_path / "tc" / "config.yaml").read_text())
    assert config["model_kind"] == "cross_layer_transcoder"
    assert (config["feature_input_hook"], config["feature_output_hook"]) == (
        "hook_resid_mid",
        "hook_mlp_out",
    )
    for i in range(L):
        with safe_open(str(tmp_path / "tc" / f"W_enc_{i}.safetensors"), "pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        assert shapes == {
            f"W_enc_{i}": (F, D),
            f"b_enc_{i}": (F,),
            f"b_dec_{i}": (D,),
            f"threshold_{i}": (F,),
        }
        with safe_open(str(tmp_path / "tc" / f"W_dec_{i}.safetensors"), "pt") as f:
            assert tuple(f.get_slice(f"W_dec_{i}").get_shape()) == (F, L - i, D)


def test_plt_files_follow_circuit_tracer_transcoder_set_layout(tmp_path):
    save_transcoder(random_transcoder(False), tmp_path / "tc")
    assert (
        yaml.safe_load((tmp_path / "tc" / "config.yaml").read_text())["model_kind"]
        == "transcoder_set"
    )
    with safe_open(str(tmp_path / "tc" / "layer_1.safetensors"), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    assert shapes == {
        "W_enc": (F, D),
        "W_dec": (F, D),
        "b_enc": (F,),
        "b_dec": (D,),
        "activation_function.threshold": (F,),
    }


def test_gemma_scope_per_layer_files_load(tmp_path):
    """GemmaScope .npz stores W_enc as (D, F); GemmaScope-2 safetensors use lower-case keys."""
    plt = random_transcoder(False)
    for i in range(L):
        params = {
            "W_enc": plt.W_enc[i].T,
            "W_dec": plt.W_dec[i][:, 0],
            "b_enc": plt.b_enc[i],
            "b_dec": plt.b_dec[i],
            "threshold": plt.threshold[i],
        }
        params = {k: v.detach().numpy() for k, v in params.items()}
        if i == 0:
            np.savez(tmp_path / "layer_0.npz", **params)
        else:
            lower = {k.lower(): torch.from_numpy(v).contiguous() for k, v in params.items()}
            save_file(lower, str(tmp_path / f"layer_{i}.safetensors"))
    assert_same(plt, load_transcoder(tmp_path))


def test_transcoders_listed_in_config_yaml_load(tmp_path):
    plt = random_transcoder(False)
    save_transcoder(plt, tmp_path / "tc")
    (tmp_path / "tc" / "sub").mkdir()
    for i in range(L):
        (tmp_path / "tc" / f"layer_{i}.safetensors").rename(
            tmp_path / "tc" / "sub" / f"t{i}.safetensors"
        )
    config = {
        "model_kind": "transcoder_set",
        "transcoders": [f"sub/t{i}.safetensors" for i in range(L)],
    }
    (tmp_path / "tc" / "config.yaml").write_text(yaml.safe_dump(config))
    assert_same(plt, load_transcoder(tmp_path / "tc"))


def test_save_replaces_an_existing_directory(tmp_path):
    save_transcoder(random_transcoder(True, seed=1), tmp_path / "tc")
    clt = random_transcoder(True, seed=2)
    save_transcoder(clt, tmp_path / "tc")
    assert_same(clt, load_transcoder(tmp_path / "tc"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tc"]


def test_shape_mismatch_with_model_names_both_shapes(tmp_path):
    save_transcoder(random_transcoder(True), tmp_path / "tc")
    cfg = LlamaConfig(
        vocab_size=16,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    with pytest.raises(ValueError, match=r"n_layers=3, d_model=8.*n_layers=2, d_model=16"):
        load_transcoder(tmp_path / "tc", model=LlamaForCausalLM(cfg))


def test_missing_or_broken_directories_raise(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_transcoder(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="holds no transcoder"):
        load_transcoder(tmp_path)
    save_transcoder(random_transcoder(True), tmp_path / "tc")
    (tmp_path / "tc" / "W_enc_1.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"layers \[1\]"):
        load_transcoder(tmp_path / "tc")


@pytest.mark.crosscheck
def test_circuit_tracer_loads_our_clt(tmp_path):
    """circuit-tracer's own loader reads our CLT directory and computes the same."""
    ct = pytest.importorskip("circuit_tracer.transcoder.cross_layer_transcoder")
    clt = random_transcoder(True)
    save_transcoder(clt, tmp_path / "tc")
    theirs = ct.load_clt(
        str(tmp_path / "tc"), device=torch.device("cpu"), dtype=torch.float32, lazy_decoder=False
    )
    x = torch.randn(L, 5, D)
    ours_acts = torch.stack([clt.encode(x[i], i) for i in range(L)])
    torch.testing.assert_close(theirs.encode(x), ours_acts)
    torch.testing.assert_close(theirs(x), clt(x)[0])


@pytest.mark.crosscheck
def test_circuit_tracer_loads_our_plt(tmp_path):
    """circuit-tracer's transcoder-set loader reads our per-layer files."""
    slt = pytest.importorskip("circuit_tracer.transcoder.single_layer_transcoder")
    plt = random_transcoder(False)
    save_transcoder(plt, tmp_path / "tc")
    paths = {i: str(tmp_path / "tc" / f"layer_{i}.safetensors") for i in range(L)}
    theirs = slt.load_transcoder_set(
        paths,
        scan="test",
        feature_input_hook="hook_resid_mid",
        feature_output_hook="hook_mlp_out",
        device=torch.device("cpu"),
        dtype=torch.float32,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    x = torch.randn(L, 5, D)
    recon, acts = plt(x)
    torch.testing.assert_close(theirs.encode(x), acts)
    torch.testing.assert_close(theirs.decode(acts, x), recon)
