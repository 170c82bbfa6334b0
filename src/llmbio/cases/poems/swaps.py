"""The calibrated plan swap of the ``poems`` study (see ``studies/poems/analysis.py``).

As in the multihop and refusal studies, the paper's edit (8 features, own plan x-2, donor plan at
2x) is one point of a grid: supernode sizes and edit forms are tried on discovery couplets only,
and the chosen one is then run on the held-out line form with a random-feature control.

As in the multilingual study, the grid has a third axis, the *selection* that ranks a planned
word's plan features: their activation ``contrast`` between planned words (and rhyme families)
at the newline, or their ``effect`` (:func:`effect_scores`): the first-order change of
``logit(donor's first word of line 2) - logit(the couplet's own first word)`` when the feature
is patched to the donor's newline value (attribution patching through the real model), averaged
over the discovery swaps that inject the word. The first word is the metric because a swap
succeeds when line 2 starts with a lead word of the injected end word. Features whose values
differ most need not be those the line depends on. The effect scores too come from discovery
couplets only.
"""

from __future__ import annotations

import functools
import random

import pandas as pd
import torch

from llmbio.cases.poems.experiment import PoemExperiment, plan_supernodes
from llmbio.cases.poems.planning import active_node, as_supernode, contrast, features_at, plan_swap
from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import feature_gradients, logit_differences
from llmbio.studies.swaps import calibration_grid, choose

# The paper's single edit (8 features, own plan x-2, donor plan at 2x) moved few lines on the
# organism, as it moved few states and refusals in those studies; larger supernodes and a
# position-aligned copy of the donor's values ("copy": both plans' members set to the donor's
# value times the factor) are the same grid those studies calibrate over. With 8-128 features
# and copies up to x2 the best cell was the grid's corner (success still rising along both
# axes), so the grid goes one size and two multipliers further (the paper injects at 2x-50x).
CAL_SIZES = (8, 16, 32, 64, 128, 256)
CAL_FORMS = {"paper": ("scale", 2.0), "copy": ("copy", 1.0), "copy_x1.5": ("copy", 1.5),
             "copy_x2": ("copy", 2.0), "copy_x3": ("copy", 3.0),
             "copy_x4": ("copy", 4.0)}  # fmt: skip
SELECTIONS = ("contrast", "effect")
SUCCESS_BAR = 0.9
CALIBRATED_COLUMNS = [
    "first_word", "form", "planned", "injected", "selection", "edit_form", "k", "line_before",
    "line_after", "end_after", "success", "lead_rewritten", "control_end", "control_success",
]  # fmt: skip


def plan_nodes(
    exp: PoemExperiment, top_k: int, selection: str = "contrast", scores: dict | None = None
) -> dict[str, Supernode]:
    """Each planned word's plan on the discovery couplets: by ``contrast``, ``top_k`` features
    per word and per rhyme family; by ``effect``, the word's ``top_k`` features of largest
    positive mean effect in ``scores`` (:func:`effect_scores`)."""
    if selection == "effect":
        if scores is None:
            raise ValueError("the effect selection needs the effect scores (effect_scores)")
        return effect_nodes(scores, top_k, exp.F)
    if selection != "contrast":
        raise ValueError(f"unknown selection {selection!r}: use one of {SELECTIONS}")
    t, disc = exp.table, exp.discovery
    words = contrast(exp.acts[disc], [t["planned"][i] for i in disc], exp.F, top_k)
    fams = [exp.poetry.family_of(t["planned"][i]) for i in disc]
    return plan_supernodes(words, contrast(exp.acts[disc], fams, exp.F, top_k), exp.poetry)


def effect_scores(exp: PoemExperiment, pairs: list[tuple[int, str]]) -> dict[str, torch.Tensor]:
    """Mean first-order effect ``(L * F,)`` per injected word over the swaps ``pairs``
    ``(couplet, word)``: the gradient of ``logit(donor's first word of line 2) - logit(own
    first word)`` at the newline times the donor's newline activations minus the couplet's."""
    first = [tokens[0] for tokens in exp.base.tokens]
    token_id = exp.tok.convert_tokens_to_ids
    by_len: dict[int, list[int]] = {}
    for j, (i, _) in enumerate(pairs):
        by_len.setdefault(len(exp.cp.ids[i]), []).append(j)
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for rows in by_len.values():
        ids = torch.tensor([list(exp.cp.ids[pairs[j][0]]) for j in rows])
        plus = torch.tensor([token_id(first[exp.donor[pairs[j][1]]]) for j in rows])
        minus = torch.tensor([token_id(first[pairs[j][0]]) for j in rows])
        grads, _, _ = feature_gradients(exp.model, exp.clt, ids, logit_differences(plus, minus))
        at_newline = grads.float().cpu()[:, :, -1].reshape(len(rows), -1)  # (B, L * F)
        for b, j in enumerate(rows):
            i, q = pairs[j]
            effect = at_newline[b] * (exp.acts[exp.donor[q]] - exp.acts[i])
            sums[q] = sums[q] + effect if q in sums else effect
            counts[q] = counts.get(q, 0) + 1
    return {q: sums[q] / counts[q] for q in sorted(sums)}


