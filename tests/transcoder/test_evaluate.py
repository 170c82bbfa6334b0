"""Transcoder evaluation table, splicing into the model, and the figure."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from llmbio.activations import ActivationReader, cache_activations
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.evaluate import COLUMNS, evaluate_transcoder, plot_transcoder_eval
from llmbio.transcoder.splice import splice_transcoder

torch.set_num_threads(1)
L, D, F = 3, 32, 16


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=D,
        intermediate_size=64,
        num_hidden_layers=L,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def ids() -> torch.Tensor:
    return torch.randint(0, 64, (6, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def reader(model, ids, tmp_path_factory) -> ActivationReader:
    out = tmp_path_factory.mktemp("eval") / "cache"
    return ActivationReader(
        cache_activations(model, [ids], out, dtype="float32", eval_fraction=0.5)
    )


def random_clt(seed: int = 0) -> CrossLayerTranscoder:
    torch.manual_seed(seed)
    clt = CrossLayerTranscoder(L, D, F)
    with torch.no_grad():
        for p in clt.parameters():
            p.normal_(std=0.1)
        clt.threshold.fill_(0.05)
    return clt


def constant_clt(value: torch.Tensor) -> CrossLayerTranscoder:
    """A transcoder whose reconstruction of every layer is the constant ``value`` ``(L, D)``."""
    clt = CrossLayerTranscoder(L, D, F)
    with torch.no_grad():
        clt.b_dec.copy_(value)
    return clt


def test_reconstruction_metrics_match_a_direct_computation(reader):
    clt = random_clt()
    df = evaluate_transcoder(clt, reader, name="random")
    assert list(df.columns) == COLUMNS and set(df.scope) == {"layer", "all"}
    x, y = next(reader.iter_batches(10_000, shuffle=False, split="eval"))
    recon, acts = clt(x.transpose(0, 1))
    y = y.transpose(0, 1)
    nmse = (recon - y).pow(2).sum((1, 2)) / (y - y.mean(1, keepdim=True)).pow(2).sum((1, 2))
    got = df[(df.scope == "layer") & (df.metric == "nmse")].sort_values("layer")["value"]
    torch.testing.assert_close(torch.tensor(got.to_numpy(), dtype=torch.float32), nmse)
    l0 = df[(df.scope == "all") & (df.metric == "l0")]["value"].item()
    assert l0 == pytest.approx((acts > 0).sum().item() / x.shape[0], rel=1e-6)
    dead = df[(df.scope == "all") & (df.metric == "dead_fraction")]["value"].item()
    assert dead == pytest.approx((~(acts > 0).any(1)).float().mean().item())


def test_splice_replaces_mlp_outputs_except_the_first_position(model, ids):
    value = torch.randn(L, D)
    with torch.no_grad():
        original = model(ids).logits
        with splice_transcoder(model, constant_clt(value)):
            spliced = model(ids).logits
        handles = [
            layer.mlp.register_forward_hook(
                lambda _m, _a, out, v=value[i]: torch.cat(
                    [out[:, :1], v.expand_as(out[:, 1:])], dim=1
                )
            )
            for i, layer in enumerate(model.model.layers)
        ]
        expected = model(ids).logits
        for h in handles:
            h.remove()
        torch.testing.assert_close(spliced, expected)
        torch.testing.assert_close(spliced[:, 0], original[:, 0])
        torch.testing.assert_close(model(ids).logits, original)  # hooks are gone


def test_spliced_model_metrics(model, ids, reader):
    ablated = constant_clt(torch.zeros(L, D))
    df = evaluate_transcoder(ablated, reader, model, [ids[:3], ids[3:]], name="ablated")
    m = df[df.scope == "model"].set_index("metric")["value"]
    assert m["ce_loss_increase"] == pytest.approx(m["ce_loss_spliced"] - m["ce_loss"])
    assert m["kl"] > 0 and 0 <= m["top1_agreement"] < 1
    assert m["ce_loss_ablated"] == pytest.approx(m["ce_loss_spliced"])  # zero reconstruction
    assert m["ce_recovered"] == pytest.approx(0, abs=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_evaluation_on_the_gpu_matches_the_cpu(model, ids, reader):
    # the evaluate rule runs on train.transcoder_device: a CUDA transcoder and model read the
    # CPU cache and give the CPU's table up to float noise
    clt = random_clt()
    on_cpu = evaluate_transcoder(clt, reader, model, [ids[:3], ids[3:]], name="t")
    on_gpu = evaluate_transcoder(
        clt.to("cuda"), reader, model.to("cuda"), [ids[:3], ids[3:]], name="t"
    )
    model.to("cpu")
    clt.to("cpu")
    pd.testing.assert_frame_equal(on_gpu.drop(columns="value"), on_cpu.drop(columns="value"))
    # the ratios and differences of nearly equal losses (ce_recovered, ce_loss_increase: this
    # random model's MLPs barely move its loss) amplify float noise; the counts may flip a
    # near-tie (one token of the 54 is 0.019)
    gpu, cpu = (t.set_index(["scope", "layer", "metric"])["value"] for t in (on_gpu, on_cpu))
    derived = gpu.index.get_level_values("metric").isin(["ce_recovered", "ce_loss_increase"])
    counts = gpu.index.get_level_values("metric").isin(["l0", "dead_fraction", "top1_agreement"])
    plain = ~derived & ~counts
    torch.testing.assert_close(
        torch.tensor(gpu[plain].values), torch.tensor(cpu[plain].values), rtol=1e-3, atol=1e-5
    )
    torch.testing.assert_close(
        torch.tensor(gpu[counts].values), torch.tensor(cpu[counts].values), rtol=0, atol=0.04
    )


def test_bad_inputs_raise(model, reader):
    with pytest.raises(ValueError, match="d_model=8"):
        evaluate_transcoder(CrossLayerTranscoder(L, 8, F), reader)
    with pytest.raises(ValueError, match="both model and eval_sequences"):
        evaluate_transcoder(random_clt(), reader, model=model)


def test_plot_draws_several_transcoders(model, ids, reader, tmp_path):
    df = pd.concat(
        [
            evaluate_transcoder(random_clt(0), reader, model, ids, name="a"),
            evaluate_transcoder(random_clt(1), reader, name="b"),
        ]
    )
    df.to_parquet(tmp_path / "eval.parquet")
    path = plot_transcoder_eval(pd.read_parquet(tmp_path / "eval.parquet"), tmp_path / "fig.png")
    assert path.stat().st_size > 10_000
    with pytest.raises(ValueError, match="missing columns"):
        plot_transcoder_eval(df.drop(columns="metric"), tmp_path / "x.png")
