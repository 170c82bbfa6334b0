"""Released transcoder kinds stay exact: skip paths (Llama/Qwen PLTs), normalised inputs
(GemmaScope).

Edges must still equal perturbations of the frozen replacement model, which keeps the skip path
live and the encoder's norm factor frozen; the replacement must reproduce the model's logits;
interventions without edits must reproduce them in every mode.
"""

from __future__ import annotations

import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.attribution.replacement import build_replacement, frozen, output_layers
from llmbio.attribution.trace import trace
from llmbio.interventions import Edit, Intervener
from llmbio.transcoder.clt import CrossLayerTranscoder

IDS = torch.tensor([0, 5, 17, 33, 2, 60, 9, 41])


def released_transcoder(cross_layer: bool, skip: bool, normalised: bool) -> CrossLayerTranscoder:
    base = random_clt(cross_layer=cross_layer)
    clt = CrossLayerTranscoder(
        3, 32, 40, cross_layer, skip=skip, input_norm_eps=1e-6 if normalised else None
    ).double()
    state = base.state_dict()
    if skip:
        torch.manual_seed(1)
        state["W_skip"] = torch.randn(3, 32, 32, dtype=torch.float64) * 0.1
    clt.load_state_dict(state)
    if normalised:  # inputs of norm ~1 per coordinate: rescale so that some features fire
        with torch.no_grad():
            clt.W_enc.mul_(3.0)
    return clt


@torch.no_grad()
def _values(model, clt, rep, graph, embed, mlp_out):
    with frozen(model, rep.recording) as fm:
        fm.use_skip(rep.skip_fn(clt))
        out = fm(embed[None], [x[None] for x in mlp_out])
    feats = graph.active_features
    resid = torch.stack(out.resid_mid)[feats[:, 0], 0, feats[:, 1]]
    w = torch.cat([rep.encoder_vectors(clt, int(f[0]), f[None]) for f in feats])
    unembed = model.get_output_embeddings().weight.detach()
    dirs = unembed[graph.logit_tokens] - unembed.mean(0)
    return torch.cat([(w * resid).sum(-1), dirs @ out.final_normed[0, -1]]), out.logits[0]


@torch.no_grad()
def _remove(rep, clt, graph, source: int):
    embed, mlp = rep.recording.embed.clone(), rep.mlp_out().clone()
    K, L, n = graph.n_features, graph.n_layers, graph.n_pos
    if source < K:
        layer, pos, fid = graph.active_features[source].tolist()
        act = graph.activation_values[source].double()
        for t in output_layers(clt, layer):
            mlp[t, pos] -= act * clt.decoder_to(layer, t).detach()[fid]
    elif source < K + L * n:
        layer, pos = divmod(source - K, n)
        mlp[layer, pos] -= rep.error[layer, pos]
    else:
        embed[source - K - L * n] = 0
    return embed, mlp


@pytest.mark.parametrize(
    "family, cross_layer, skip, normalised",
    [("llama", False, True, False), ("gemma2", False, False, True), ("qwen3", True, True, True)],
)
def test_edges_match_perturbations(family, cross_layer, skip, normalised):
    model = tiny_model(family)
    clt = released_transcoder(cross_layer, skip, normalised)
    graph = trace(model, clt, IDS, show_progress=False, batch_size=7)
    rep = build_replacement(model, clt, IDS)
    assert graph.n_features > 10
    base, logits = _values(model, clt, rep, graph, rep.recording.embed, rep.mlp_out())
    # the random normalised skip path amplifies float64 noise ~20x per layer: 1e-9 -> 1e-5
    torch.testing.assert_close(logits, rep.recording.logits, rtol=1e-4, atol=1e-4)
    rows = torch.tensor(list(range(graph.n_features)) + [graph.logit_index(0)])
    base = base[: graph.n_features + 1]
    K, L, n = graph.n_features, graph.n_layers, graph.n_pos
    for s in [0, K // 2, K - 1, K + 1 * n + 3, K + L * n + 2, K + L * n + 7]:
        changed = _values(model, clt, rep, graph, *_remove(rep, clt, graph, s))[0]
        expected = base - changed[: K + 1]
        torch.testing.assert_close(
            graph.adjacency[rows, s], expected, rtol=1e-6, atol=1e-8 * float(base.abs().max())
        )


@pytest.mark.parametrize("skip, normalised", [(True, False), (True, True)])
def test_interventions_without_edits_reproduce_the_model(skip, normalised):
    model, clt = tiny_model("llama"), released_transcoder(False, skip, normalised)
    with torch.no_grad():
        real = model(input_ids=IDS[None]).logits[0]
    for kwargs in ({}, {"constrained_layers": range(3)}, {"freeze_attention": True}):
        runner = Intervener(model, clt, IDS, **kwargs)
        tol = 1e-4 if normalised else 1e-8  # see test_edges_match_perturbations
        torch.testing.assert_close(runner.baseline.logits, real, rtol=tol, atol=tol)
    # with every layer constrained, an edit's effect is the local replacement model's (linear)
    acts = Intervener(model, clt, IDS).baseline.activations
    layer, pos, feat = (acts[:, 1:] > 0).nonzero()[0].tolist()
    runner = Intervener(model, clt, IDS, constrained_layers=range(3), freeze_attention=True)
    edited = runner.run([Edit.scale_by(f"{layer}/{feat}", 0.0, (pos + 1,))]).logits
    assert not torch.allclose(edited, real)
