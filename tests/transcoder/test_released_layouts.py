"""The loader reads tiny fabricated copies of every released transcoder layout (no network).

Layouts, as circuit-tracer reads them from the Hugging Face repos of the real-model configs;
each fixture writes its repo's ``config.yaml`` key for key (:data:`RELEASED_CONFIGS`):

- ``mntss/clt-gemma-2-2b-426k``: ``W_enc_{i}.safetensors`` (``W_enc_i (F, D)``, ``b_enc_i``,
  ``b_dec_i``, ``threshold_i``) + ``W_dec_{i}.safetensors`` (``W_dec_i (F, L - i, D)``);
- ``mntss/gemma-scope-transcoders``: a config.yaml listing
  ``hf://google/gemma-scope-2b-pt-transcoders/layer_{i}/width_16k/average_l0_{k}/params.npz``
  (``W_enc (D, F)``, ``W_dec (F, D)``, ``b_enc``, ``b_dec``, ``threshold``), reading
  ``ln2.hook_normalized``;
- ``mntss/transcoder-Llama-3.2-1B``: ``layer_{i}.safetensors`` (bfloat16 ``W_enc (F, D)``,
  ``W_dec (F, D)``, ``W_skip (D, D)``, ``b_enc``, ``b_dec``), ReLU, reading ``hook_resid_mid`` and
  writing ``mlp.hook_out``;
- ``mwhanna/qwen3-4b-transcoders``: ``layer_{i}.safetensors`` (the same keys), ReLU, reading
  ``mlp.hook_in`` and writing ``mlp.hook_out``.

A JumpReLU variant stores ``activation_function.threshold``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tiny_models import tiny_model

from llmbio import pretrained
from llmbio.config import PretrainedConfig
from llmbio.transcoder.io import load_transcoder
from llmbio.transcoder.released import hf_uri_path, input_mode, parse_hf_uri

L, D, F = 3, 32, 24
GEMMASCOPE = "google/gemma-scope-2b-pt-transcoders"
_SET = "transcoder_set"
# config.yaml of each released set (GemmaScope's also lists its files under ``transcoders``)
RELEASED_CONFIGS = {
    "gemma-clt": {  # mntss/clt-gemma-2-2b-426k
        "model_name": "google/gemma-2-2b",
        "model_kind": "cross_layer_transcoder",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
    },
    "gemmascope": {  # mntss/gemma-scope-transcoders
        "model_name": "google/gemma-2-2b",
        "model_kind": _SET,
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
    },
    "llama": {  # mntss/transcoder-Llama-3.2-1B
        "model_name": "meta-llama/Llama-3.2-1B",
        "model_kind": _SET,
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "mlp.hook_out",
    },
    "qwen3": {  # mwhanna/qwen3-4b-transcoders
        "model_name": "Qwen/Qwen3-4B",
        "model_kind": _SET,
        "feature_input_hook": "mlp.hook_in",
        "feature_output_hook": "mlp.hook_out",
    },
}


def _config(directory, release: str, **extra) -> None:
    body = {**RELEASED_CONFIGS[release], **extra}
    (directory / "config.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def _rand(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


def make_clt_repo(directory):
    directory.mkdir()
    _config(directory, "gemma-clt")
    for i in range(L):
        enc = {f"W_enc_{i}": _rand(F, D), f"b_enc_{i}": _rand(F), f"b_dec_{i}": _rand(D)}
        enc[f"threshold_{i}"] = torch.rand(F)
        save_file(enc, str(directory / f"W_enc_{i}.safetensors"))
        save_file({f"W_dec_{i}": _rand(F, L - i, D)}, str(directory / f"W_dec_{i}.safetensors"))
    return directory


def make_gemmascope_repo(directory):
    directory.mkdir()
    path = "layer_{}/width_16k/average_l0_{}/params.npz"
    uris = [f"hf://{GEMMASCOPE}/" + path.format(i, 50 + i) for i in range(L)]
    _config(directory, "gemmascope", transcoders=uris)
    weights = []
    for uri in uris:
        path = hf_uri_path(directory, uri)
        path.parent.mkdir(parents=True)
        w = {"W_enc": np.random.randn(D, F), "W_dec": np.random.randn(F, D)}
        w |= {"b_enc": np.random.randn(F), "b_dec": np.random.randn(D)}
        w["threshold"] = np.random.rand(F)
        np.savez(path, **{k: v.astype(np.float32) for k, v in w.items()})
        weights.append(w)
    return directory, weights


def make_plt_repo(directory, release: str, jumprelu: bool = False, skip: bool = True, **extra):
    """``layer_{i}.safetensors`` per-layer transcoders (Llama-3.2-1B's, Qwen3's)."""
    directory.mkdir()
    _config(directory, release, **extra)
    for i in range(L):
        t = {"W_enc": _rand(F, D), "W_dec": _rand(F, D), "b_enc": _rand(F), "b_dec": _rand(D)}
        if skip:
            t["W_skip"] = _rand(D, D)
        if jumprelu:
            t["activation_function.threshold"] = torch.rand(F)
        t = {k: v.to(torch.bfloat16) for k, v in t.items()}
        save_file(t, str(directory / f"layer_{i}.safetensors"))
    return directory


def test_gemma_clt_layout(tmp_path):
    model = tiny_model("gemma2").float()
    clt = load_transcoder(make_clt_repo(tmp_path / "clt"), model, dtype=torch.bfloat16)
    assert (clt.n_layers, clt.d_model, clt.n_features, clt.cross_layer) == (L, D, F, True)
    assert clt.W_enc.dtype == torch.bfloat16 and clt.W_skip is None
    assert clt.input_norm_eps is None
    assert [tuple(w.shape) for w in clt.W_dec] == [(F, L - i, D) for i in range(L)]


def test_gemmascope_plts_listed_as_hf_uris(tmp_path):
    directory, weights = make_gemmascope_repo(tmp_path / "gs")
    clt = load_transcoder(directory)
    assert not clt.cross_layer and clt.input_norm_eps == pytest.approx(1e-6)
    torch.testing.assert_close(clt.W_enc[1], torch.from_numpy(weights[1]["W_enc"]).float().T)
    torch.testing.assert_close(clt.threshold[2], torch.from_numpy(weights[2]["threshold"]).float())
    x = torch.randn(5, D) * 7
    x_hat = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    h = x_hat @ clt.W_enc[0].T + clt.b_enc[0]
    torch.testing.assert_close(clt.encode(x, 0), h * (h > clt.threshold[0]))


def test_gemmascope_missing_download_names_the_rule(tmp_path):
    directory, _ = make_gemmascope_repo(tmp_path / "gs")
    next(directory.glob("hf/**/*.npz")).unlink()
    with pytest.raises(FileNotFoundError, match="download_transcoder"):
        load_transcoder(directory)


@pytest.mark.parametrize("jumprelu", [False, True])
def test_llama_skip_plts(tmp_path, jumprelu):
    directory = make_plt_repo(tmp_path / "plt", "llama", jumprelu)
    clt = load_transcoder(directory, tiny_model("llama").float(), offload_decoders=True)
    assert clt.W_skip is not None and tuple(clt.W_skip.shape) == (L, D, D)
    assert all(w.device.type == "cpu" for w in clt.W_dec)
    assert bool((clt.threshold == 0).all()) != jumprelu
    assert clt.input_norm_eps is None  # hook_resid_mid: the raw residual stream
    x = torch.randn(4, D)
    recon, _ = clt(x[None].expand(L, -1, -1))
    acts = clt.encode(x, 1)
    expected = acts @ clt.W_dec[1][:, 0] + clt.b_dec[1] + x @ clt.W_skip[1].T
    torch.testing.assert_close(recon[1], expected)


@pytest.mark.parametrize("skip", [False, True])
def test_qwen3_plts_fold_the_norm_gain_of_mlp_hook_in(tmp_path, skip):
    model = tiny_model("qwen3").float()
    directory = make_plt_repo(tmp_path / "plt", "qwen3", skip=skip)
    folded = load_transcoder(directory, model)
    assert (folded.W_skip is not None) == skip and bool((folded.threshold == 0).all())
    raw = load_file(str(directory / "layer_1.safetensors"))
    norm = model.model.layers[1].post_attention_layernorm
    x = torch.randn(4, D)
    with torch.no_grad():
        normed = norm(x)  # gain * x / rms(x): what mlp.hook_in is
        want = normed @ raw["W_enc"].float().T + raw["b_enc"].float()
        torch.testing.assert_close(folded.pre_activation(x, 1), want, rtol=1e-4, atol=1e-4)
        if skip:
            skip_out = normed @ raw["W_skip"].float().T
            torch.testing.assert_close(folded.skip(x, 1), skip_out, rtol=1e-4, atol=1e-4)


def test_mlp_hook_out_is_refused_where_a_norm_follows_the_mlp(tmp_path):
    directory = make_plt_repo(tmp_path / "plt", "llama")
    with pytest.raises(ValueError, match="mlp.hook_out.*post_feedforward_layernorm"):
        load_transcoder(directory, tiny_model("gemma2").float())


def test_mlp_hook_in_needs_the_model(tmp_path):
    with pytest.raises(ValueError, match="mlp.hook_in; pass the model"):
        load_transcoder(make_plt_repo(tmp_path / "plt", "qwen3"))


def test_relu_activation_ignores_stored_thresholds(tmp_path):
    directory = make_plt_repo(tmp_path / "plt", "qwen3", jumprelu=True, activation="relu")
    clt = load_transcoder(directory, tiny_model("qwen3").float())
    assert bool((clt.threshold == 0).all())


def test_unsupported_hooks_raise():
    assert input_mode({}) == "raw"
    assert input_mode({"feature_input_hook": "blocks.3.ln2.hook_normalized"}) == "normalized"
    assert input_mode(RELEASED_CONFIGS["qwen3"]) == "mlp_in"
    assert input_mode({"feature_output_hook": "blocks.2.mlp.hook_out"}) == "raw"
    with pytest.raises(ValueError, match="hook_resid_pre"):
        input_mode({"feature_input_hook": "hook_resid_pre"})
    with pytest.raises(ValueError, match="feature_output_hook"):
        input_mode({"feature_output_hook": "mlp.hook_post"})
    with pytest.raises(ValueError, match="activation 'topk'"):
        input_mode({"activation": "topk", "k": 64})


def test_hf_uris_parse():
    uri = f"hf://{GEMMASCOPE}/layer_0/width_16k/average_l0_76/params.npz"
    assert parse_hf_uri(uri) == (GEMMASCOPE, "layer_0/width_16k/average_l0_76/params.npz", None)
    assert parse_hf_uri("hf://a/b@v1/x.npz")[2] == "v1"
    assert parse_hf_uri("hf://a/b/x.npz?revision=v2")[2] == "v2"


def test_download_fetches_listed_files_without_network(tmp_path, monkeypatch):
    """The download rule's function: snapshot at the pinned commit, then every hf:// file of
    config.yaml."""
    import huggingface_hub

    calls = []

    def snapshot(repo, revision=None, local_dir=None, allow_patterns=None):
        calls.append(("snapshot", repo, revision, tuple(allow_patterns)))
        make_gemmascope_repo(tmp_path / "src")
        (local_dir).mkdir(parents=True, exist_ok=True)
        (local_dir / "config.yaml").write_text((tmp_path / "src" / "config.yaml").read_text())

    def hub_file(repo, filename, revision=None, local_dir=None):
        calls.append(("file", repo, revision, filename))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", hub_file)
    commit = "0123456789abcdef0123456789abcdef01234567"
    cfg = PretrainedConfig(
        family="gemma-2-2b",
        model="google/gemma-2-2b",
        transcoder="mntss/gemma-scope-transcoders",
        transcoder_revision=commit,  # pinned: no network call to resolve a branch
        cache_dir=str(tmp_path / "resources"),
    )
    pretrained.download_transcoder(cfg, pretrained.transcoder_dir(cfg))
    assert pretrained.transcoder_dir(cfg).name == "mntss--gemma-scope-transcoders"
    assert calls[0][:3] == ("snapshot", cfg.transcoder, commit) and "*.bin" not in calls[0][3]
    assert [c[1] for c in calls[1:]] == [GEMMASCOPE] * L
