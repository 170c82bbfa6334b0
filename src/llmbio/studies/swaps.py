"""Calibrated swaps: the one calibration loop of every study that swaps a supernode.

The paper's swaps (a few features, fixed multipliers) move few answers on a small organism, so
each swap study (multihop states, refusal requests, poem plans, multilingual operations,
operands and languages) treats the paper's edit as one cell of a grid and calibrates:

1. :func:`calibration_grid`: supernode sizes ``k`` ascending; at each ``k`` every *option* (the
   study's other axes: edit form, feature selection, edit site, direction) is tried on the
   calibration items only, and the grid stops after the first ``k`` at which an option
   reaches the success bar;
2. :func:`choose`: the smallest such ``k`` and its most successful option
   (:func:`best_calibration`), marked in the grid's ``chosen`` column;
3. the study runs the chosen edit on every item, each with a *control*: as many random
   features (:func:`random_features`), drawn among those active on the recipient or donor
   outside the supernodes, in the same form.

Controls matched to the chosen edit (a random control's features mostly have the same value on
recipient and donor, so copying them changes little, and its failure says little):

- *matched random* (:func:`matched_random`): as many features, in the same form at the same
  positions, each drawn among features whose own edit changes the residual stream by about as
  much as the member it stands for (:func:`feature_write_norms`: the norm of the decoder writes
  of the edit's first-order change of activation, :func:`activation_changes`); of several such
  draws, the one whose whole write change (:func:`write_norm`) is closest to the supernode's;
- *wrong donor* (:func:`same_class_donor`): the same edit with a donor of the recipient's own
  class, which should not change the answer;
- *complement* (:func:`complement`): every feature active at the site except the supernode.

What a study supplies are its pieces: how a supernode of size ``k`` is ranked, how an option's
edits are built and what counts as success on one item.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from llmbio.figures import FIGURE_SEED
from llmbio.interventions import Edit

Measure = Mapping[str, Any]
"""One grid cell's result: ``n_cases``, ``mean_features`` and ``success_rate``."""


def calibration_grid(
    sizes: Iterable[int],
    options: Sequence[Mapping[str, Any]],
    evaluate: Callable[..., Measure | None],
    bar: float,
    *,
    joint: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    whole_grid: bool = False,
    columns: Sequence[str] | None = None,
) -> pd.DataFrame:
    """One row ``{**option, "k": k, **evaluate(k, **option)}`` per size and option (sizes
    outer, in order; ``None`` from ``evaluate``: no row), stopping after the first size at
    which some row, or some row of ``joint(grid)`` (e.g. the weaker of two directions),
    reaches ``bar``; ``whole_grid`` runs every size anyway."""
    rows: list[dict] = []
    for k in sizes:
        for option in options:
            measure = evaluate(k, **option)
            if measure is not None:
                rows.append({**option, "k": k, **measure})
        grid = pd.DataFrame(rows)
        reached = (joint(grid) if joint is not None else grid).get("success_rate")
        if not whole_grid and reached is not None and reached.max() >= bar:
            break
    return pd.DataFrame(rows, columns=columns)


def best_calibration(grid: pd.DataFrame, bar: float) -> pd.Series:
    """The row a calibration keeps from ``grid`` (columns ``k``, ``success_rate`` and the
    alternatives tried at each ``k``, e.g. ``form``): the smallest ``k`` at which some row
    reaches ``bar``, its most successful one; if none does, the most successful row, smaller
    ``k`` first. Ties keep the grid's order."""
    ok = grid[grid["success_rate"] >= bar]
    if len(ok):
        return ok.sort_values(["k", "success_rate"], ascending=[True, False], kind="stable").iloc[0]
    return grid.sort_values(["success_rate", "k"], ascending=[False, True], kind="stable").iloc[0]


def choose(
    grid: pd.DataFrame, bar: float, axes: Sequence[str], among: pd.DataFrame | None = None
) -> pd.Series:
    """The chosen cell (:func:`best_calibration` of ``among``, default ``grid``); the grid's
    ``chosen`` column marks its rows: those equal to it on every one of ``axes``."""
    best = best_calibration(grid if among is None else among, bar)
    grid["chosen"] = functools.reduce(operator.and_, [grid[a] == best[a] for a in axes])
    return best


def random_features(
    acts: Iterable[torch.Tensor],
    exclude: Iterable[tuple[int, int]],
    n: int,
    rng: np.random.Generator,
) -> list[tuple[int, int]]:
    """A control's features: ``n`` (at most as many as there are) ``(layer, feature)`` drawn
    without replacement among those active after BOS in any of ``acts`` (``(L, n_pos, F)``
    each: the recipient's and the donor's activations) and not in ``exclude``."""
    active = set()
    for a in acts:
        active |= {(int(la), int(f)) for la, f in (a[:, 1:].amax(1) > 0).nonzero().tolist()}
    pool = sorted(active - set(exclude))
    n = min(n, len(pool))
    return [pool[i] for i in rng.choice(len(pool), size=n, replace=False)]


