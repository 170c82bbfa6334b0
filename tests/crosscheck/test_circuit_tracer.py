"""Attribution graphs and feature interventions against circuit-tracer, the reference
implementation of the Circuit Tracing method, on one model folder both read.

The folder holds a tiny random float64 Llama with a word tokenizer (``model/``) and a CLT and a
PLT in circuit-tracer's layout (``clt/``, ``plt/``); circuit-tracer opens it with its nnsight
backend, offline. circuit-tracer 0.5.0 needs transformers < 5, so these tests run in their own
environment (``tests/crosscheck/run.sh``) and skip elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from llmbio.attribution.trace import trace
from llmbio.interventions.edits import Edit
from llmbio.interventions.engine import Intervener
from llmbio.tokenizer import build_tokenizer
from llmbio.transcoder.clt import CrossLayerTranscoder
from llmbio.transcoder.io import load_transcoder, save_transcoder

SKIP = "circuit-tracer runs in its own environment: tests/crosscheck/run.sh"
ct = pytest.importorskip("circuit_tracer", reason=SKIP)
ct_clt = pytest.importorskip("circuit_tracer.transcoder.cross_layer_transcoder", reason=SKIP)
ct_plt = pytest.importorskip("circuit_tracer.transcoder.single_layer_transcoder", reason=SKIP)

pytestmark = pytest.mark.crosscheck

PROMPTS = [
    "the capital of the state containing Dallas is",
    "Dallas is in Texas .",
    "3 + 4 =",
]
N_LAYERS, D_MODEL, N_FEATURES = 3, 32, 40
CPU = torch.device("cpu")
# circuit-tracer returns the adjacency in float32: entries match to float32 rounding of the
# largest one, far below any change in how an edge is computed
GRAPH_TOL = 1e-6
LOGIT_TOL = 1e-6


def _random_transcoder(cross_layer: bool) -> CrossLayerTranscoder:
    torch.manual_seed(1)
    tc = CrossLayerTranscoder(N_LAYERS, D_MODEL, N_FEATURES, cross_layer=cross_layer).double()
    with torch.no_grad():
        for p in tc.parameters():
            p.normal_(0, 0.3)
        tc.threshold.uniform_(0.0, 0.3)
    return tc


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """``model/`` (float64 Llama, randomised norms, word tokenizer), ``clt/`` and ``plt/``."""
    root = tmp_path_factory.mktemp("crosscheck")
    tok = build_tokenizer(PROMPTS, max_number=9)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=D_MODEL, intermediate_size=64,
        num_hidden_layers=N_LAYERS, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
        initializer_range=0.1, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(1.0, 0.3)
    model.double().save_pretrained(root / "model")
    tok.save_pretrained(root / "model")
    save_transcoder(_random_transcoder(cross_layer=True), root / "clt")
    save_transcoder(_random_transcoder(cross_layer=False), root / "plt")
    return root


def _theirs(folder: Path, kind: str):
    """circuit-tracer's replacement model of ``folder`` with transcoder ``kind``."""
    hooks = {"feature_input_hook": "hook_resid_mid", "feature_output_hook": "hook_mlp_out"}
    if kind == "clt":
        tc = ct_clt.load_clt(
            str(folder / "clt"), **hooks, device=CPU, dtype=torch.float64, lazy_decoder=False
        )
    else:
        paths = {i: str(folder / "plt" / f"layer_{i}.safetensors") for i in range(N_LAYERS)}
        tc = ct_plt.load_transcoder_set(
            paths, scan="plt", **hooks, device=CPU, dtype=torch.float64,
            lazy_encoder=False, lazy_decoder=False,
        )  # fmt: skip
    return ct.ReplacementModel.from_pretrained_and_transcoders(
        str(folder / "model"), tc, backend="nnsight", device=CPU, dtype=torch.float64
    )


@pytest.fixture(scope="module", params=["clt", "plt"])
def models(request, folder):
    """``(kind, our model, our transcoder, tokenizer, circuit-tracer's replacement model)``."""
    kind = request.param
    ours = AutoModelForCausalLM.from_pretrained(
        folder / "model", dtype=torch.float64, use_safetensors=True
    ).eval()
    tc = load_transcoder(folder / kind).double()
    theirs = _theirs(folder, kind)
    return kind, ours, tc, theirs.tokenizer, theirs


