"""Attribution graphs are exact: completeness, and edges equal perturbations of the frozen model."""

from __future__ import annotations

import pytest
import torch
from tiny_models import FAMILIES, random_clt, tiny_model

from llmbio.attribution import budget
from llmbio.attribution.replacement import build_replacement, frozen, output_layers
from llmbio.attribution.trace import prepare_prompt, select_logits, trace
from llmbio.tokenizer import build_tokenizer

IDS = torch.tensor([0, 5, 17, 33, 2, 60, 9, 41])


def _frozen_values(model, clt, rep, graph, embed, mlp_out):
    """Every target's value (feature pre-activations without b_enc, de-meaned logits)."""
    with torch.no_grad(), frozen(model, rep.recording) as fm:
        out = fm(embed[None], [x[None] for x in mlp_out])
    feats = graph.active_features
    resid = torch.stack(out.resid_mid)[feats[:, 0], 0, feats[:, 1]]  # (K, D)
    w = clt.W_enc.detach()[feats[:, 0], feats[:, 2]]
    unembed = model.get_output_embeddings().weight.detach()
    dirs = unembed[graph.logit_tokens] - unembed.mean(0)
    return torch.cat([(w * resid).sum(-1), dirs @ out.final_normed[0, -1]])


def _target_rows(graph):
    rows = torch.arange(graph.n_features).tolist()
    return torch.tensor(rows + [graph.logit_index(i) for i in range(graph.n_logits)])


def _constant_inputs(clt, rep):
    """Node inputs zeroed: no embeddings, MLP outputs = b_dec, except the whole BOS output."""
    rec = rep.recording
    mlp = clt.b_dec.detach()[:, None, :].expand(-1, rec.n_pos, -1).clone()
    mlp[:, 0] = rec.mlp_out[:, 0]
    return torch.zeros_like(rec.embed), mlp


@pytest.mark.parametrize("family", FAMILIES)
def test_completeness(family):
    model, clt = tiny_model(family), random_clt()
    graph = trace(model, clt, IDS, show_progress=False)
    rep = build_replacement(model, clt, IDS)
    assert graph.n_features == len(rep.active_features) > 30
    values = _frozen_values(model, clt, rep, graph, rep.recording.embed, rep.mlp_out())
    consts = _frozen_values(model, clt, rep, graph, *_constant_inputs(clt, rep))
    sums = graph.adjacency[_target_rows(graph)].sum(1)
    torch.testing.assert_close(sums, values - consts, rtol=1e-4, atol=1e-4 * values.abs().max())


def _remove(rep, clt, graph, source: int):
    """Frozen-model inputs with node ``source`` removed."""
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


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_edges_match_perturbations(family):
    model, clt = tiny_model(family), random_clt()
    graph = trace(model, clt, IDS, show_progress=False, batch_size=7)
    rep = build_replacement(model, clt, IDS)
    base = _frozen_values(model, clt, rep, graph, rep.recording.embed, rep.mlp_out())
    rows = _target_rows(graph)
    K, L, n = graph.n_features, graph.n_layers, graph.n_pos
    gen = torch.Generator().manual_seed(0)
    sources = [
        *torch.randint(0, K, (4,), generator=gen).tolist(),
        K + 1 * n + 3,
        K + 0 * n + 6,
        K + L * n + 2,
        K + L * n + 7,
    ]
    for s in sources:
        changed = _frozen_values(model, clt, rep, graph, *_remove(rep, clt, graph, s))
        expected = base - changed
        torch.testing.assert_close(
            graph.adjacency[rows, s], expected, rtol=1e-6, atol=1e-8 * base.abs().max()
        )


def test_graph_structure_and_bos():
    model, clt = tiny_model("llama"), random_clt()
    graph = trace(model, clt, IDS, show_progress=False)
    K, L, n = graph.n_features, graph.n_layers, graph.n_pos
    assert graph.adjacency.shape == (graph.n_nodes, graph.n_nodes)
    assert graph.adjacency.dtype == torch.float64
    assert (graph.active_features[:, 1] >= 1).all()
    assert (graph.adjacency[K : K + (L + 1) * n] == 0).all()  # errors and tokens have no inputs
    bos_errors = [graph.error_index(layer, 0) for layer in range(L)]
    assert (graph.adjacency[:, bos_errors] == 0).all()
    # a feature never reads features of its own or later layers, nor later positions
    f = graph.active_features
    later = (f[None, :, 0] >= f[:, None, 0]) | (f[None, :, 1] > f[:, None, 1])
    assert (graph.adjacency[:K, :K][later] == 0).all()
    assert graph.adjacency[:K, :K].abs().sum() > 0
    assert graph.logit_probabilities.sum() <= 1 and graph.n_logits <= 10