def plot_calibration(
    ax, grid: pd.DataFrame, hue: str = "form", bar: float = 0.9, style: str | None = None, **labels
):
    """Success rate against supernode size ``k`` (log2 axis), one line per ``hue`` (and
    ``style``, dashes); the chosen point (``chosen`` column) circled in red, the calibration's
    bar dashed. ``labels`` go to ``ax.set`` (xlabel, ylabel, title)."""
    import seaborn as sns

    sns.lineplot(data=grid, x="k", y="success_rate", hue=hue, style=style, marker="o", ax=ax,
                 seed=FIGURE_SEED)  # fmt: skip
    chosen = grid[grid["chosen"]]
    ax.scatter(chosen["k"], chosen["success_rate"], s=160, facecolors="none", edgecolors="red")
    ax.axhline(bar, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log", base=2)
    ax.set(ylim=(-0.02, 1.02), **{"xlabel": "supernode size k", **labels})


FeatureKey = tuple[int, int]
NORM_TOLERANCE = 0.25
"""A matched member's own write norm is within this factor of its supernode member's
(``1 / (1 + t)`` to ``1 + t``) where the pool has one; else the nearest the pool has."""
MATCH_DRAWS = 16  # draws of a matched control; the one closest in whole write norm is kept


def activation_changes(
    acts: torch.Tensor, edits: Sequence[Edit]
) -> tuple[list[FeatureKey], torch.Tensor]:
    """First-order change of each edited feature's activation: the features and their changes
    ``(K, n_pos)``, the edit's value minus the clean one (``acts``: ``(L, n_pos, F)``, the
    recipient's clean pass), zero where it is not edited; a later edit of the same feature and
    position wins. Features downstream of the edit also move in the edited pass; this is what
    the edit itself sets."""
    n_pos = acts.shape[1]
    index: dict[FeatureKey, int] = {}
    for edit in edits:
        for la, f in edit.features:
            index.setdefault((int(la), int(f)), len(index))
    out = torch.zeros(len(index), n_pos, dtype=torch.float64)
    for edit in edits:
        scale, offsets = edit.affine()
        positions = list(range(1, n_pos) if edit.positions is None else edit.positions)
        rows = torch.tensor([index[int(la), int(f)] for la, f in edit.features], dtype=torch.long)
        layers = torch.tensor([la for la, _ in edit.features], dtype=torch.long)
        feats = torch.tensor([f for _, f in edit.features], dtype=torch.long)
        pos = torch.tensor(positions, dtype=torch.long)
        clean = acts[layers[:, None], pos[None], feats[:, None]].double()  # (K, P)
        new = scale * clean + torch.tensor(offsets, dtype=torch.float64)[:, None]
        out[rows[:, None], pos[None]] = new - clean
    return list(index), out


class Writes:
    """The first-order decoder writes of some edits, feature by feature (``acts``: the
    recipient's clean pass ``(L, n_pos, F)``), so that the write norm of any subset of the
    edited features is one product: a feature's change of activation (:func:`activation_changes`)
    times its decoders, padded to every layer's MLP output, summed over the subset."""

    def __init__(self, clt, acts: torch.Tensor, edits: Sequence[Edit]):
        self.features, self.changes = activation_changes(acts, edits)  # (K, n_pos)
        self.index = {f: i for i, f in enumerate(self.features)}
        layers = np.array([la for la, _ in self.features], dtype=np.int64)
        ids = np.array([f for _, f in self.features], dtype=np.int64)
        self.changes = self.changes.numpy()
        self.decoders = _padded_decoders(clt)[layers, ids]  # (K, L * D)

    def vector(self, features: Iterable[FeatureKey]) -> np.ndarray:
        """The subset's write change ``(n_pos, L * D)``. numpy's einsum, not a BLAS product: a
        matched control draws thousands of these small products, and a threaded BLAS on busy
        cores spends ~100x their arithmetic waiting."""
        idx = [self.index[f] for f in features]
        return np.einsum("kp,kd->pd", self.changes[idx], self.decoders[idx])

    def norm(self, features: Iterable[FeatureKey] | None = None) -> float:
        """The subset's write norm (default: every edited feature)."""
        return float(np.linalg.norm(self.vector(self.features if features is None else features)))

    def own(self) -> dict[FeatureKey, float]:
        """Each feature's own write norm."""
        norms = np.linalg.norm(self.changes, axis=1) * np.linalg.norm(self.decoders, axis=1)
        return dict(zip(self.features, norms.tolist(), strict=True))


@functools.lru_cache(maxsize=1)
def _padded_decoders(clt) -> np.ndarray:
    """Every feature's decoders into every layer's MLP output, zero where it does not write,
    ``(L, F, L * D)`` float64 (a few MB for the organism's transcoder; the last transcoder's
    kept, so one whose weights change in place afterwards needs ``_padded_decoders.cache_clear``).
    """
    L, D = clt.n_layers, clt.d_model
    out = np.zeros((L, clt.n_features, L, D))
    for layer in range(L):
        w = clt.W_dec[layer].detach().double().cpu().numpy()  # (F, n_targets, D)
        out[layer][:, list(clt.target_layers(layer))] = w
    return out.reshape(L, clt.n_features, L * D)


def write_norm(clt, acts: torch.Tensor, edits: Sequence[Edit]) -> float:
    """L2 norm of the change the edits make to the residual stream through the transcoder's
    decoder writes (every target layer, every position), to first order."""
    return Writes(clt, acts, edits).norm()


def feature_write_norms(clt, acts: torch.Tensor, edits: Sequence[Edit]) -> dict[FeatureKey, float]:
    """Each edited feature's own :func:`write_norm`: its change's norm over positions times its
    concatenated decoder's norm."""
    return Writes(clt, acts, edits).own()


def matched_random(
    members: Mapping[FeatureKey, float],
    pool: Mapping[FeatureKey, float],
    total: Callable[[list[FeatureKey]], float],
    rng: np.random.Generator,
    *,
    tolerance: float = NORM_TOLERANCE,
    draws: int = MATCH_DRAWS,
) -> tuple[dict[FeatureKey, FeatureKey], float]:
    """A matched random control: for each supernode member (``members``: its own write norm,
    :func:`feature_write_norms`), in a random order, a feature of ``pool`` (features outside
    the supernodes, with their own write norms under the same edit) drawn among those within
    ``tolerance`` of it (else the nearest left), without replacement. Of ``draws`` such sets,
    the one whose ``total`` (its whole write norm, e.g. :func:`write_norm` of its edits) is
    closest in ratio to the supernode's. Returns each member's stand-in (fewer when the pool
    runs out) and that ratio (control / supernode; ``nan`` when the supernode's norm is zero).
    """
    names = list(pool)
    norms = np.array([pool[f] for f in names], dtype=float)
    target = total(list(members))
    best: dict[FeatureKey, FeatureKey] = {}
    best_ratio = float("nan")
    for _ in range(draws if names else 0):
        free = np.ones(len(names), dtype=bool)
        pick: dict[FeatureKey, FeatureKey] = {}
        for j in rng.permutation(len(members)):
            if not free.any():
                break
            m = list(members)[j]
            lo, hi = members[m] / (1 + tolerance), members[m] * (1 + tolerance)
            near = np.flatnonzero(free & (norms >= lo) & (norms <= hi))
            if len(near):
                i = int(rng.choice(near))
            else:
                gap = np.where(free, np.abs(np.log((norms + 1e-12) / (members[m] + 1e-12))), np.inf)
                i = int(gap.argmin())
            free[i] = False
            pick[m] = names[i]
        pick = {m: pick[m] for m in members if m in pick}
        ratio = total(list(pick.values())) / target if target > 0 else float("nan")
        if not best or abs(np.log(ratio + 1e-12)) < abs(np.log(best_ratio + 1e-12)):
            best, best_ratio = pick, ratio
    return best, best_ratio


def active_features(acts: Iterable[torch.Tensor], positions: Sequence[int] | None = None) -> set:
    """``(layer, feature)`` active in any of ``acts`` (``(L, n_pos, F)`` each) at ``positions``
    (default: every position after BOS)."""
    out = set()
    for a in acts:
        a = a[:, 1:] if positions is None else a[:, list(positions)]
        out |= {(int(la), int(f)) for la, f in (a.amax(1) > 0).nonzero().tolist()}
    return out


def complement(
    acts: Iterable[torch.Tensor], exclude: Iterable[FeatureKey], positions: Sequence[int]
) -> list[FeatureKey]:
    """A complement control's features: every ``(layer, feature)`` active in any of ``acts``
    (the recipient's and the donor's) at ``positions`` (the edit's site), except ``exclude``
    (the supernodes), sorted."""
    return sorted(active_features(acts, positions) - set(exclude))


def same_class_donor(
    recipient: str, classes: Mapping[str, str], donors: Iterable[str]
) -> str | None:
    """A wrong-donor control's donor: the first of ``donors`` (sorted) of the recipient's class
    (``classes``: item -> class, e.g. city -> state) other than the recipient; ``None`` if
    there is none."""
    same = sorted(d for d in donors if d != recipient and classes[d] == classes[recipient])
    return same[0] if same else None
