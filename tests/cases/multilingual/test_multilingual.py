"""Pure helpers of the multilingual study (llmbio.cases.multilingual.prompts*, language_overlap)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.cases.multilingual.overlap import iou, overlap_summary
from llmbio.cases.multilingual.prompts import (
    PromptRun,
    batch_activations,
    concept_order,
    position_map,
    token_roles,
    top_features,
)
from llmbio.cases.multilingual.swaps import (
    SwapCase,
    SwapRunner,
    pair_union,
    partner,
    patch_entries,
    patched_values,
    site_map,
)
from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import logit_differences, run_batch, run_compiled
from llmbio.interventions.edits import compile_edits
from llmbio.world.lexicon import Lexicon

# BOS The opposite of " W " is "  /  BOS " W " 的 反 义 词 是 "
EN = dict(n=9, concept=5)
ZH = dict(n=10, concept=2)


def patch_edits(features, recipient, donor, name: str, site: str = "every") -> list[Edit]:
    """The swap as plain ``Edit`` objects, one injection per patched position: the reference
    that :func:`patch_entries` must compile to exactly."""
    if not features:
        return []
    node = Supernode.make(name, features)
    layers = torch.tensor([la for la, _ in features])
    ids = torch.tensor([f for _, f in features])
    return [
        Edit.inject(node, donor.acts[:, list(qs)].mean(1)[layers, ids], 1.0, positions=(p,))
        for p, qs in site_map(recipient, donor, site)
    ]


def _run(n: int, concept: int, fill: float = 0.0) -> PromptRun:
    acts = torch.arange(2 * n * 3, dtype=torch.float).reshape(2, n, 3) + fill  # (L, n, F)
    return PromptRun(tuple(range(n)), acts, "", concept)


def test_token_roles():
    assert token_roles(EN["n"], EN["concept"]) == [
        "bos", "template0", "template1", "template2", "before_concept", "concept",
        "after_concept", "before_last", "last",
    ]  # fmt: skip
    assert token_roles(ZH["n"], ZH["concept"]) == [
        "bos", "before_concept", "concept", "after_concept", "template0", "template1",
        "template2", "template3", "before_last", "last",
    ]  # fmt: skip


def test_position_map_same_template_is_identity():
    pairs = position_map(_run(**EN), _run(**EN))
    assert pairs == [(p, (p,)) for p in range(1, EN["n"])]


def test_position_map_across_templates_matches_roles():
    pairs = dict(position_map(_run(**EN), _run(**ZH)))
    assert pairs[5] == (2,)  # concept
    assert pairs[4] == (1,)  # quote before the concept
    assert pairs[8] == (9,) and pairs[7] == (8,)  # last, before last
    # 3 template words against 4: each maps to all of the donor's
    assert pairs[1] == pairs[2] == pairs[3] == (4, 5, 6, 7)
    assert 0 not in pairs


def test_patch_entries_set_the_donor_value_at_the_mapped_position():
    rec, don = _run(**EN), _run(**EN, fill=100.0)
    entries = patch_entries([(1, 2), (0, 0)], rec, don)
    assert sorted(entries) == [0, 1]
    e = entries[1]  # member (1, 2) at every position but BOS, set to the donor's value
    assert e.positions.tolist() == list(range(1, EN["n"])) and set(e.features.tolist()) == {2}
    assert torch.equal(e.scale, torch.zeros(EN["n"] - 1, dtype=torch.float64))
    assert torch.equal(e.offset, don.acts[1, 1:, 2].double())
    assert patch_entries([], rec, don) == {}


def test_last_site_patches_only_the_last_position():
    rec, don = _run(**EN), _run(**ZH, fill=100.0)
    entries = patch_entries([(1, 2)], rec, don, site="last")
    assert entries[1].positions.tolist() == [EN["n"] - 1]
    assert entries[1].offset.tolist() == [float(don.acts[1, ZH["n"] - 1, 2])]
    values = patched_values(rec, don, site="last")
    assert torch.equal(values[:, :-1], rec.acts[:, :-1])
    assert torch.equal(values[:, -1], don.acts[:, -1])
    with pytest.raises(ValueError, match="unknown swap site 'first'"):
        site_map(rec, don, "first")


def test_top_features_keeps_positive_scores_best_first():
    score = torch.tensor([0.0, 3.0, -1.0, 1.0, 2.0, 0.0])  # 2 layers x 3 features
    assert top_features(score, 4, n_features=3) == [(0, 1), (1, 1), (1, 0)]


def test_concept_order_is_world_order_after_json():
    lex = Lexicon.build(6)
    alphabetical = Lexicon.from_json({k: dict(sorted(v.items())) for k, v in lex.to_json().items()})
    assert concept_order(alphabetical) == ["small", "big", "hot", "cold", "fast", "slow"]
    assert partner(concept_order(alphabetical), "small") == "hot"


def test_partner_is_two_places_on():
    assert partner(["a", "b", "c", "d"], "a") == "c"
    assert partner(["a", "b", "c", "d"], "d") == "b"


def test_iou():
    a = torch.tensor([[True, True, False], [False, False, False]])
    b = torch.tensor([[True, False, True], [False, False, False]])
    out = iou(a, b)
    assert math.isclose(float(out[0]), 1 / 3)
    assert math.isnan(float(out[1]))


def _by_layer(parallel: list[float], unrelated: list[float]) -> pd.DataFrame:
    rows = [
        {"pair": "en-fr", "kind": kind, "layer": la, "mean": v}
        for kind, values in (("parallel", parallel), ("unrelated", unrelated))
        for la, v in enumerate(values)
    ]
    return pd.DataFrame(rows)


def test_overlap_summary_peak_in_the_middle():
    out = overlap_summary(_by_layer([0.1, 0.4, 0.3, 0.2], [0.1, 0.2, 0.2, 0.2]), 4)
    pooled = out.set_index("pair").loc["all"]
    assert math.isclose(pooled["middle_minus_edges"], 0.35 - 0.2)
    assert math.isclose(pooled["excess_middle"], 0.35 - 0.2)
    assert pooled["peak_layer"] == 1
    flat = overlap_summary(_by_layer([0.5, 0.4, 0.3, 0.2], [0.1] * 4), 4)
    assert flat.set_index("pair").loc["all", "middle_minus_edges"] < 0


def test_overlap_summary_without_middle_layers_is_nan():
    out = overlap_summary(_by_layer([0.1, 0.2], [0.1, 0.1]), 2)
    assert out["middle_minus_edges"].isna().all()
    assert out["excess_middle"].isna().all()


class _IdTokens:
    """Token ``"t<i>"`` is id ``i``: all a SwapRunner asks of a tokenizer."""

    def convert_tokens_to_ids(self, token: str) -> int:
        return int(token[1:])

    def convert_ids_to_tokens(self, i: int) -> str:
        return f"t{i}"


def test_patched_values_map_donor_positions_and_keep_bos():
    rec, don = _run(**EN), _run(**ZH, fill=100.0)
    values = patched_values(rec, don)
    assert torch.equal(values[:, 0], rec.acts[:, 0])
    assert torch.equal(values[:, 5], don.acts[:, 2])  # concept
    assert torch.equal(values[:, 1], don.acts[:, 4:8].mean(1))  # template words


def test_pair_union_joins_source_and_target_members():
    union = pair_union({"en": [(0, 1)], "fr": [(1, 2), (0, 1)]})
    assert union == {("en", "fr"): [(0, 1), (1, 2)], ("fr", "en"): [(1, 2), (0, 1)]}


def test_effect_scores_predict_a_small_real_patch():
    """A donor that differs from the recipient in one feature by a little: the effect score
    of that feature is the real change of the metric, every other score is zero."""
    model, clt = tiny_model("llama"), random_clt()
    ids = torch.tensor([[0, 5, 17, 33, 2, 60, 9, 41]])
    acts, logits = batch_activations(model, clt, ids)
    plus, minus = 11, int(logits[0].argmax())
    rec = PromptRun(tuple(ids[0].tolist()), acts[0], f"t{minus}", 3)
    bumped = acts[0].clone()
    layer, pos, feat = 0, 4, int(acts[0, 0, 4].argmax())
    bumped[layer, pos, feat] += 1e-3
    don = PromptRun(rec.ids, bumped, rec.top, 3)
    runs = {("antonym", "en", "a"): rec, ("synonym", "en", "b"): don}
    runner = SwapRunner(model, clt, _IdTokens(), runs)
    case = SwapCase("operation", ("antonym", "en", "a"), ("synonym", "en", "b"), "t11", ())
    score = runner.effect_scores([case]).reshape(clt.n_layers, clt.n_features)
    metric = logit_differences(torch.tensor([plus]), torch.tensor([minus]))
    edits = [patch_edits([(layer, feat)], rec, don, "x")]
    moved = metric(run_batch(model, clt, ids, edits).logits[:, -1]) - metric(logits)
    assert float(score[layer, feat]) == pytest.approx(float(moved), rel=2e-2)
    score[layer, feat] = 0.0
    assert float(score.abs().max()) < 1e-9
    # at the last site the bumped position (4) is not patched: every score is zero
    last = SwapCase("operation", case.recipient, case.donor, "t11", (), "last")
    assert float(runner.effect_scores([last]).abs().max()) < 1e-9


def test_effect_scores_average_cases_of_different_lengths():
    model, clt = tiny_model("llama"), random_clt()
    texts = [[0, 5, 17, 33, 2, 60, 9, 41], [0, 8, 3, 50, 22, 7], [0, 12, 30, 4, 19, 44, 2, 6]]
    runs = {}
    for i, ids in enumerate(texts):
        acts, logits = batch_activations(model, clt, torch.tensor([ids]))
        runs[("antonym", "en", f"c{i}")] = PromptRun(tuple(ids), acts[0], "t0", 2)
    runner = SwapRunner(model, clt, _IdTokens(), runs)
    keys = list(runs)
    cases = [
        SwapCase("operation", keys[0], keys[1], "t11", ()),
        SwapCase("operation", keys[1], keys[2], "t3", ()),
        SwapCase("operation", keys[2], keys[0], "t11", ()),
    ]
    each = [runner.effect_scores([c]) for c in cases]
    torch.testing.assert_close(runner.effect_scores(cases), sum(each) / 3)
    with pytest.raises(ValueError, match="at least one"):
        runner.effect_scores([])


@pytest.mark.parametrize("site", ["every", "last"])
def test_patch_entries_compile_exactly_like_patch_edits(site):
    """The fast path of the swaps: the same entries, order and floats as the Edit path, so the
    same pass gives bit-identical logits."""
    gen = torch.Generator().manual_seed(0)
    rec, don = _run(**EN), _run(**ZH)
    rec = PromptRun(rec.ids, torch.rand(2, EN["n"], 3, generator=gen), "", EN["concept"])
    don = PromptRun(don.ids, torch.rand(2, ZH["n"], 3, generator=gen), "", ZH["concept"])
    features = [(1, 2), (0, 0), (1, 0), (0, 2)]
    fast = patch_entries(features, rec, don, site)
    slow = compile_edits(patch_edits(features, rec, don, "x", site), 2, 3, EN["n"])
    assert list(fast) == list(slow)
    for layer in slow:
        for a, b in zip(fast[layer], slow[layer], strict=True):
            assert a.dtype == b.dtype and torch.equal(a, b)
    assert patch_entries([], rec, don, site) == {}
    with pytest.raises(ValueError, match="distinct"):
        patch_entries([(1, 2), (1, 2)], rec, don, site)


def test_run_compiled_equals_run_batch_and_checks_its_entries():
    model, clt = tiny_model("llama"), random_clt()
    ids = torch.tensor([[0, 5, 17, 33, 2, 60, 9, 41], [0, 8, 3, 50, 22, 7, 1, 2]])
    acts, _ = batch_activations(model, clt, ids)
    runs = [PromptRun(tuple(row.tolist()), acts[b], "", 3) for b, row in enumerate(ids)]
    features = [(la, f) for la in range(clt.n_layers) for f in range(0, clt.n_features, 7)]
    edits = [patch_edits(features, runs[b], runs[1 - b], "x") for b in range(2)]
    compiled = [patch_entries(features, runs[b], runs[1 - b]) for b in range(2)]
    expected = run_batch(model, clt, ids, edits).logits
    assert torch.equal(run_compiled(model, clt, ids, compiled).logits, expected)
    far = {0: compiled[0][0]._replace(positions=compiled[0][0].positions + 8)}
    with pytest.raises(ValueError, match="positions outside 0..7"):
        run_compiled(model, clt, ids, [far, {}])
