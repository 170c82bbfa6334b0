"""Tables of the refusals study (``studies/refusals``) that need no model: the dialogues, the
contrast that picks supernode members, and per-pair / per-split summaries.

``prompts`` tables (one row per dialogue) carry ``harmful``, ``heldout``, ``kind`` (pair /
topic), ``pair`` (sorted ingredients joined by ``+``, or the topic), ``refused`` and one
activity column per supernode of :data:`NODES`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from llmbio.features.supernodes import Supernode, assign_nodes
from llmbio.tokenizer import UnknownTokenError, encode
from llmbio.world import World
from llmbio.world.safety import HARMFUL_TOPICS, HARMLESS_TOPICS, INGREDIENTS

REQUEST_WORDS = (*INGREDIENTS, *HARMFUL_TOPICS, *HARMLESS_TOPICS)

NODES = ("harmful_request", "harmless_request", "specific_harm")


def dialogue_table(world: World, tok) -> pd.DataFrame:
    """The world's refusal evaluation dialogues with token ids and the harm token's position."""
    rows = []
    for item in world.safety.eval_items():
        try:
            ids = encode(tok, item["prompt"])
        except UnknownTokenError:
            continue  # a small run's vocabulary may miss a word
        words = tok.convert_ids_to_tokens(ids)
        found = [w for w in words if w in INGREDIENTS]
        topic = next((w for w in words if w in HARMFUL_TOPICS + HARMLESS_TOPICS), None)
        rows.append({
            "prompt": item["prompt"], "split": item["split"], "harmful": bool(item["harmful"]),
            "heldout": item["split"].startswith("heldout"), "kind": "topic" if topic else "pair",
            "pair": topic or "+".join(sorted(found)), "harm_pos": harm_position(words),
            "n_tokens": len(ids), "ids": ids,
        })  # fmt: skip
    columns = ["prompt", "split", "harmful", "heldout", "kind", "pair", "harm_pos", "n_tokens",
               "ids"]  # fmt: skip
    return pd.DataFrame(rows, columns=columns)


def harm_position(words: list[str]) -> int:
    """The token that reveals the harm: the second ingredient, else the topic, else the last."""
    ingredients = [i for i, w in enumerate(words) if w in INGREDIENTS]
    if len(ingredients) >= 2:
        return ingredients[1]
    topics = [i for i, w in enumerate(words) if w in HARMFUL_TOPICS + HARMLESS_TOPICS]
    return topics[0] if topics else len(words) - 1


def contrast_top(pos: torch.Tensor, neg: torch.Tensor, k: int, n_features: int) -> list:
    """The ``k`` features (``(layer, feature)``) whose mean activation over ``pos`` ``(N, L*F)``
    exceeds that over ``neg`` the most, keeping only positive margins."""
    if len(pos) == 0 or len(neg) == 0:
        return []
    margin = pos.mean(0) - neg.mean(0)
    top = margin.topk(min(k, margin.numel())).indices
    return [(int(j) // n_features, int(j) % n_features) for j in top if margin[j] > 0]


def roc_auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(a random ``pos`` score > a random ``neg`` one), ties counting half; NaN if one is empty."""
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    diff = np.asarray(pos, float)[:, None] - np.asarray(neg, float)[None, :]
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def pairs_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """Per ingredient pair (or topic): ground truth, split, refusal rate, supernode activity."""
    if prompts.empty:
        return pd.DataFrame(columns=["kind", "pair", "harmful", "heldout", "n", "refusal_rate"])
    return (
        prompts.groupby(["kind", "pair", "harmful", "heldout"], as_index=False).agg(
            n=("refused", "size"),
            refusal_rate=("refused", "mean"),
            **{n: (n, "mean") for n in NODES},
        )  # fmt: skip
    )


def separation_table(prompts: pd.DataFrame) -> pd.DataFrame:
    """ROC AUC of each supernode's activity, harmful vs harmless, on seen and held-out items."""
    rows = []
    for heldout, split in ((False, "seen"), (True, "heldout")):
        part = prompts[prompts["heldout"] == heldout] if not prompts.empty else prompts
        for node in NODES:
            pos = part.loc[part["harmful"], node] if node in part else []
            neg = part.loc[~part["harmful"], node] if node in part else []
            rows.append({"split": split, "supernode": node, "n_harmful": len(pos),
                         "n_harmless": len(neg), "auc": roc_auc(pos, neg)})  # fmt: skip
    return pd.DataFrame(rows)


def graph_supernodes(g_nodes: pd.DataFrame | None, groups: list[Supernode]) -> pd.DataFrame:
    """Per supernode: members active in the graph (``n_active``) and kept by pruning."""
    rows = []
    owner = assign_nodes(g_nodes, groups) if g_nodes is not None else pd.Series(dtype=object)
    for name in NODES:
        mine = owner == name
        kept = int((mine & g_nodes["kept"]).sum()) if g_nodes is not None else 0
        rows.append({"supernode": name, "n_active": int(mine.sum()), "n_kept": kept})
    return pd.DataFrame(rows)


def graph_links(sn_nodes: pd.DataFrame, sn_edges: pd.DataFrame) -> pd.DataFrame:
    """Summed kept edge weight between supernodes and into the output logit (0 if none)."""
    kind = dict(zip(sn_nodes["name"], sn_nodes["kind"], strict=True))
    edges = sn_edges.assign(
        target=[("output" if kind.get(t) == "logit" else t) for t in sn_edges["target"]]
    )
    rows = []
    for src in NODES:
        for dst in (*NODES, "output"):
            if src != dst:
                hit = edges[(edges["source"] == src) & (edges["target"] == dst)]
                rows.append({"source": src, "target": dst, "weight": float(hit["weight"].sum())})
    return pd.DataFrame(rows)


def position_groups(
    g_nodes: pd.DataFrame, groups: list[Supernode], words: list[str]
) -> list[Supernode]:
    """Kept features outside ``groups``, grouped by position, so that the diagram also shows
    what the contrast supernodes miss: one group per ingredient or topic token ("bleach
    features") and one for the remaining features on the last token."""
    owner = assign_nodes(g_nodes, groups)
    free = g_nodes[(g_nodes["kind"] == "feature") & g_nodes["kept"] & owner.isna()]
    last = len(words) - 1
    named = {i: f"{w} features" for i, w in enumerate(words) if w in REQUEST_WORDS}
    named[last] = "other last-token features"
    out = []
    for pos, name in named.items():
        here = free[free["position"] == pos]
        keys = [f"{la}/{fe}" for la, fe in zip(here["layer"], here["feature"], strict=True)]
        if keys:
            out.append(Supernode.make(name, keys, positions=pos))
    return out
