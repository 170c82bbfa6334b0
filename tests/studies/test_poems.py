"""Pure helpers of the poems study (llmbio.studies.planning)."""

from __future__ import annotations

import random

import pandas as pd
import torch

from llmbio.studies.planning import (
    contrast,
    line_end_slot,
    outcome,
    position_contrast,
    position_summary,
    role,
    transplant,
)
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