def effect_nodes(scores: dict[str, torch.Tensor], top_k: int, n_features: int) -> dict:
    """Each word's ``top_k`` features of largest positive effect (words with none left out)."""
    nodes = {}
    for q, score in scores.items():
        top = score.topk(min(top_k, score.numel())).indices
        keys = [(int(j) // n_features, int(j) % n_features) for j in top[score[top] > 0]]
        if (node := as_supernode(f"{q}_plan", keys)) is not None:
            nodes[q] = node
    return nodes


def form_edits(exp: PoemExperiment, i: int, q: str, nodes: dict, form: str) -> list[Edit]:
    """Swap couplet ``i``'s plan for ``q``'s at the newline, in one of ``CAL_FORMS``."""
    kind, factor = CAL_FORMS[form]
    own, donor, nl = nodes[exp.table["planned"][i]], nodes[q], exp.cp.newline[i]
    if kind == "scale":
        values = features_at(exp.acts[exp.donor[q]], donor, exp.F)
        return plan_swap(own, donor, values, factor, nl, exp.s.ablate)
    both = as_supernode("swap", [*own.features, *donor.features])
    values = features_at(exp.acts[exp.donor[q]], both, exp.F)
    return [Edit.inject(both, values, factor, positions=(nl,))]


def discovery_effects(exp: PoemExperiment) -> dict[str, torch.Tensor]:
    """:func:`effect_scores` over the discovery swaps (those of the paper-size contrast plans)."""
    return effect_scores(exp, exp.pairs(exp.discovery, plan_nodes(exp, CAL_SIZES[0])))


def calibrate(
    exp: PoemExperiment, scores: dict | None = None, whole_grid: bool = False
) -> tuple[pd.DataFrame, dict]:
    """Swap success on discovery couplets by size, selection and form, sizes ascending,
    stopping after the first size at which a cell reaches ``SUCCESS_BAR`` (``whole_grid``: run
    every size anyway); the choice is that size and its best cell (else the best of the grid),
    returned as ``{selection, form, k}``. ``scores``: the effect scores (default
    :func:`discovery_effects`). Held-out couplets play no part."""
    scores = discovery_effects(exp) if scores is None else scores

    @functools.cache
    def cases(k: int, selection: str) -> tuple[dict, list]:
        nodes = plan_nodes(exp, k, selection, scores)
        return nodes, exp.pairs(exp.discovery, nodes)

    def evaluate(k: int, selection: str, form: str) -> dict:
        nodes, pairs = cases(k, selection)
        after = exp.lines([i for i, _ in pairs], [form_edits(exp, i, q, nodes, form)
                                                   for i, q in pairs])  # fmt: skip
        hits = [e == q for e, (_, q) in zip(after.end, pairs, strict=True)]
        size = sum(len(nodes[q].features) for _, q in pairs) / max(len(pairs), 1)
        return dict(n_cases=len(pairs), mean_features=size,
                    success_rate=sum(hits) / max(len(hits), 1))  # fmt: skip

    options = [{"selection": s, "form": f} for s in SELECTIONS for f in CAL_FORMS]
    grid = calibration_grid(CAL_SIZES, options, evaluate, SUCCESS_BAR, whole_grid=whole_grid)
    best = choose(grid, SUCCESS_BAR, ["selection", "form", "k"])
    return grid, {"selection": str(best["selection"]), "form": str(best["form"]),
                  "k": int(best["k"])}  # fmt: skip


def calibrated_injection(
    exp: PoemExperiment,
    form: str,
    k: int,
    selection: str = "contrast",
    scores: dict | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """The chosen swap on every held-out couplet, and a control: the donor's plan replaced by
    as many random features active at the donor's newline outside both plans, same form
    (``control_success`` NaN where the donor has no such feature)."""
    nodes, rng = plan_nodes(exp, k, selection, scores), random.Random(seed)
    pairs = exp.pairs(exp.evaluation, nodes)
    edits, controls = [], []
    for i, q in pairs:
        edits.append(form_edits(exp, i, q, nodes, form))
        used = set(nodes[q].features) | set(nodes[exp.table["planned"][i]].features)
        pool = sorted(set(active_node("donor", exp.acts[exp.donor[q]], exp.F).features) - used)
        fake = as_supernode(q, rng.sample(pool, min(len(nodes[q].features), len(pool))))
        controls.append(form_edits(exp, i, q, {**nodes, q: fake}, form) if fake else None)
    rows = [i for i, _ in pairs]
    after = exp.lines(rows, edits)
    ctrl = exp.lines(rows, [c or [] for c in controls])
    t = exp.table
    return pd.DataFrame([
        dict(first_word=t["first_word"][i], form=int(t["form"][i]), planned=t["planned"][i],
             injected=q, selection=selection, edit_form=form, k=k, line_before=t["line2"][i],
             line_after=after.text(j), end_after=after.end[j], success=after.end[j] == q,
             lead_rewritten=(after.tokens[j] or [""])[0] in exp.poetry.leads[q],
             control_end=ctrl.end[j] if controls[j] else None,
             control_success=float(ctrl.end[j] == q) if controls[j] else float("nan"))
        for j, (i, q) in enumerate(pairs)
    ], columns=CALIBRATED_COLUMNS)  # fmt: skip
