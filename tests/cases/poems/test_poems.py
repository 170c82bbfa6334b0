"""Helpers of the poems study (llmbio.cases.poems.planning, poem_swaps)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.cases.multilingual.prompts import batch_activations
from llmbio.cases.poems.planning import (
    contrast,
    line_end_slot,
    outcome,
    position_contrast,
    position_summary,
    role,
    transplant,
)
from llmbio.cases.poems.swaps import effect_nodes, effect_scores
from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import logit_differences, run_batch
from llmbio.world.poetry import Poetry


def test_contrast_keeps_group_specific_features():
    # 2 features per layer, 2 layers; feature 1 (layer 0, id 1) fires for "a" only,
    # feature 2 (layer 1, id 0) for everyone, feature 3 (layer 1, id 1) for "b" only
    acts = torch.tensor([[0, 2, 1, 0], [0, 3, 1, 0], [0, 0, 1, 5], [0, 0, 1, 0]], dtype=torch.float)
    found = contrast(acts, ["a", "a", "b", None], n_features=2, top_k=4)
    assert [k for k, _ in found["a"]] == [(0, 1)]
    assert [k for k, _ in found["b"]] == [(1, 1)]
    assert found["a"][0][1] == 2.5  # mean 2.5 in "a", 0 in "b"
    assert contrast(acts, [None] * 4, 2, 4) == {}


def test_line_end_slot():
    assert line_end_slot(["a", "b", "end", "\n", "x"]) == 2
    assert line_end_slot(["a", "b", "c"]) == 2
    assert line_end_slot(["\n", "a"]) == 0


def test_outcome_and_role():
    poetry = Poetry.build(random.Random(0))
    assert outcome(poetry, "green", "rabbit", "green") == "injected word"
    assert outcome(poetry, "rabbit", "rabbit", "green") == "planned word"
    assert outcome(poetry, "habit", "rabbit", None) == "other word, same rhyme"
    assert outcome(poetry, "queen", "rabbit", "green") == "other word, injected rhyme"
    assert outcome(poetry, "night", "rabbit", "green") == "other rhyme family"
    assert outcome(poetry, "95", "rabbit", None) == "not an end word"
    # <bos> A rhyming couplet : \n w w w w w end mark \n
    assert [role(p, 14) for p in (1, 5, 6, 11, 12, 13)] == [
        "header", "header", "line 1", "line-1 end word", "line-1 mark", "newline",
    ]  # fmt: skip


def test_position_summary_and_contrast():
    sweep = pd.DataFrame(
        {
            "variant": ["v"] * 4,
            "position": [11, 11, 12, 12],
            "token": ["x", "y", "\n", "\n"],
            "role": ["line-1 end word"] * 2 + ["newline"] * 2,
            "success": [False, True, True, True],
            "p_injected_end": [0.1, 0.6, 0.9, 0.8],
        }
    )
    summary = position_summary(sweep)
    assert summary["success_rate"].tolist() == [0.5, 1.0]
    assert summary["token"].tolist() == ["x/y", "\n"]
    row = position_contrast(summary).iloc[0]
    assert row["newline_margin"] == 0.5 and row["best_other_position"] == 11
    assert position_summary(sweep.iloc[:0]).empty


def test_transplant_replaces_active_features():
    own = torch.tensor([0.0, 1.5, 0.0, 0.0])
    donor = torch.tensor([0.0, 0.0, 2.0, 0.5])
    zero, inject = transplant(own, donor, position=7, n_features=2)
    assert zero.features == ((0, 1),) and zero.positions == (7,)
    assert inject.features == ((1, 0), (1, 1)) and inject.affine()[1] == [2.0, 0.5]
    assert transplant(torch.zeros(4), torch.zeros(4), 3, 2) == []


class _IdTokens:
    """Token ``"t<i>"`` is id ``i``: all the effect ranking asks of a tokenizer."""

    def convert_tokens_to_ids(self, token: str) -> int:
        return int(token[1:])


def _couplets(model, clt, prompts: list[list[int]], first_words: list[str], donor: dict):
    """The parts of a PoemExperiment that effect_scores reads: prompts ending at the newline,
    each one's first word of line 2, the donors, and every prompt's newline activations."""
    acts = [batch_activations(model, clt, torch.tensor([p]))[0][0, :, -1] for p in prompts]
    return SimpleNamespace(
        model=model, clt=clt, tok=_IdTokens(), cp=SimpleNamespace(ids=prompts),
        base=SimpleNamespace(tokens=[[w, "t1"] for w in first_words]), donor=donor,
        acts=torch.stack([a.reshape(-1) for a in acts]), F=clt.n_features,
    )  # fmt: skip


def test_plan_effect_scores_predict_a_small_real_patch():
    """A donor whose newline differs from the couplet's in one feature by a little: that
    feature's score is the real change of logit(donor's first word) - logit(own first word)
    when it is patched at the newline (central difference: a downstream JumpReLU near its
    threshold bends the metric within 1e-3); every other score is zero."""
    model, clt = tiny_model("llama"), random_clt()
    prompt, eps = [0, 5, 17, 33, 2, 60, 9, 41], 1e-3
    exp = _couplets(model, clt, [prompt, prompt], ["t20", "t11"], {"q": 1})
    layer, feat = 1, int(exp.acts[0].reshape(clt.n_layers, -1)[1].argmax())
    exp.acts[1, layer * clt.n_features + feat] += eps
    score = effect_scores(exp, [(0, "q")])["q"].reshape(clt.n_layers, clt.n_features)
    metric = logit_differences(torch.tensor([11]), torch.tensor([20]))
    node = Supernode.make("x", [(layer, feat)])
    value = exp.acts[0, layer * clt.n_features + feat]

    def patched(v: torch.Tensor) -> float:
        edits = [[Edit.inject(node, v.reshape(1), 1.0, positions=(len(prompt) - 1,))]]
        return float(metric(run_batch(model, clt, torch.tensor([prompt]), edits).logits[:, -1]))

    moved = (patched(value + eps) - patched(value - eps)) / 2
    assert float(score[layer, feat]) == pytest.approx(moved, rel=2e-2)
    score[layer, feat] = 0.0
    assert float(score.abs().max()) < 1e-9


def test_plan_effect_scores_average_each_words_swaps():
    model, clt = tiny_model("llama"), random_clt()
    prompts = [[0, 5, 17, 33, 2, 60, 9, 41], [0, 8, 3, 50, 22, 7], [0, 12, 30, 4, 19, 44, 2, 6]]
    exp = _couplets(model, clt, prompts, ["t3", "t11", "t40"], {"a": 0, "b": 2})
    pairs = [(1, "a"), (2, "a"), (0, "b"), (1, "b")]
    each = [effect_scores(exp, [p]) for p in pairs]
    together = effect_scores(exp, pairs)
    assert sorted(together) == ["a", "b"]
    torch.testing.assert_close(together["a"], (each[0]["a"] + each[1]["a"]) / 2)
    torch.testing.assert_close(together["b"], (each[2]["b"] + each[3]["b"]) / 2)
    nodes = effect_nodes(together, 3, clt.n_features)
    for word, node in nodes.items():
        top = together[word].topk(3)
        kept = {
            (int(j) // clt.n_features, int(j) % clt.n_features) for j in top.indices[top.values > 0]
        }
        assert set(node.features) == kept