def _assert_graphs_equal(ours, theirs) -> None:
    assert torch.equal(ours.input_ids, theirs.input_tokens.cpu())
    assert torch.equal(ours.active_features, theirs.active_features[theirs.selected_features])
    torch.testing.assert_close(
        ours.activation_values.double(), theirs.activation_values.double(), rtol=1e-6, atol=1e-6
    )
    assert ours.logit_tokens.tolist() == [t.vocab_idx for t in theirs.logit_targets]
    torch.testing.assert_close(
        ours.logit_probabilities.double(), theirs.logit_probabilities.double(),
        rtol=1e-6, atol=1e-9,
    )  # fmt: skip
    a, b = ours.adjacency.double(), theirs.adjacency_matrix.double()
    assert a.shape == b.shape
    scale = b.abs().max().item()
    diff = (a - b).abs()
    worst = diff.max().item()
    target, source = divmod(int(diff.argmax()), diff.shape[1])
    assert worst <= GRAPH_TOL * scale, (
        f"edge {source} -> {target} differs by {worst:.3g} (largest edge {scale:.3g})"
    )


@pytest.mark.parametrize("prompt", PROMPTS)
def test_trace_equals_attribute(models, prompt):
    """Every edge, active feature, activation and logit node of the full graph."""
    _, model, tc, tok, theirs = models
    ids = torch.tensor(tok(prompt)["input_ids"])
    ours = trace(model, tc, ids, show_progress=False)
    expected = ct.attribute(ids, theirs, batch_size=64)
    assert ours.n_features > 20 and (ours.adjacency != 0).sum() > 1000  # a graph worth checking
    _assert_graphs_equal(ours, expected)


def _edits(intervener: Intervener, layers: range) -> list[tuple[int, int, int, float]]:
    """``(layer, position, feature, value)``: per layer of ``layers``, the strongest active
    feature outside BOS tripled, the second zeroed, and an inactive one switched on."""
    acts = intervener.baseline.activations  # (L, n, F)
    out = []
    for layer in layers:
        a = acts[layer, 1:]
        order = a.flatten().argsort(descending=True)
        (p0, f0), (p1, f1) = (divmod(int(i), a.shape[1]) for i in order[:2])
        off = (a == 0).nonzero()[layer]
        out += [
            (layer, p0 + 1, f0, 3.0 * float(a[p0, f0])),
            (layer, p1 + 1, f1, 0.0),
            (layer, int(off[0]) + 1, int(off[1]), 0.5),
        ]
    return out


def _compare_intervention(models, prompt, ours_kw: dict, theirs_kw: dict, layers: range):
    _, model, tc, tok, theirs = models
    ids = torch.tensor(tok(prompt)["input_ids"])
    intervener = Intervener(model, tc, ids, **ours_kw)
    edits = _edits(intervener, layers)
    got = intervener.run([Edit.set_to([lay, f], v, positions=[p]) for lay, p, f, v in edits])
    logits, acts = theirs.feature_intervention(prompt, edits, **theirs_kw)
    effect = (got.logits - intervener.baseline.logits).abs().max().item()
    assert effect > 0.05, "the edits barely move the logits; the comparison would be vacuous"
    torch.testing.assert_close(got.logits, logits[0].double(), rtol=LOGIT_TOL, atol=LOGIT_TOL)
    # circuit-tracer records the live activations (BOS zeroed, edited entries before the edit)
    keep = torch.ones_like(acts, dtype=torch.bool)
    keep[:, 0] = False
    for layer, p, f, _ in edits:
        keep[layer, p, f] = False
    torch.testing.assert_close(got.activations[keep], acts[keep].double(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("ours_kw", "theirs_kw"),
    [
        ({}, {"freeze_attention": False}),
        ({"freeze_attention": True}, {"freeze_attention": True}),
        (
            {"freeze_attention": True, "constrained_layers": range(N_LAYERS)},
            {"constrained_layers": range(N_LAYERS)},
        ),
    ],
    ids=["live", "frozen-attention", "all-layers-constrained"],
)
def test_intervention_equals_feature_intervention(models, ours_kw, theirs_kw):
    _compare_intervention(models, PROMPTS[0], ours_kw, theirs_kw, range(N_LAYERS))


def test_partially_constrained_intervention_equals_feature_intervention(models):
    """Constrained over part of the layers, a CLT edit's decoder writes reach only the MLP
    outputs inside the range, as circuit-tracer's feature_intervention does."""
    kw = {"constrained_layers": range(2)}
    _compare_intervention(models, PROMPTS[0], {"freeze_attention": True, **kw}, kw, range(2))
