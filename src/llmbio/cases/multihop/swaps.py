"""State supernodes and state swaps of the multi-hop prompt, batched over every city.

All two-hop prompts have the same length (one token per city), so one batched forward pass
records every city's transcoder activations (:func:`city_runs`) and swaps of many (city, donor)
pairs share forward passes (:func:`swap_outcomes`).

A state's features are ranked by *contrast* on training cities only (:func:`state_rankings`,
two rules); a supernode of size ``k`` is the top ``k`` of a ranking (fewer where fewer
features have a positive contrast).

A swap edits the recipient city's prompt with a donor prompt (a training city of the donor
state), at every position from the city token on, in one of two forms:

- ``max2x`` (the paper's): the recipient state's supernode scaled by -2, the donor state's
  supernode set to 2x each member's max activation on the donor prompt;
- ``copy`` (as the multilingual study's patch): the members of both supernodes set, position
  by position, to their values on the donor prompt (the templates align token for token), so
  the recipient's state features fall to the donor's (near-zero) values and the donor's appear
  at their own strength; ``copy_x1.5`` / ``copy_x2`` set them to 1.5x / 2x those values (the
  paper injects at 2x; the copy of the recipient's own features, near zero, stays near zero).

The *control* repeats a swap with random features: as many as the swap edits, drawn among the
features active on the recipient or donor prompt that belong to neither supernode. Controls
matched to the swap (:mod:`llmbio.studies.swaps`): :func:`matched_swap` (as many random
features, each changing the residual stream by about as much as its member),
:func:`complement_swap` (every other active feature at the city token, the supernodes held at
the recipient's values); the wrong-donor control is a :class:`Swap` whose donor is a city of
the recipient's own state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from llmbio.features.supernodes import Supernode
from llmbio.interventions import Edit
from llmbio.interventions.batched import run_batch
from llmbio.studies.swaps import (
    MATCH_DRAWS,
    Writes,
    active_features,
    complement,
    matched_random,
    random_features,
)

RULES = ("max", "mean")  # contrast rankings, see state_rankings
# swap forms (see the module docstring): name -> (kind, multiplier of the donor values)
FORMS = {"max2x": ("max", 2.0), "copy": ("copy", 1.0), "copy_x1.5": ("copy", 1.5),
         "copy_x2": ("copy", 2.0)}  # fmt: skip
K_GRID = (8, 16, 32, 64, 128)  # supernode sizes tried by the calibration, in this order
SUCCESS_BAR = 0.9  # calibration takes the smallest k (then form) reaching this success rate
BATCH = 128  # prompts per forward pass


@dataclass(frozen=True)
class CityRuns:
    """Every city's two-hop prompt and its clean pass."""

    cities: list[str]
    ids: torch.Tensor  # (C, n)
    starts: list[int]  # position of the city token
    acts: torch.Tensor  # (C, L, n, F) transcoder activations
    top: list[int]  # top token id after the prompt
    probs: torch.Tensor  # (C, vocab) next-token probabilities

    def index(self, city: str) -> int:
        return self.cities.index(city)


def city_runs(model, clt, tok, cities: Sequence[str], prompt: str) -> CityRuns:
    """One clean batched pass over ``prompt.format(city=c)`` for every city."""
    from llmbio.tokenizer import encode

    rows = [encode(tok, prompt.format(city=c)) for c in cities]
    starts = [r.index(tok.convert_tokens_to_ids(c)) for r, c in zip(rows, cities, strict=True)]
    ids = torch.tensor(rows)
    with torch.no_grad():
        out = run_batch(model, clt, ids, record_activations=True)
    probs = out.logits[:, -1].float().softmax(-1)
    return CityRuns(list(cities), ids, starts, out.activations, probs.argmax(-1).tolist(), probs)


