"""Operation, operand and output-language swaps of the lexicon prompts, on the real forward pass.

A swap *patches* a supernode of a recipient prompt from a donor prompt: at every recipient
position (BOS excluded) each member is set to its activation at the donor position of the same
role (:func:`llmbio.cases.multilingual.prompts.position_map`), or at the last position only (the
edit *site*: ``every`` or ``last``; the answer is read there, and the paper calls the features
that pick the output language *output* features). Members active on the recipient but
not on the donor are thereby ablated, the donor's are injected at their own activation; all
other features and the attention run as usual (unconstrained mode), so the edit's effects
propagate through the real model.

- **operation**: antonym prompt of concept ``c`` <- synonym prompt of another concept, same
  language; operation supernode; success: the top token is ``c``'s synonym.
- **operand**: antonym prompt of ``c`` <- antonym prompt of ``t``, same language; the operand
  supernodes of ``c`` and ``t``; success: the top token is ``t``'s antonym (small -> hot: cold).
- **language**: antonym prompt of ``c`` in ``src`` <- antonym prompt of another concept in
  ``dst``; the language supernodes of ``src`` and ``dst``; success: ``c``'s antonym in ``dst``.

The donor of the operation and language swaps names another concept, so only features that
carry the relation (the language) and not the concept can make the swap succeed. Supernode
size ``k`` is calibrated per swap on the calibration concepts (:func:`calibrate`); every case is
repeated with as many random features active on the recipient or donor (the *control*).
Calibration takes the smallest size whose swaps succeed in >= 90% of the calibration cases of
every recipient language.

The edit site is calibrated with the selection and the size. Features are ranked for a
supernode in one of two ways (the *selection*): by the activation contrast of
:mod:`llmbio.cases.multilingual.prompts` (features that differ between the prompts), or by their
*effect* (:meth:`SwapRunner.effect_scores`): the first-order change of ``logit(expected) -
logit(recipient's answer)`` when the feature is patched to the donor's value at the case's edit
site (attribution patching through the real model), averaged over calibration cases. Features
whose values differ most need not be those the answer depends on.

Calibration cases take their donors among the calibration concepts (``donors``), so that
neither a ranking nor a size is chosen with a held-out concept's prompt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
import torch

from llmbio.cases.multilingual.prompts import (
    Key,
    PromptRun,
    by_role,
    concept_order,
    position_map,
    top_features,
)
from llmbio.features.supernodes import FeatureKey
from llmbio.interventions.batched import feature_gradients, logit_differences, run_compiled
from llmbio.interventions.edits import LayerEdits
from llmbio.studies.swaps import calibration_grid, choose, random_features

K_GRID = (4, 8, 16, 32, 64, 128, 256, 512)  # supernode sizes tried by the calibration
SUCCESS_BAR = 0.9  # calibration stops at the first size whose swaps succeed this often, in
# every language
BATCH = 64  # prompts per forward pass
SITES = ("every", "last")  # where a swap patches: every position by role, or the last one


@dataclass(frozen=True)
class SwapCase:
    swap: str  # operation | operand | language
    recipient: Key
    donor: Key
    expected: str  # the top token that marks success
    features: tuple[FeatureKey, ...]
    site: str = "every"  # every | last (module docstring)


def partner(concepts: Sequence[str], concept: str) -> str:
    """The concept two places on in world order: the same member of the next antonym pair."""
    return concepts[(list(concepts).index(concept) + 2) % len(concepts)]


def site_map(recipient: PromptRun, donor: PromptRun, site: str = "every") -> list:
    """The ``(recipient position, donor positions)`` pairs a swap at ``site`` patches."""
    if site not in SITES:
        raise ValueError(f"unknown swap site {site!r}; use one of {SITES}")
    pairs = position_map(recipient, donor)
    return pairs if site == "every" else [pq for pq in pairs if pq[0] == len(recipient.ids) - 1]


def patched_values(recipient: PromptRun, donor: PromptRun, site: str = "every") -> torch.Tensor:
    """Every feature's donor value at each patched recipient position, by role (the others
    and BOS: their own value); ``(L, n, F)`` like ``recipient.acts``."""
    return by_role(site_map(recipient, donor, site), recipient.acts, donor.acts)


def patch_entries(
    features, recipient: PromptRun, donor: PromptRun, site: str = "every"
) -> dict[int, LayerEdits]:
    """Compiled edits (as :func:`~llmbio.interventions.edits.compile_edits` returns them) that
    set ``features`` at the recipient positions of ``site`` to the donor's value at the same
    role: per position an injection of the donor's values, built from tensors rather than one
    ``Edit`` per position (the swaps' calibration runs thousands of them). The tests check them
    entry for entry against the ``Edit`` path."""
    layers, ids = _member_index(tuple(features))
    if not len(layers):
        return {}
    pairs = site_map(recipient, donor, site)
    if not pairs:
        return {}
    # an injected donor value becomes a float64 offset, as Edit.with_donor makes it
    offset = torch.cat(
        [donor.acts[:, list(qs)].mean(1)[layers, ids].to(torch.float64) for _, qs in pairs]
    )
    n = len(pairs)
    position = torch.tensor([p for p, _ in pairs]).repeat_interleave(len(layers))
    layer, feature = layers.repeat(n), ids.repeat(n)
    out = {}
    for la in sorted(set(layers.tolist())):
        m = layer == la
        zeros = torch.zeros(int(m.sum()), dtype=torch.float64)
        out[la] = LayerEdits(position[m], feature[m], zeros, offset[m])
    return out


@lru_cache(maxsize=256)
def _member_index(features: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """Layers and ids ``(K,)`` of distinct ``features`` (a calibration reuses each set often)."""
    keys = list(dict.fromkeys((int(la), int(f)) for la, f in features))
    if len(keys) != len(features):
        raise ValueError("patch_entries needs distinct features")
    return torch.tensor([la for la, _ in keys]), torch.tensor([f for _, f in keys])


class SwapRunner:
    """Runs swap cases (and their random-feature controls) on one model and its transcoder.

    Cases whose recipients have the same length share batched forward passes.
    """

    def __init__(self, model, clt, tokenizer, runs: dict[Key, PromptRun], seed: int = 0):
        self.model, self.clt, self.tok, self.runs = model, clt, tokenizer, runs
        self.rng = np.random.default_rng(seed)

    def outcomes(self, cases: Sequence[SwapCase], features: Sequence) -> list[tuple[str, float]]:
        """Top token and P(expected) of each case after patching its ``features[i]``."""
        out: list = [None] * len(cases)
        for chunk in self._by_length(cases):
            ids = torch.tensor([self.runs[cases[i].recipient].ids for i in chunk])
            compiled = [self._entries(cases[i], features[i]) for i in chunk]
            probs = run_compiled(self.model, self.clt, ids, compiled).logits[:, -1].softmax(-1)
            for i, p in zip(chunk, probs, strict=True):
                expected = self.tok.convert_tokens_to_ids(cases[i].expected)
                out[i] = (self.tok.convert_ids_to_tokens(int(p.argmax())), float(p[expected]))
        return out

    def effect_scores(self, cases: Sequence[SwapCase]) -> torch.Tensor:
        """Mean first-order effect ``(L * F,)`` over ``cases`` of patching each feature (at the
        case's site) to the donor, on ``logit(expected) - logit(recipient's answer)``."""
        if not cases:
            raise ValueError("effect_scores needs at least one swap case")
        total, n = None, 0
        for rows in self._by_length(cases):
            runs = [self.runs[cases[i].recipient] for i in rows]
            ids = torch.tensor([r.ids for r in runs])
            plus = torch.tensor([self.tok.convert_tokens_to_ids(cases[i].expected) for i in rows])
            minus = torch.tensor([self.tok.convert_tokens_to_ids(r.top) for r in runs])
            metric = logit_differences(plus, minus)
            grads, _, _ = feature_gradients(self.model, self.clt, ids, metric)
            grads = grads.float().cpu()  # the prompt runs' activations are on the CPU
            for j, i in enumerate(rows):
                donor = self.runs[cases[i].donor]
                delta = patched_values(runs[j], donor, cases[i].site) - runs[j].acts
                effect = (grads[j] * delta).sum(1).flatten()  # (L * F,)
                total = effect if total is None else total + effect
                n += 1
        return total / n

    def _by_length(self, cases: Sequence[SwapCase]) -> list[list[int]]:
        """Case indices in chunks of at most BATCH whose recipients have one length."""
        by_len: dict[int, list[int]] = {}
        for i, case in enumerate(cases):
            by_len.setdefault(len(self.runs[case.recipient].ids), []).append(i)
        return [rows[j : j + BATCH] for rows in by_len.values() for j in range(0, len(rows), BATCH)]

    def _entries(self, case: SwapCase, features) -> dict[int, LayerEdits]:
        rec, don = self.runs[case.recipient], self.runs[case.donor]
        return patch_entries(features, rec, don, case.site)

    def control_features(self, case: SwapCase) -> list[FeatureKey]:
        """As many features as the case's, drawn among those active on recipient or donor."""
        acts = [self.runs[key].acts for key in (case.recipient, case.donor)]
        return random_features(acts, case.features, len(case.features), self.rng)

    def success_rate(self, cases: Sequence[SwapCase]) -> float:
        """The lowest success rate of the recipients' languages (0 without cases)."""
        found = self.outcomes(cases, [c.features for c in cases])
        hits: dict[str, list[bool]] = {}
        for (top, _), case in zip(found, cases, strict=True):
            hits.setdefault(case.recipient[1], []).append(top == case.expected)
        return min((float(np.mean(h)) for h in hits.values()), default=0.0)

    def rows(self, cases: Sequence[SwapCase]) -> list[dict]:
        """One row per case: the swap and its random-feature control."""
        controls = [self.control_features(c) for c in cases]
        found = self.outcomes([*cases, *cases], [*(c.features for c in cases), *controls])
        rows = []
        for case, (top, p), (c_top, c_p) in zip(
            cases, found[: len(cases)], found[len(cases) :], strict=True
        ):
            rows.append({
                "swap": case.swap, "language": case.recipient[1],
                "target_language": case.donor[1], "concept": case.recipient[2],
                "donor_concept": case.donor[2], "n_features": len(case.features),
                "expected": case.expected, "baseline_top": self.runs[case.recipient].top,
                "top_after": top, "p_expected": p, "success": top == case.expected,
                "control_top": c_top, "control_p_expected": c_p,
                "control_success": c_top == case.expected,
            })  # fmt: skip
        return rows


def operation_cases(
    lexicon, languages, concepts, features, donors=None, site: str = "every"
) -> list[SwapCase]:
    """Antonym prompt of each concept <- the synonym prompt of its partner among ``donors``
    (concepts in world order; default all of them) in the same language."""
    donors = concept_order(lexicon) if donors is None else donors
    return [
        SwapCase(
            "operation",
            ("antonym", lang, c),
            ("synonym", lang, partner(donors, c)),
            lexicon.answer(c, "synonym", lang),
            tuple(features),
            site,
        )
        for lang in languages
        for c in concepts
    ]


def operand_cases(
    lexicon, languages, concepts, by_concept: dict, donors=None, site: str = "every"
) -> list[SwapCase]:
    """Antonym prompt of each concept <- its partner's among ``donors`` (as
    :func:`operation_cases`), same language; both concepts' operand features."""
    donors = concept_order(lexicon) if donors is None else donors
    cases = []
    for lang in languages:
        for c in concepts:
            t = partner(donors, c)
            members = tuple(dict.fromkeys([*by_concept[c], *by_concept[t]]))
            expected = lexicon.answer(t, "antonym", lang)
            recipient, donor = ("antonym", lang, c), ("antonym", lang, t)
            cases.append(SwapCase("operand", recipient, donor, expected, members, site))
    return cases


def language_pairs(languages) -> list[tuple[str, str]]:
    """Every ``(source, target)`` pair of distinct languages."""
    return [(src, dst) for src in languages for dst in languages if dst != src]


def pair_union(by_language: dict) -> dict[tuple[str, str], list]:
    """Each pair's supernode from per-language ones: the source's and the target's members."""
    return {
        (src, dst): list(dict.fromkeys([*by_language[src], *by_language[dst]]))
        for src, dst in language_pairs(by_language)
    }


def language_cases(
    lexicon, languages, concepts, by_pair: dict, donors=None, site: str = "every"
) -> list[SwapCase]:
    """Antonym prompt of each concept in ``src`` <- its partner's among ``donors`` (as
    :func:`operation_cases`) in ``dst``; ``by_pair``: the features of each ``(src, dst)``
    pair."""
    donors = concept_order(lexicon) if donors is None else donors
    cases = []
    for src, dst in language_pairs(languages):
        members = tuple(by_pair[(src, dst)])
        for c in concepts:
            donor = ("antonym", dst, partner(donors, c))
            expected = lexicon.answer(c, "antonym", dst)
            recipient = ("antonym", src, c)
            cases.append(SwapCase("language", recipient, donor, expected, members, site))
    return cases


def calibrate(
    runner: SwapRunner, make_cases: Callable[[int], list[SwapCase]], grid=K_GRID, **option
) -> pd.DataFrame:
    """One row per size ``k`` of ``grid``, ascending, up to the first whose cases succeed
    >= SUCCESS_BAR (:func:`llmbio.studies.swaps.choose` picks from them); ``option``: the
    row's other columns."""

    def evaluate(k: int, **_option) -> dict:
        cases = make_cases(k)
        size = float(np.mean([len(c.features) for c in cases])) if cases else 0.0
        return {"n_cases": len(cases), "mean_features": size,
                "success_rate": runner.success_rate(cases)}  # fmt: skip

    return calibration_grid(grid, [option], evaluate, SUCCESS_BAR)


def swap_experiments(runner, lex, languages, concepts, calib, scores):
    """Calibrate each swap's edit site, selection and supernode size on the calibration
    concepts (donors among them too), then run it on every concept (with controls). Operation
    and language supernodes are ranked by contrast or by effect (module docstring); the
    operand's are per concept, so they keep the contrast (an effect score would be fit on the
    very case it is tested on). Returns the ``swaps``, ``calibration`` and ``swap_features``
    tables."""
    n_feat = runner.clt.n_features
    rankings = swap_rankings(runner, lex, languages, calib, scores)

    def operation(site, selection, k, cs, donors=None):
        features = top_features(rankings["operation"][(site, selection)], k, n_feat)
        return operation_cases(lex, languages, cs, features, donors, site)

    def operand(site, _selection, k, cs, donors=None):
        by_concept = {c: top_features(s, k, n_feat) for c, s in scores["operand"].items()}
        return operand_cases(lex, languages, cs, by_concept, donors, site)

    def language(site, selection, k, cs, donors=None):
        ranking = rankings["language"][(site, selection)]
        if selection == "contrast":
            by_pair = pair_union({g: top_features(s, k, n_feat) for g, s in ranking.items()})
        else:
            by_pair = {pair: top_features(s, k, n_feat) for pair, s in ranking.items()}
        return language_cases(lex, languages, cs, by_pair, donors, site)

    rows, calibration, members = [], [], []
    for name, make in (("operation", operation), ("operand", operand), ("language", language)):
        options = list(rankings.get(name, {(site, "contrast"): None for site in SITES}))
        grid = pd.concat([
            calibrate(runner, lambda k, o=(site, selection), m=make: m(*o, k, calib, calib),
                      swap=name, site=site, selection=selection)
            for site, selection in options
        ], ignore_index=True)  # fmt: skip
        best = choose(grid, SUCCESS_BAR, ["site", "selection", "k"])
        calibration.append(grid)
        chosen = {"swap": name, "site": best["site"], "selection": best["selection"],
                  "k": int(best["k"])}  # fmt: skip
        cases = make(chosen["site"], chosen["selection"], chosen["k"], concepts)
        used = Counter(f for case in cases for f in case.features)
        members += [
            {**chosen, "layer": la, "feature": f, "n_cases": n} for (la, f), n in used.items()
        ]
        for row in runner.rows(cases):
            split = "calibration" if row["concept"] in calib else "heldout"
            rows.append({**row, **chosen, "split": split})
    table = pd.DataFrame(rows)
    if not table.empty:  # did the answer change language, even if not to the expected word?
        language_of = word_languages(lex)
        table["answer_language"] = table["top_after"].map(language_of).fillna("other")
    columns = ["swap", "site", "selection", "k", "layer", "feature", "n_cases"]
    return table, pd.concat(calibration, ignore_index=True), pd.DataFrame(members, columns=columns)


def swap_rankings(runner, lex, languages, calib, scores) -> dict:
    """Per swap with a choice (operation, language), per ``(site, selection)``, the feature
    scores: the contrast scores (the same at both sites), and effect scores measured at the site
    on calibration cases whose donors are calibration concepts too (language: one per (source,
    target) pair)."""
    rankings: dict = {"operation": {}, "language": {}}
    pairs = language_pairs(languages)
    for site in SITES:
        rankings["operation"][(site, "contrast")] = scores["operation"]
        rankings["operation"][(site, "effect")] = runner.effect_scores(
            operation_cases(lex, languages, calib, [], calib, site)
        )
        rankings["language"][(site, "contrast")] = scores["language"]
        blank = language_cases(lex, languages, calib, {pair: [] for pair in pairs}, calib, site)
        rankings["language"][(site, "effect")] = {
            pair: runner.effect_scores([c for c in blank if (c.recipient[1], c.donor[1]) == pair])
            for pair in pairs
        }
    return rankings


def word_languages(lex) -> dict[str, str]:
    """Language of every lexicon word (concept words and synonyms)."""
    return {
        word: lang
        for table in (lex.words, lex.synonyms)
        for by_lang in table.values()
        for lang, word in by_lang.items()
    }