def test_per_layer_transcoder_and_batch_size_invariance():
    model, plt = tiny_model("qwen3"), random_clt(cross_layer=False)
    a = trace(model, plt, IDS, show_progress=False)
    b = trace(model, plt, IDS, show_progress=False, batch_size=5)
    torch.testing.assert_close(a.adjacency, b.adjacency)
    rep = build_replacement(model, plt, IDS)
    values = _frozen_values(model, plt, rep, a, rep.recording.embed, rep.mlp_out())
    consts = _frozen_values(model, plt, rep, a, *_constant_inputs(plt, rep))
    torch.testing.assert_close(a.adjacency[_target_rows(a)].sum(1), values - consts)


@pytest.mark.parametrize("cache_bytes", [0, 2**30])  # rows recomputed / kept from ranking
def test_feature_budget_keeps_exact_rows_of_influential_features(cache_bytes, monkeypatch):
    monkeypatch.setattr(budget, "ROW_CACHE_BYTES", cache_bytes)
    model, clt = tiny_model("gemma2"), random_clt()
    full = trace(model, clt, IDS, show_progress=False)
    small = trace(model, clt, IDS, show_progress=False, max_feature_nodes=25, batch_size=4)
    assert small.n_features == 25
    keys = {tuple(r) for r in full.active_features.tolist()}
    idx = torch.tensor(
        [full.active_features.tolist().index(r) for r in small.active_features.tolist()]
    )
    assert {tuple(r) for r in small.active_features.tolist()} <= keys
    K = full.n_features
    cols = torch.cat([idx, torch.arange(K, full.n_nodes)])
    rows = torch.cat([idx, torch.arange(full.n_nodes - full.n_logits, full.n_nodes)])
    torch.testing.assert_close(small.adjacency[_target_rows(small)], full.adjacency[rows][:, cols])
    # the chosen features carry more direct logit effect than the average one
    direct = full.adjacency[-full.n_logits :, :K].abs().sum(0)
    assert direct[idx].mean() > direct.mean()


def test_budget_row_cache_holds_the_recomputed_rows(monkeypatch):
    """The ranked rows kept over only the columns each layer reads (the memory-bounded path)
    give the same adjacency as rows recomputed over the chosen columns."""
    model, clt = tiny_model("llama"), random_clt()
    graphs = []
    for cache_bytes in (0, 2**30):
        monkeypatch.setattr(budget, "ROW_CACHE_BYTES", cache_bytes)
        graphs.append(trace(model, clt, IDS, show_progress=False, max_feature_nodes=30))
    recomputed, cached = graphs
    assert len(cached.active_features[:, 0].unique()) == clt.n_layers  # every layer's width
    assert torch.equal(recomputed.active_features, cached.active_features)
    # the same numbers, summed in other batches: equal to float64 rounding
    torch.testing.assert_close(recomputed.adjacency, cached.adjacency, rtol=1e-10, atol=1e-12)
    assert cached.adjacency[: cached.n_features, : cached.n_features].abs().sum() > 0


def test_text_prompt_logit_selection_and_targets():
    tok = build_tokenizer(["the cat sat on the mat", "a dog ran"], max_number=5)
    ids, text, tokens = prepare_prompt("the cat sat on", tok)
    assert ids[0] == tok.bos_token_id and tokens[1] == "the" and text == "the cat sat on"
    logits = torch.tensor([4.0, 3.0, 1.0, 0.0, -5.0])
    top, probs = select_logits(logits, max_logits=10, logit_probability=0.7)
    assert top.tolist() == [0, 1] and probs.sum() > 0.7
    assert select_logits(logits, max_logits=1)[0].tolist() == [0]
    model, clt = tiny_model("llama"), random_clt()
    graph = trace(
        model, clt, "the cat sat on", tokenizer=tok, target_tokens=["mat", 3], show_progress=False
    )
    assert graph.logit_tokens.tolist() == [tok.convert_tokens_to_ids("mat"), 3]
    assert graph.tokens == tokens


def test_bad_inputs_raise():
    model, clt = tiny_model("llama"), random_clt()
    with pytest.raises(ValueError, match="tokenizer"):
        trace(model, clt, "text without tokenizer", show_progress=False)
    with pytest.raises(ValueError, match="target_tokens"):
        trace(model, clt, IDS, target_tokens=[99], show_progress=False)
    with pytest.raises(ValueError, match="n_layers="):
        trace(model, random_clt(n_layers=2), IDS, show_progress=False)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        trace(model, clt, [0], show_progress=False)
    with pytest.raises(ValueError, match="max_feature_nodes"):
        trace(model, clt, IDS, max_feature_nodes=-1, show_progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        trace(model, clt, IDS, batch_size=-2, show_progress=False)


def test_no_feature_nodes():
    model, clt = tiny_model("llama"), random_clt()
    assert trace(model, clt, IDS, max_feature_nodes=0, show_progress=False).n_features == 0
    with torch.no_grad():
        clt.threshold.fill_(1e3)
    graph = trace(model, clt, IDS, show_progress=False)
    assert graph.n_features == 0 and graph.adjacency[-1].abs().sum() > 0
