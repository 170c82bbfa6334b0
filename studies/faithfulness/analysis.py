"""Method check: summarise the faithfulness table (graphs/faithfulness.parquet) per graph.

The faithfulness rule (``llmbio.stages.attribution.faithfulness_graphs``) ablates sampled
features of every showcase graph on the real forward pass; this study only aggregates: one
row per (graph, sample, final_norm) with the number of features, the Spearman correlation of
predicted vs real effect, and the share of features whose predicted and real effects have the
same sign. ``final_norm == "frozen"`` rows repeat the pruned sample with the final norm's
denominator held at its clean value, as in the graph (a diagnostic; the claims read the real
model's rows). It reads no model, so it runs the same on the organism and on a released model.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from llmbio.figures import FIGURE_SEED
from llmbio.studies import StudyContext

TARGET = 0.7
HUE_ORDER = ["pruned_graph", "pruned_graph, final norm frozen", "all_active"]


def run(context: StudyContext) -> None:
    table = pd.read_parquet(context.run_dir / "graphs" / "faithfulness.parquet")
    context.save_table(summarise(table), "spearman")
    context.draw_figure("spearman_by_graph", draw_spearman, ["spearman"])


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """``(graph, sample, final_norm, n_features, spearman, same_sign)`` per graph and sample."""
    if "sample" not in table:  # a table written before the two samples existed
        table = table.assign(sample="all_active")
    if "final_norm" not in table:  # ... or before the frozen-final-norm diagnostic
        table = table.assign(final_norm="live")
    same = np.sign(table["predicted_total"]) == np.sign(table["actual"])
    keys = ["graph", "sample", "final_norm"]
    g = table.assign(same_sign=same).groupby(keys, sort=True)
    out = g.agg(
        n_features=("actual", "size"),
        spearman=("spearman", "first"),
        same_sign=("same_sign", "mean"),
    )
    return out.reset_index()


def draw_spearman(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 0.6 * summary["graph"].nunique() + 1.5))
    frozen = np.where(summary["final_norm"] == "frozen", ", final norm frozen", "")
    bars = summary.assign(sample=summary["sample"] + frozen)
    order = [h for h in HUE_ORDER if h in set(bars["sample"])]
    sns.barplot(
        data=bars,
        y="graph",
        x="spearman",
        hue="sample",
        hue_order=order,
        orient="h",
        ax=ax,
        seed=FIGURE_SEED,
    )
    ax.legend(
        title="", loc="upper center", bbox_to_anchor=(0.35, -0.12), ncols=len(order), fontsize=7
    )
    ax.axvline(TARGET, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="Spearman (predicted vs real ablation effect)", ylabel="", xlim=(-1, 1))
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig
