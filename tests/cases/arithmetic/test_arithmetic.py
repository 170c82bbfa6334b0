"""The arithmetic study's pure pieces: the operand-plot classifier, and the batched
last-position pass against the one-prompt Intervener."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.cases.arithmetic import figures as plots
from llmbio.cases.arithmetic.experiments import Grid, last_position, pick_donor, swap_plan
from llmbio.cases.arithmetic.operand_plots import classify, explained, grid, synthetic_heatmaps
from llmbio.interventions import Edit, Intervener
from llmbio.interventions.batched import run_batch


def test_synthetic_heatmaps_get_their_class():
    heatmaps, expected = synthetic_heatmaps(n=100, noise=0.05, seed=1)
    table = classify(heatmaps)
    assert table["kind"].tolist() == expected
    functions = table["function"].tolist()
    assert functions[4] == "(a+b) mod 10"  # "sum ends in 5"
    assert functions[5] == "(a+b) mod 4"  # a band with a period-4 comb
    assert functions[6] == "a mod 10"
    assert functions[7] == "(a mod 10, b mod 10)"  # "_6 + _9"
    assert functions[9] == "blob"  # "~36 + ~60"


def test_explained_variance_of_exact_functions():
    a, b = grid(20)
    X = np.stack([a * 1.0, (a + b) % 7 * 1.0, np.ones(400)])
    assert explained(X, a) == pytest.approx([1.0, explained(X[1:2], a)[0], 0.0])
    assert explained(X, (a + b) % 7)[1] == pytest.approx(1.0)
    assert 0 <= explained(X, b)[0] < 1e-9


def test_small_grid_does_not_crash_and_finds_no_period():
    heatmaps, _ = synthetic_heatmaps(n=10)
    table = classify(heatmaps)
    assert set(table["kind"]) <= {"operand", "sum", "modular", "lookup", "unexplained"}
    assert (table[["period_a", "period_b"]] == 0).all().all()  # too small to repeat 3 times


def test_pick_donor_shares_an_operand():
    assert pick_donor(100, 36, 59, 98) == (36, 62)
    assert pick_donor(100, 99, 0, 91) == (91, 0)
    assert pick_donor(10, 9, 9, 0) is None


@pytest.mark.parametrize("prefix_len", [0, 3])
def test_last_position_edits_match_the_intervener(prefix_len):
    model, clt = tiny_model("llama"), random_clt()
    torch.manual_seed(0)
    ids = torch.randint(1, 64, (4, 6))
    ids[:2, :3] = ids[0, :3]  # two prompts share a prefix, as a + b prompts do
    mask = torch.zeros(3, 4, clt.n_features, dtype=torch.bool)
    mask[0, :, [1, 2]] = True
    mask[2, 1:3, 5] = True
    values = torch.rand(3, 4, clt.n_features, dtype=torch.float64)
    logits, acts = last_position(model, clt, ids, mask, values, prefix_len=prefix_len, chunk=3)
    for i in range(4):
        edits = [
            Edit.set_to([(la, f)], float(values[la, i, f]), positions=(5,))
            for la, f in mask[:, i].nonzero().tolist()
        ]
        run = Intervener(model, clt, ids[i]).run(edits)
        torch.testing.assert_close(logits[i], run.logits[-1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(acts[:, i], run.activations[:, -1])
    clean = run_batch(model, clt, ids, record_activations=True).activations  # (B, L, n, F)
    torch.testing.assert_close(clean[0], Intervener(model, clt, ids[0]).baseline.activations)


@pytest.mark.parametrize("base", [10, 4])
def test_swap_plan_donors_in_a_base(base):
    """Ones donors share the sum's block of ``base`` (not its residue), tens donors are
    ``base`` away; every donor shares an operand with the recipient; only correct recipients."""
    n = 30
    a, b = np.divmod(np.arange(n * n), n)
    answer = a + b
    answer[7] = -1  # one wrong answer: never a recipient
    grid = Grid(n, torch.zeros(n * n, 1), np.arange(2 * n), answer, np.zeros((1, n * n, 1)))
    plan = swap_plan(grid, 200, seed=0, base=base)
    assert len(plan) == 200 and 7 not in set(plan["a"] * n + plan["b"])
    s, ones, tens = plan["sum"], plan["ones_donor_sum"], plan["tens_donor_sum"]
    assert ((ones // base == s // base) & (ones % base != s % base)).all()
    assert ((tens - s).abs() == base).all()
    for col in ("ones_donor", "tens_donor"):
        da, db = np.divmod(plan[col].to_numpy(), n)
        assert ((da + db) == plan[f"{col}_sum"]).all()
        assert ((da == plan["a"]) | (db == plan["b"])).all()


def test_interventions_figure_names_the_base():
    rows = []
    for exp, base in (("ones_swap", 10), ("residue_swap", 4)):
        rows.append({
            "experiment": exp, "base": base, "success": True, "abs_error": 1, "tens_kept": True,
            "residue_follows_low_order": True, "near_magnitude": True, "period": 4,
        })  # fmt: skip
    fig = plots.interventions(pd.DataFrame(rows))
    labels = {t.get_text() for t in fig.axes[0].get_xticklabels()}
    assert labels == {"ones_swap", "residue_swap (base 4)"}
