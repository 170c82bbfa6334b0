"""The addition paths found the paper's way (from the 36+59 graph), scored against the operand
plots afterwards.

:func:`llmbio.features.graph_supernodes.answer_groups` sorts the pruned graph's features at "="
into ``low_order`` and ``magnitude`` by the numbers each promotes in the atlas, without the
operand plots. Then (:func:`score_paths`) each group is scored against the study's classes of
the same features (the ``path`` of the operand-plot census), among the graph's features at
"="; and the study's base-P transplants (same plan, same form: the group set to the donor's
values at "=") run with the graph-derived groups in place of the census ones
(:func:`summary` puts both side by side).
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbio.features import graph_supernodes as gs

PATHS = ("low_order", "magnitude")


def score_paths(found: pd.DataFrame, census: pd.DataFrame) -> pd.DataFrame:
    """Per path: precision and recall of the graph-derived group against the census's."""
    universe = set(zip(found["layer"], found["feature"], strict=True))
    rows = []
    for path in PATHS:
        mine = found[found["path"] == path]
        truth = census[census["path"] == path]
        rows.append({"path": path, **gs.precision_recall(
            zip(mine["layer"], mine["feature"], strict=True),
            zip(truth["layer"], truth["feature"], strict=True), universe)})  # fmt: skip
    out = pd.DataFrame(rows)
    out["precision"] = out["precision"].fillna(0.0)  # nothing found is no correct feature found
    return out


def summary(graph_swaps: pd.DataFrame, truth_swaps: pd.DataFrame) -> pd.DataFrame:
    """Per experiment: success with the graph-derived groups and with the census's, and the
    gap (census minus graph)."""
    rows = []
    for exp, g in graph_swaps.groupby("experiment", sort=False) if len(graph_swaps) else ():
        t = truth_swaps[truth_swaps["experiment"] == exp]
        ok_g, ok_t = float(g["success"].mean()), float(t["success"].mean()) if len(t) else 0.0
        rows.append({"experiment": exp, "n_prompts": len(g), "success_graph": ok_g,
                     "n_prompts_ground_truth": len(t), "success_ground_truth": ok_t,
                     "gap": ok_t - ok_g})  # fmt: skip
    cols = ["experiment", "n_prompts", "success_graph", "success_ground_truth", "gap"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def draw(scores: pd.DataFrame, summary_table: pd.DataFrame):
    """Left: precision and recall per path (dots: the base rate); right: transplant success
    by groups."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.6))
    gs.plot_precision_recall(ax1, scores, "path", ["precision", "recall"], "base_rate")
    ax1.set(ylim=(0, 1.05), xlabel="", ylabel='vs operand-plot classes at "="')
    ax1.set_title("Paths read off the 36+59 graph and the atlas", fontsize=9)
    if summary_table.empty:  # no 36+59 graph or no transplant plan in this world
        ax2.text(0.5, 0.5, "no transplant run", ha="center")
        ax2.set_axis_off()
        fig.tight_layout()
        return fig
    values = ["success_graph", "success_ground_truth"]
    bars = summary_table.melt("experiment", values, var_name="groups", value_name="success")
    bars["groups"] = bars["groups"].map(
        {"success_graph": "graph-derived", "success_ground_truth": "operand plots"}
    )
    sns.barplot(data=bars, x="experiment", y="success", hue="groups", ax=ax2)
    ax2.legend(fontsize=7, loc="upper center", ncol=2)
    ax2.set(ylim=(0, 1.2), xlabel="", ylabel="answer = donor's sum")
    ax2.set_title("Same transplants, graph-derived vs operand-plot groups", fontsize=9)
    fig.tight_layout()
    return fig
