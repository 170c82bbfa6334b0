"""Interventions on the real forward pass: exactness against the graph, donors, errors."""

from __future__ import annotations

import pytest
import torch

from llmbio.attribution.trace import trace
from llmbio.features.supernodes import Supernode
from llmbio.interventions import (
    Edit,
    Intervener,
    donor_activations,
    generate_with_edits,
    intervene,
    parse_edit,
)


def test_no_edits_reproduce_the_model(llama, clt, ids):
    expected = llama(input_ids=ids[None]).logits[0]
    for freeze in (False, True):
        out = Intervener(llama, clt, ids, freeze_attention=freeze).baseline
        torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-10)
    out = Intervener(llama, clt, ids).run([Edit.scale_by("1/3+2/7", 1.0)])
    torch.testing.assert_close(out.logits, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma2"])
def test_constrained_frozen_effects_equal_graph_edges(family, request, clt, ids):
    """All layers constrained + frozen attention: ablating a feature moves every later
    feature's pre-activation and the top de-meaned logit by exactly minus the edge."""
    model = request.getfixturevalue(family)
    graph = trace(model, clt, ids, show_progress=False)
    runner = Intervener(model, clt, ids, freeze_attention=True, constrained_layers=range(3))
    base = runner.baseline
    feats, k = graph.active_features, graph.n_features
    token = int(graph.logit_tokens[0])
    sources = [s for s in range(0, k, 7) if feats[s, 0] < 2][:8]
    assert sources
    for s in sources:
        layer, pos, feat = feats[s].tolist()
        out = runner.run([Edit.zero(f"{layer}/{feat}", pos)])
        later = (feats[:, 0] > layer).nonzero()[:, 0]
        tl, tp, tf = feats[later].T
        d_resid = out.resid_mid[tl, tp] - base.resid_mid[tl, tp]  # (T, D)
        d_pre = (d_resid * clt.W_enc[tl, tf]).sum(-1)
        torch.testing.assert_close(d_pre, -graph.adjacency[later, s], rtol=1e-7, atol=1e-9)
        d_logit = (out.logits[-1, token] - out.logits[-1].mean()) - (
            base.logits[-1, token] - base.logits[-1].mean()
        )
        expected = -graph.adjacency[graph.logit_index(0), s]
        torch.testing.assert_close(d_logit, expected, rtol=1e-7, atol=1e-9)


def test_unconstrained_edit_is_causal_and_reports_edited_values(llama, clt, ids):
    runner = Intervener(llama, clt, ids)
    base = runner.baseline
    layer_acts = base.activations[0, 4]
    feat = int(layer_acts.argmax())
    out = runner.run([Edit.scale_by((0, feat), -2.0, positions=4)])
    assert out.activations[0, 4, feat] == pytest.approx(-2 * float(layer_acts[feat]))
    torch.testing.assert_close(out.logits[:4], base.logits[:4], rtol=0, atol=1e-12)
    assert not torch.allclose(out.logits[4:], base.logits[4:])
    # the edit happens after layer 0 reads the stream; layer 1 sees it from position 4 on
    torch.testing.assert_close(out.resid_mid[0], base.resid_mid[0], rtol=0, atol=0)
    torch.testing.assert_close(out.resid_mid[1, :4], base.resid_mid[1, :4], rtol=0, atol=1e-12)
    assert not torch.allclose(out.resid_mid[1, 4], base.resid_mid[1, 4])


def test_donor_injection_reproduces_donor_activations(llama, clt, ids):
    donor = torch.tensor([0, 7, 7, 19, 44, 3])
    acts = Intervener(llama, clt, donor).baseline.activations[:, 3]  # (L, F) at position 3
    members = [(lay, int(f)) for lay in range(2) for f in acts[lay].nonzero()[:3, 0]]
    node = Supernode.make("donor", [f"{a}/{b}" for a, b in members])
    values = donor_activations(llama, clt, donor, node, position=3)
    expected = torch.stack([acts[a, b] for a, b in members])
    torch.testing.assert_close(values, expected)
    # into another prompt: the members take the donor's values there
    result = intervene(llama, clt, ids, [Edit.inject(node, values, 1.0, positions=5)])
    got = torch.stack([result.intervened.activations[a, 5, b] for a, b in members])
    torch.testing.assert_close(got, expected)
    # into the donor prompt itself at the donor position: nothing changes
    same = intervene(llama, clt, donor, [Edit.inject(node, values, 1.0, positions=3)])
    torch.testing.assert_close(same.intervened.logits, same.baseline.logits, rtol=0, atol=1e-10)
    double = intervene(llama, clt, donor, [Edit.inject(node, values, 2.0, positions=3)])
    assert double.activity().set_index("name").loc["donor", "percent"] == pytest.approx(200.0)


def test_bad_edits_fail_clearly(llama, clt, ids):
    with pytest.raises(ValueError, match="unknown feature id 999"):
        intervene(llama, clt, ids, [Edit.zero("1/999")])
    with pytest.raises(ValueError, match="layer 7 does not exist"):
        intervene(llama, clt, ids, [Edit.zero("7/1")])
    with pytest.raises(ValueError, match=r"position\(s\) \[8\] out of range"):
        intervene(llama, clt, ids, [Edit.zero("1/1", positions=8)])
    with pytest.raises(ValueError, match="constrained_layers"):
        intervene(llama, clt, ids, [], constrained_layers=[3])
    with pytest.raises(ValueError, match="not of the form 'layer/feature'"):
        Edit.zero("Texas")
    with pytest.raises(ValueError, match="TARGET"):
        parse_edit("2/117")
    with pytest.raises(ValueError, match="neither 'layer/feature' nor a supernode"):
        parse_edit("Texas=x2")
    with pytest.raises(ValueError, match="bad operation"):
        parse_edit("2/1=x")
    with pytest.raises(ValueError, match="has none"):
        intervene(llama, clt, ids, [parse_edit("1/2@3=dx2")])


def test_parse_edit_grammar():
    node = Supernode.make("Texas", ["2/1", "1/3"], positions=[4])
    assert parse_edit("2/117@5=x-2") == Edit("2/117", ((2, 117),), "scale", -2.0, (5,))
    assert parse_edit("2/117+0/3=5.0") == Edit("2/117+0/3", ((2, 117), (0, 3)), "set", 5.0)
    assert parse_edit("1/1@-1,2=zero").positions == (-1, 2)
    assert parse_edit("Texas=x0.5", {"Texas": node}).positions == (4,)
    assert parse_edit("Texas@*=dx3", {"Texas": node}).kind == "inject"


def test_table_and_generation(llama, clt, ids):
    acts = Intervener(llama, clt, ids).baseline.activations
    a, b = (int(f) for f in acts[0, 1:].sum(0).topk(2).indices)
    node = Supernode.make("later", [f"2/{int(acts[2, 1:].sum(0).argmax())}"])
    edit = Edit.scale_by(f"0/{a}+0/{b}", 3.0)
    result = intervene(llama, clt, ids, [edit], supernodes=[node], top_k=3, max_new_tokens=2)
    table = result.table("demo")
    assert set(table["kind"]) == {"token", "supernode", "generation"}
    assert (table["experiment"] == "demo").all() and (table["edits"] == f"0/{a}+0/{b}@*x3").all()
    tokens = table[table["kind"] == "token"]
    assert len(tokens) % 2 == 0 and tokens["probability"].between(0, 1).all()
    groups = table[table["kind"] == "supernode"].set_index(["name", "condition"])
    assert groups.loc[(edit.name, "intervened"), "percent_of_baseline"] == pytest.approx(300.0)
    assert groups.loc[("later", "baseline"), "percent_of_baseline"] == 100.0
    assert groups.loc[("later", "intervened"), "percent_of_baseline"] != pytest.approx(100.0)
    base_gen = generate_with_edits(llama, clt, ids, [], 2)
    greedy = ids
    for _ in range(2):
        nxt = llama(input_ids=greedy[None]).logits[0, -1].argmax()
        greedy = torch.cat([greedy, nxt[None]])
    assert base_gen == greedy[len(ids) :].tolist()
    assert result.generated["baseline"] == " ".join(map(str, base_gen))


def test_frozen_final_norm_divides_by_the_clean_denominator(llama, clt, ids):
    """With ``freeze_final_norm`` the logits are the unembedding of the edited final residual
    over the clean pass's RMS; the live pass rescales them by the edited RMS instead."""
    final: list[torch.Tensor] = []
    hook = llama.model.norm.register_forward_pre_hook(lambda _m, args: final.append(args[0][0]))
    try:
        runner = Intervener(llama, clt, ids, freeze_final_norm=True)
        final.clear()  # the runner's clean recording passed through the hook too
        clean = runner.baseline
        edit = [Edit.scale_by((0, int(clean.activations[0, 3].argmax())), -3.0, positions=3)]
        frozen = runner.run(edit)
        live = Intervener(llama, clt, ids).run(edit)
    finally:
        hook.remove()
    x_clean, x_edit = final[0], final[1]
    eps = llama.config.rms_norm_eps
    clean_scale = torch.rsqrt(x_clean.pow(2).mean(-1, keepdim=True) + eps)
    expected = llama.lm_head(llama.model.norm.weight * (x_edit * clean_scale))
    torch.testing.assert_close(frozen.logits, expected, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(clean.logits, llama(input_ids=ids[None]).logits[0])
    # before the edit the two agree (to the float32 the Hugging Face RMSNorm computes in)
    torch.testing.assert_close(frozen.logits[:3], live.logits[:3], rtol=0, atol=1e-7)
    assert (frozen.logits[3:] - live.logits[3:]).abs().max() > 1e-3
    # only the final norm is frozen: the residual stream is the live one
    torch.testing.assert_close(frozen.resid_mid, live.resid_mid, rtol=0, atol=1e-7)
