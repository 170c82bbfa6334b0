"""Method check: summarise the faithfulness table (graphs/faithfulness.parquet) per graph.

The faithfulness rule (``llmbio.stages.attribution.faithfulness_graphs``) ablates sampled
features of every showcase graph on the real forward pass; this study only aggregates: one
row per (graph, sample) with the number of features, the Spearman correlation of predicted vs
real effect, and the share of features whose predicted and real effects have the same sign.
It reads no model, so it runs the same on the organism and on a released model.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from llmbio.studies import StudyContext

TARGET = 0.7


def run(context: StudyContext) -> None:
    table = pd.read_parquet(context.run_dir / "graphs" / "faithfulness.parquet")
    context.save_table(summarise(table), "spearman")
    context.draw_figure("spearman_by_graph", draw_spearman, ["spearman"])


def summarise(table: pd.DataFrame) -> pd.DataFrame:
    """``(graph, sample, n_features, spearman, same_sign)`` per graph and sample."""
    if "sample" not in table:  # a table written before the two samples existed
        table = table.assign(sample="all_active")
    same = np.sign(table["predicted_total"]) == np.sign(table["actual"])
    g = table.assign(same_sign=same).groupby(["graph", "sample"], sort=True)
    out = g.agg(
        n_features=("actual", "size"),
        spearman=("spearman", "first"),
        same_sign=("same_sign", "mean"),
    )
    return out.reset_index()


def draw_spearman(summary: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(7, 0.45 * summary["graph"].nunique() + 1.5))
    sns.barplot(data=summary, y="graph", x="spearman", hue="sample", orient="h", ax=ax)
    ax.axvline(TARGET, color="grey", ls="--", lw=0.8)
    ax.set(xlabel="Spearman (predicted vs real ablation effect)", ylabel="", xlim=(-1, 1))
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    return fig
