"""State supernodes found the paper's way (from graphs), scored against the world afterwards.

For each state, the two-hop prompt of one of its training cities (the city the swaps use as
the state's donor) is traced and pruned, and :func:`llmbio.features.graph_supernodes.
entity_groups` groups the features at the city token from the graph and the atlas alone; the
group with the most influence is the graph-derived state supernode (:func:`find_states`).

Only then do the world's labels come in (:func:`score_states`): the truth for state S is the
set of features labelled ``state=S`` with F1 >= :data:`TRUTH_MIN_F1` (the study's own rule for
its labelled state supernodes), counted among the graph's kept features; the contrast-ranked
supernode the swaps use is a second reference. The swap (:func:`swap_rows`) is the study's
calibrated swap (its form, its k, its (city, donor) pairs) with each state's graph-derived
supernode, top k by influence, in place of the contrast-ranked one.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbio.attribution.outputs import pruned_graph_tables
from llmbio.cases.multihop import swaps as ms
from llmbio.features import graph_supernodes as gs
from llmbio.features.supernodes import Supernode, select_features

TRUTH_MIN_F1 = 0.3  # as the study.yaml's labelled state supernodes


def find_states(model, clt, tok, prompt: str, cities: dict, examples: pd.DataFrame):
    """``(members, graphs)``: per state, the entity groups of its city's graph (``members``,
    one row per feature at the city token, ``chosen`` marks the state supernode) and the
    graph's kept features (``graphs``: state -> set of (layer, feature))."""
    frames, graphs = [], {}
    for state, city in sorted(cities.items()):
        nodes, _ = pruned_graph_tables(model, clt, tok, prompt.format(city=city))
        groups = gs.entity_groups(nodes, examples, decode=tok.convert_ids_to_tokens)
        node = gs.intermediate_group(groups)
        chosen = set(node.features) if node else set()
        keys = zip(groups["layer"], groups["feature"], strict=True)
        frames.append(groups.assign(state=state, city=city, chosen=[k in chosen for k in keys]))
        kept = nodes[(nodes["kind"] == "feature") & nodes["kept"]]
        graphs[state] = set(zip(kept["layer"], kept["feature"], strict=True))
    members = pd.concat(frames, ignore_index=True)
    members[["layer", "feature"]] = members[["layer", "feature"]].astype(int)
    return members, graphs


def supernodes(members: pd.DataFrame, k: int) -> dict[str, Supernode | None]:
    """Each state's graph-derived supernode, its top ``k`` by influence."""
    out = {}
    for state, g in members.groupby("state"):
        g = g[g["chosen"]].sort_values("influence", ascending=False).head(k)
        keys = list(zip(g["layer"], g["feature"], strict=True))
        out[state] = Supernode.make(f"graph_{state}", keys) if keys else None
    return out


def score_states(members, graphs, cities, label_scores, contrast: dict) -> pd.DataFrame:
    """Per state (``cities``: state -> the city whose graph was read): precision and recall of
    the graph-derived supernode against the labelled state features in the graph, and against
    the contrast-ranked supernode (``_contrast`` columns)."""
    rows = []
    for state, city in cities.items():
        g = members[(members["state"] == state) & members["chosen"]]
        found = set(zip(g["layer"], g["feature"], strict=True))
        rule = {"variable": "state", "value": state, "min_f1": TRUTH_MIN_F1}
        truth = select_features(label_scores, rule)
        ref = contrast.get(state)
        versus = gs.precision_recall(found, ref.features if ref else (), graphs[state])
        rows.append({
            "state": state, "city": city, **gs.precision_recall(found, truth, graphs[state]),
            **{f"{key}_contrast": v for key, v in versus.items()},
        })  # fmt: skip
    out = pd.DataFrame(rows)
    # nothing found is no correct feature found
    out["precision"] = out["precision"].fillna(0.0)
    out["precision_contrast"] = out["precision_contrast"].fillna(0.0)
    return out


def swap_rows(model, clt, tok, runs: ms.CityRuns, pairs: list[dict], form: str, held: set):
    """The study's swap on ``pairs`` (built with the graph-derived supernodes)."""
    probs = ms.swap_outcomes(model, clt, runs, [p["swap"] for p in pairs], form)
    rows = []
    for j, p in enumerate(pairs):
        want = tok.convert_tokens_to_ids(p["donor_capital"])
        rows.append({
            **{key: v for key, v in p.items() if key != "swap"}, "form": form,
            "split": "heldout" if p["city"] in held else "seen",
            "n_features": len(set(p["swap"].removed) | set(p["swap"].added)),
            "top_after": tok.convert_ids_to_tokens(int(probs[j].argmax())),
            "p_donor_capital": float(probs[j, want]), "success": int(probs[j].argmax()) == want,
        })  # fmt: skip
    cols = ["city", "state", "split", "donor_state", "donor_capital", "success"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def summary(graph_swap: pd.DataFrame, truth_swap: pd.DataFrame) -> pd.DataFrame:
    """One row per split and overall: swap success with each supernode and the gap."""
    rows = []
    for split in ("all", "seen", "heldout"):
        g, t = (s if split == "all" else s[s["split"] == split] for s in (graph_swap, truth_swap))
        ok_g = float(g["success"].mean()) if len(g) else 0.0
        ok_t = float(t["success"].mean()) if len(t) else 0.0
        rows.append({"split": split, "n_pairs": len(g), "success_graph": ok_g,
                     "n_pairs_ground_truth": len(t), "success_ground_truth": ok_t,
                     "gap": ok_t - ok_g})  # fmt: skip
    return pd.DataFrame(rows)


def draw(scores: pd.DataFrame, summary_table: pd.DataFrame):
    """Left: precision and recall per state against the contrast-ranked supernode (dots: the
    base rate), the labelled truth in the title; right: swap success by supernode and split."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[2, 1])
    measures = ["precision_contrast", "recall_contrast"]
    gs.plot_precision_recall(ax1, scores, "state", measures, "base_rate_contrast")
    ax1.set(ylim=(0, 1.05), xlabel="", ylabel="vs contrast supernode in the graph")
    ax1.tick_params(axis="x", rotation=60, labelsize=7)
    labelled = scores["recall"].dropna()
    ax1.set_title(
        f"Graph-derived state supernodes (mean {scores['n_found'].mean():.1f} features): vs "
        f"contrast precision {scores['precision_contrast'].mean():.2f}, recall "
        f"{scores['recall_contrast'].mean():.2f}\nvs labelled features (F1 >= {TRUTH_MIN_F1}): "
        f"{int(scores['n_truth'].sum())} in the graphs, precision "
        f"{scores['precision'].mean():.2f}, recall "
        + (f"{labelled.mean():.2f}" if len(labelled) else "undefined"),
        fontsize=8,
    )
    bars = summary_table.melt(id_vars="split", value_vars=["success_graph", "success_ground_truth"],
                              var_name="supernode", value_name="success")  # fmt: skip
    bars["supernode"] = bars["supernode"].map(
        {"success_graph": "graph-derived", "success_ground_truth": "contrast"}
    )
    sns.barplot(data=bars, x="split", y="success", hue="supernode", ax=ax2)
    ax2.legend(fontsize=7, loc="upper center", ncol=2)
    ax2.set(ylim=(0, 1.2), xlabel="", ylabel="swap success (donor capital on top)")
    ax2.set_title("The study's calibrated swap", fontsize=9)
    fig.tight_layout()
    return fig