def state_rankings(
    runs: CityRuns, city_state: dict[str, str], train: Sequence[str], rule: str = "mean"
) -> dict[str, list[str]]:
    """Per state, feature ids ``"layer/feature"`` by decreasing contrast (positive only).

    A feature's value on a city is its max activation from the city token on. ``rule``:
    ``max``: the state's mean minus the largest mean of any other state (strictly selective);
    ``mean``: the state's mean minus the mean over the other states, among features active on
    at least half of the state's training cities (so that features of one city, which the mean
    would also rank, stay out: a state feature fires for the state's cities).
    """
    if rule not in RULES:
        raise ValueError(f"unknown ranking rule {rule!r}; expected one of {RULES}")
    n_feat = runs.acts.shape[-1]
    names = sorted({city_state[c] for c in train})
    per_state = []
    for s in names:
        rows = [runs.index(c) for c in train if city_state[c] == s]
        per_state.append(
            torch.stack([runs.acts[r, :, runs.starts[r] :].amax(1).flatten() for r in rows])
        )  # (cities of s, L * F)
    means = torch.stack([a.mean(0) for a in per_state])  # (S, L * F)
    out = {}
    for i, state in enumerate(names):
        others = torch.cat([means[:i], means[i + 1 :]])
        if not len(others):
            out[state] = []
            continue
        if rule == "max":
            score = means[i] - others.amax(0)
        else:
            score = means[i] - others.mean(0)
            score = torch.where((per_state[i] > 0).float().mean(0) >= 0.5, score, 0.0)
        order = score.argsort(descending=True)
        order = order[score[order] > 0]
        out[state] = [f"{int(j) // n_feat}/{int(j) % n_feat}" for j in order]
    return out


def supernodes(rankings: dict, k: int) -> dict[str, Supernode | None]:
    """Each state's top-``k`` features (``None`` where no feature has a positive margin)."""
    return {
        s: Supernode.make(f"state_{s}", ids[:k]) if ids else None for s, ids in rankings.items()
    }


@dataclass(frozen=True)
class Swap:
    """Recipient city (row of the runs), donor city (row), and the features each side edits."""

    recipient: int
    donor: int
    removed: tuple  # (layer, feature) of the recipient state's supernode
    added: tuple  # (layer, feature) of the donor state's supernode
    # positions edited (default: from the city token on) and features held at the recipient's
    # own values there (the complement control)
    positions: tuple | None = None
    held: tuple = ()


def swap_edits(runs: CityRuns, swap: Swap, form: str) -> list[Edit]:
    """The edits of one swap, at its positions (default: from the recipient's city token to
    the end); its held features then set to the recipient's own values from the city token on.
    """
    start, n = runs.starts[swap.recipient], runs.ids.shape[1]
    positions = tuple(range(start, n)) if swap.positions is None else swap.positions
    if form not in FORMS:
        raise ValueError(f"unknown swap form {form!r}; expected one of {list(FORMS)}")
    edits = _moved(runs, swap, form, positions)
    if swap.held:
        node, rec = _node("held", swap.held), runs.acts[swap.recipient]
        layers, idx = (torch.tensor(c) for c in zip(*swap.held, strict=True))
        for p in range(start, n):
            edits.append(Edit.inject(node, rec[layers, p, idx], 1.0, positions=(p,)))
    return edits


def _moved(runs: CityRuns, swap: Swap, form: str, positions: tuple) -> list[Edit]:
    start = runs.starts[swap.recipient]
    donor = runs.acts[swap.donor]  # (L, n, F)
    kind, mult = FORMS[form]
    edits = []
    if kind == "max":
        if swap.removed:
            edits.append(Edit.scale_by(_node("removed", swap.removed), -2.0, positions))
        if swap.added:
            la, f = (torch.tensor(c) for c in zip(*swap.added, strict=True))
            dmax = donor[:, 1:].amax(1)[la, f]  # each member's max on the donor (BOS excluded)
            edits.append(Edit.inject(_node("added", swap.added), dmax, mult, positions))
        return edits
    feats = tuple(dict.fromkeys([*swap.removed, *swap.added]))
    if not feats:
        return []
    node = _node("copied", feats)
    layers = torch.tensor([la for la, _ in feats])
    idx = torch.tensor([f for _, f in feats])
    d_start = runs.starts[swap.donor]
    for p in positions:  # same template: position p of the recipient <-> p of the donor
        q = d_start + (p - start)
        edits.append(Edit.inject(node, donor[layers, q, idx], mult, positions=(p,)))
    return edits


def _node(name: str, feats: tuple) -> Supernode:
    return Supernode.make(name, feats)


def swap_outcomes(model, clt, runs: CityRuns, swaps: Sequence[Swap], form: str) -> torch.Tensor:
    """Next-token probabilities ``(len(swaps), vocab)`` after each swap."""
    out = []
    with torch.no_grad():
        for j in range(0, len(swaps), BATCH):
            chunk = swaps[j : j + BATCH]
            ids = runs.ids[[s.recipient for s in chunk]]
            edits = [swap_edits(runs, s, form) for s in chunk]
            logits = run_batch(model, clt, ids, edits).logits[:, -1]
            out.append(logits.float().softmax(-1))
    return torch.cat(out) if out else torch.zeros(0, runs.probs.shape[-1])


