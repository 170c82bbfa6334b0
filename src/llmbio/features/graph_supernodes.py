"""Supernodes read off a pruned attribution graph and the feature atlas, without ground truth.

The paper's researchers group a graph's features by hand: they look where a feature sits in
the graph (token position, layer, influence on the output), read its top activating dataset
examples and what it promotes, and put together features that share a role. This module does
that by a fixed rule, so that the world's ground truth can score it afterwards. It reads only
these columns, and nothing else (no labels, no label scores, no contrasts between prompts):

- the pruned graph's node table (:mod:`llmbio.attribution.export`): ``kind``, ``layer``,
  ``position``, ``feature``, ``token``, ``influence``, ``kept`` (:data:`NODE_COLUMNS`);
- the atlas's top examples (:mod:`llmbio.features.atlas`, ``examples.parquet``): ``layer``,
  ``feature``, ``token_id`` / ``token`` (the token each example fires on) and
  ``context_ids`` (its window);
- the atlas's top output logits (``logits.parquet``): ``layer``, ``feature``, ``direction``,
  ``rank``, ``token``.

Two rules, one per kind of circuit:

**Entity groups** (:func:`entity_groups`, the multi-hop "Dallas -> Texas" supernode). The
candidates are the kept features at the *entity position*: the prompt position before the last
whose kept features carry the most influence in total (or a position given by the caller).

1. A candidate whose top examples fire on the prompt's own token at that position in at least
   :data:`OWN_TOKEN_SHARE` of cases is a *token* feature (the entity itself: "Dallas").
2. The other candidates are *group* features. Each one's signature is the set of distinct
   tokens its top examples fire on, the prompt's own token left out (every candidate is
   active on it, so sharing it says nothing). Two group features are linked when the Jaccard
   overlap of their signatures is at least :data:`MIN_JACCARD`; the groups are the connected
   components (single linkage). A group's name is its *theme*: the token most
   over-represented in its members' example windows relative to all atlas examples (e.g. a
   state's name or capital).
3. :func:`intermediate_group` picks the group with the largest summed influence: the
   intermediate entity's supernode ("Texas"). Its members are ranked by influence.

**Answer groups** (:func:`answer_groups`, the addition paths). The candidates are the kept
features at the last position (where the answer is produced). Each one's promoted numbers are
the tokens among its top :data:`N_LOGITS` output logits that read as non-negative integers; a
feature with fewer than :data:`MIN_NUMBERS` of them is ``other``. Then:

1. ``magnitude`` if a window of width :data:`BAND_WIDTH` holds at least :data:`MIN_SHARE` of
   its promoted numbers (it promotes a band of sums: "~92");
2. else ``low_order`` if, for some period m in :data:`PERIODS`, at least :data:`MIN_SHARE` of
   its promoted numbers share one residue mod m (the largest such m is its ``period``: "sum
   ends in 5");
3. else ``other``.

The constants were fixed before any of these groups was scored against ground truth.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable

import numpy as np
import pandas as pd

from llmbio.features.supernodes import FeatureKey, Supernode

NODE_COLUMNS = ["kind", "layer", "position", "feature", "token", "influence", "kept"]
EXAMPLE_COLUMNS = ["layer", "feature", "token_id", "token", "context_ids"]
LOGIT_COLUMNS = ["layer", "feature", "direction", "rank", "token"]
OWN_TOKEN_SHARE = 0.5  # a token feature fires on the prompt's own token this often
MIN_JACCARD = 0.2  # signature overlap that links two group features
N_LOGITS = 10  # top output logits read per feature
MIN_NUMBERS = 5  # ... of which at least this many must be numbers
BAND_WIDTH = 10  # a band of sums: max - min within this window
MIN_SHARE = 0.7  # share of promoted numbers in the band / in one residue class
PERIODS = range(3, 13)  # residues mod 2 are shared by chance half the time
_INTEGER = re.compile(r"^\s*\d+\s*$")

GROUP_COLUMNS = ["layer", "feature", "position", "influence", "role", "group", "theme"]


def _columns(table: pd.DataFrame, columns: list[str], name: str) -> pd.DataFrame:
    """The columns the rule reads, and only those (so no other column can steer it)."""
    missing = sorted(set(columns) - set(table.columns))
    if missing:
        raise ValueError(f"The {name} table lacks columns {missing}; pass the atlas's {name}.")
    return table[columns]


def _kept_features(nodes: pd.DataFrame) -> pd.DataFrame:
    nodes = _columns(nodes, NODE_COLUMNS, "graph node")
    return nodes[(nodes["kind"] == "feature") & nodes["kept"]]


def entity_position(nodes: pd.DataFrame) -> int | None:
    """The position before the last whose kept features carry the most influence in total
    (None if the pruned graph keeps no feature before the last position)."""
    feats = _kept_features(nodes)
    last = _columns(nodes, NODE_COLUMNS, "graph node")["position"].max()
    before = feats[feats["position"] < last]
    if before.empty:
        return None
    return int(before.groupby("position")["influence"].sum().idxmax())


def entity_groups(
    nodes: pd.DataFrame,
    examples: pd.DataFrame,
    position: int | None = None,
    decode: Callable[[int], str] | None = None,
) -> pd.DataFrame:
    """One row per kept feature at the entity position (:data:`GROUP_COLUMNS`): ``role``
    ``token`` / ``group``, ``group`` (component id, -1 for token features) and ``theme``
    (named with ``decode``, a token id -> text; without it, the atlas's own token texts)."""
    examples = _columns(examples, EXAMPLE_COLUMNS, "examples")
    feats = _kept_features(nodes)
    pos = entity_position(nodes) if position is None else int(position)
    if pos is None:
        return pd.DataFrame(columns=GROUP_COLUMNS)
    cand = feats[feats["position"] == pos].sort_values("influence", ascending=False)
    own = str(cand["token"].iloc[0]) if len(cand) else ""
    keys = pd.MultiIndex.from_arrays([cand["layer"], cand["feature"]])
    mine = examples[pd.MultiIndex.from_arrays([examples["layer"], examples["feature"]]).isin(keys)]
    by_feature = {key: g for key, g in mine.groupby(["layer", "feature"])}
    sigs, roles = [], []
    for la, f in zip(cand["layer"], cand["feature"], strict=True):
        ex = by_feature.get((la, f))
        tokens = ex["token"].astype(str).str.strip() if ex is not None else pd.Series([])
        share = float((tokens == own.strip()).mean()) if len(tokens) else 0.0
        roles.append("token" if share >= OWN_TOKEN_SHARE else "group")
        sigs.append(set(tokens) - {own.strip()})
    comp = _components([s if r == "group" else None for s, r in zip(sigs, roles, strict=True)])
    out = pd.DataFrame({
        "layer": cand["layer"].to_numpy(), "feature": cand["feature"].to_numpy(),
        "position": pos, "influence": cand["influence"].to_numpy(), "role": roles,
        "group": comp,
    })  # fmt: skip
    out["theme"] = _themes(out, examples, by_feature, decode)
    return out.reindex(columns=GROUP_COLUMNS)


def _components(signatures: list[set | None]) -> list[int]:
    """Single-linkage components of the signatures (Jaccard >= MIN_JACCARD); None -> -1."""
    parent = list(range(len(signatures)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, a in enumerate(signatures):
        for j in range(i):
            b = signatures[j]
            if a and b and len(a & b) / len(a | b) >= MIN_JACCARD:
                parent[root(i)] = root(j)
    ids: dict[int, int] = {}
    return [
        -1 if s is None else ids.setdefault(root(i), len(ids)) for i, s in enumerate(signatures)
    ]


def _window_counts(context_ids: pd.Series) -> Counter:
    """Token id -> number of windows holding it (each window counted once per token)."""
    if context_ids.empty:
        return Counter()
    ids = np.sort(np.stack(context_ids.to_numpy()), axis=1)  # (R, W)
    first = np.ones_like(ids, dtype=bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    tokens = ids[first & (ids >= 0)]
    values, counts = np.unique(tokens, return_counts=True)
    return Counter(dict(zip(values.tolist(), counts.tolist(), strict=True)))


def _themes(out: pd.DataFrame, examples: pd.DataFrame, by_feature: dict, decode) -> list[str]:
    """Per row, its group's most over-represented window token (token features: their own
    top token); lift = share of the group's examples whose window holds the token minus the
    share of all atlas examples whose window does."""
    base = _window_counts(examples["context_ids"])
    n_all = max(len(examples), 1)
    id_to_text = dict(zip(examples["token_id"], examples["token"].astype(str), strict=True))
    names: dict[int, str] = {}
    for gid, g in out[out["group"] >= 0].groupby("group"):
        member = [by_feature.get((la, f)) for la, f in zip(g["layer"], g["feature"], strict=True)]
        rows = [set(map(int, ids)) - {-1} for ex in member if ex is not None
                for ids in ex["context_ids"]]  # fmt: skip
        counts = Counter(t for w in rows for t in w)
        lift = {t: c / len(rows) - base[t] / n_all for t, c in counts.items()} if rows else {}
        best = max(lift, key=lambda t: (lift[t], -t)) if lift else None
        if best is not None:
            names[int(gid)] = decode(best) if decode else id_to_text.get(best, f"#{best}")
    themes = []
    for r in out.itertuples():
        if r.group >= 0:
            themes.append(names.get(int(r.group), ""))
        else:
            ex = by_feature.get((r.layer, r.feature))
            themes.append(str(ex["token"].mode().iloc[0]) if ex is not None else "")
    return themes


def intermediate_group(groups: pd.DataFrame, name: str = "intermediate") -> Supernode | None:
    """The group with the largest summed influence, members by influence (None if none)."""
    g = groups[groups["group"] >= 0]
    if g.empty:
        return None
    best = g.groupby("group")["influence"].sum().idxmax()
    members = g[g["group"] == best].sort_values("influence", ascending=False)
    return Supernode.make(name, _keys(members))


def answer_groups(nodes: pd.DataFrame, logits: pd.DataFrame) -> pd.DataFrame:
    """One row per kept feature at the last position: ``path`` (``magnitude``,
    ``low_order``, ``other``), ``period`` (0 unless low_order), ``n_numbers``, ``influence``."""
    logits = _columns(logits, LOGIT_COLUMNS, "logits")
    feats = _kept_features(nodes)
    cols = ["layer", "feature", "position", "influence", "path", "period", "n_numbers"]
    if feats.empty:
        return pd.DataFrame(columns=cols)
    last = int(_columns(nodes, NODE_COLUMNS, "graph node")["position"].max())
    cand = feats[feats["position"] == last].sort_values("influence", ascending=False)
    top = logits[(logits["direction"] == "top") & (logits["rank"] < N_LOGITS)]
    promoted = {
        key: g["token"].astype(str).tolist() for key, g in top.groupby(["layer", "feature"])
    }
    rows = []
    for la, f, infl in zip(cand["layer"], cand["feature"], cand["influence"], strict=True):
        numbers = [int(t) for t in promoted.get((la, f), []) if _INTEGER.match(t)]
        path, period = classify_numbers(numbers)
        rows.append({"layer": int(la), "feature": int(f), "position": last, "influence": infl,
                     "path": path, "period": period, "n_numbers": len(numbers)})  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def classify_numbers(numbers: list[int]) -> tuple[str, int]:
    """``(path, period)`` of a feature's promoted numbers (rule in the module docstring)."""
    if len(numbers) < MIN_NUMBERS:
        return "other", 0
    x = np.sort(np.asarray(numbers))
    need = int(np.ceil(MIN_SHARE * len(x)))
    # the narrowest window holding `need` numbers: x[i + need - 1] - x[i] over i
    if (x[need - 1 :] - x[: len(x) - need + 1]).min() <= BAND_WIDTH:
        return "magnitude", 0
    for m in sorted(PERIODS, reverse=True):
        if np.bincount(x % m, minlength=m).max() >= need:
            return "low_order", m
    return "other", 0


def answer_supernodes(groups: pd.DataFrame) -> dict[str, list[FeatureKey]]:
    """``{"low_order": [...], "magnitude": [...]}``: members by influence."""
    ranked = groups.sort_values("influence", ascending=False)
    return {p: _keys(ranked[ranked["path"] == p]) for p in ("low_order", "magnitude")}


def precision_recall(found, truth, universe) -> dict[str, float | int]:
    """Precision of ``found`` and recall of ``truth`` within ``universe`` (the features the
    finder could have picked: the pruned graph's); NaN where undefined. ``base_rate``: the
    share of the universe in the truth, the precision of a pick at random from it."""
    found, universe = set(found), set(universe)
    truth = set(truth) & universe
    hit = len(found & truth)
    return {
        "n_found": len(found), "n_truth": len(truth), "n_hit": hit,
        "precision": hit / len(found) if found else float("nan"),
        "recall": hit / len(truth) if truth else float("nan"),
        "base_rate": len(truth) / len(universe) if universe else float("nan"),
    }  # fmt: skip


def plot_precision_recall(ax, scores: pd.DataFrame, by: str, measures: list, base_rate: str):
    """Bars of ``measures`` (precision, recall columns) per ``by``, black dots at the
    ``base_rate`` column (undefined ones left out: a legend entry of only NaN points breaks
    matplotlib's layout)."""
    import seaborn as sns

    long = scores.melt(id_vars=by, value_vars=measures, var_name="measure")
    long["measure"] = long["measure"].str.replace("_contrast", "")
    sns.barplot(data=long, x=by, y="value", hue="measure", ax=ax)
    ok = scores[base_rate].notna().to_numpy()
    if ok.any():
        ax.scatter(np.flatnonzero(ok), scores.loc[ok, base_rate], color="black", s=12,
                   zorder=3, label="base rate")  # fmt: skip
    ax.legend(fontsize=7)


def _keys(table: pd.DataFrame) -> list[FeatureKey]:
    return [(int(la), int(f)) for la, f in zip(table["layer"], table["feature"], strict=True)]