def control_swap(runs: CityRuns, swap: Swap, rng: np.random.Generator) -> Swap:
    """The same swap with random features active on the recipient or donor prompt."""
    acts = [runs.acts[row] for row in (swap.recipient, swap.donor)]
    pick = random_features(
        acts, {*swap.removed, *swap.added}, len(swap.removed) + len(swap.added), rng
    )
    cut = min(len(swap.removed), len(pick))
    return Swap(swap.recipient, swap.donor, tuple(pick[:cut]), tuple(pick[cut:]))


def matched_swap(
    clt, runs: CityRuns, swap: Swap, form: str, rng: np.random.Generator
) -> tuple[Swap, float]:
    """The swap's matched random control (:func:`llmbio.studies.swaps.matched_random`): each
    member of either supernode replaced by a feature active on the recipient or donor prompt
    outside both, whose own edit in the same role and form changes the residual stream by about
    as much. Returns the control and its whole write norm over the swap's."""
    rec = runs.acts[swap.recipient]
    pool = sorted(active_features([rec, runs.acts[swap.donor]]) - {*swap.removed, *swap.added})
    # each feature's change depends only on its role, so one pass per role serves every subset
    every = tuple(dict.fromkeys([*swap.removed, *swap.added, *pool]))
    writes = {
        role: Writes(clt, rec, swap_edits(runs, _with(swap, *one), form))
        for role, one in (("removed", (every, ())), ("added", ((), every)))
    }

    def norms(feats, role: str) -> dict:
        own = writes[role].own()
        return {f: own[f] for f in feats}

    def total(removed, added) -> float:
        if FORMS[form][0] == "copy":  # one edit: a member of both is copied once
            return writes["added"].norm(dict.fromkeys([*removed, *added]))
        scaled = [f for f in removed if f not in set(added)]  # the injection overrides
        vec = writes["removed"].vector(scaled) + writes["added"].vector(added)
        return float(np.linalg.norm(vec))

    # a feature of both supernodes keeps one stand-in; in the copy forms both roles are one edit
    if FORMS[form][0] == "copy":
        groups = [("added", tuple(dict.fromkeys([*swap.removed, *swap.added])))]
    else:
        extra = tuple(f for f in swap.added if f not in set(swap.removed))
        groups = [("removed", swap.removed), ("added", extra)]
    target = total(swap.removed, swap.added)
    pool_norms = {role: norms(pool, role) for role, _ in groups}
    member_norms = [norms(members, role) if members else {} for role, members in groups]
    best, ratio = None, float("nan")
    for _ in range(MATCH_DRAWS):  # the roles drawn together, the whole edit's norm compared
        stand_in: dict = {}
        for (role, members), own in zip(groups, member_norms, strict=True):
            if not members:
                continue
            taken = set(stand_in.values())
            rest = {f: v for f, v in pool_norms[role].items() if f not in taken}
            picks, _ = matched_random(own, rest, lambda c: 1.0, rng, draws=1)  # norm: below
            stand_in.update(picks)
        removed = tuple(stand_in[f] for f in swap.removed if f in stand_in)
        added = tuple(stand_in[f] for f in swap.added if f in stand_in)
        r = total(removed, added) / target if target > 0 else float("nan")
        if best is None or abs(np.log(r + 1e-12)) < abs(np.log(ratio + 1e-12)):
            best, ratio = (removed, added), r
    if best is None:
        return _with(swap, (), ()), ratio
    removed, added = best
    return _with(swap, tuple(removed), tuple(added)), ratio


def _with(swap: Swap, removed: tuple, added: tuple) -> Swap:
    return Swap(swap.recipient, swap.donor, removed, added, swap.positions, swap.held)


def complement_swap(runs: CityRuns, swap: Swap) -> Swap:
    """The swap's complement control: every other feature active on the recipient or donor
    prompt at the site's positions before the last (at the last, the answer's own features
    would be copied), moved in the same form, with both supernodes held at the recipient's own
    values from the city token on. Features the recipient has there take the removed role."""
    start, n = runs.starts[swap.recipient], runs.ids.shape[1]
    site = tuple(range(start, n - 1))
    rec, donor = runs.acts[swap.recipient], runs.acts[swap.donor]
    d_site = [runs.starts[swap.donor] + (p - start) for p in site]
    supernodes = {*swap.removed, *swap.added}
    feats = complement([rec[:, list(site)], donor[:, d_site]], supernodes, range(len(site)))
    own = active_features([rec], site)
    removed = tuple(f for f in feats if f in own)
    added = tuple(f for f in feats if f not in own)
    return Swap(swap.recipient, swap.donor, removed, added, site, tuple(sorted(supernodes)))
