"""Figures of the arithmetic study, each drawn from its saved tables only.

Every function takes the DataFrames named in the study's ``figures`` and returns a Figure; an
empty table gives a figure that says why it is empty.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from llmbio.attribution.plot import plot_supernode_graph
from llmbio.figures import FIGURE_SEED

SWAP_COLUMNS = [
    "experiment", "a", "b", "sum", "target_sum", "delta", "answer", "success", "ones_changed",
    "tens_kept", "abs_error", "low_order_sum", "magnitude_sum", "random_sum", "period",
    "residue_follows_low_order", "near_magnitude", "base",
]  # fmt: skip
NODE_COLUMNS = ["name", "kind", "x", "y", "n_members", "influence", "total_activation"]
EDGE_COLUMNS = ["source", "target", "weight", "n_edges"]
KIND_ORDER = ["operand", "lookup", "sum", "modular", "unexplained"]
KIND_COLOURS = dict(zip(KIND_ORDER, sns.color_palette("colorblind", len(KIND_ORDER)), strict=True))


def _empty(text: str, size=(6, 2)):
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def operand_plots(table: pd.DataFrame):
    if table.empty:
        return _empty("no classified feature to plot")
    feats = table[["layer", "feature", "kind", "function"]].drop_duplicates()
    kinds = [k for k in KIND_ORDER if k in set(feats["kind"])]
    cols = int(feats.groupby("kind").size().max())
    fig, axes = plt.subplots(
        len(kinds), cols, figsize=(2.2 * cols, 2.3 * len(kinds)), squeeze=False
    )
    for ax in axes.flat:
        ax.set_axis_off()
    n = int(table["a"].max()) + 1
    heat = {key: g for key, g in table.groupby(["layer", "feature"], sort=False)}
    for i, kind in enumerate(kinds):
        for j, row in enumerate(feats[feats["kind"] == kind].itertuples()):
            cell = heat[(row.layer, row.feature)]
            grid = np.zeros((n, n))
            grid[cell["a"].to_numpy(), cell["b"].to_numpy()] = cell["activation"].to_numpy()
            ax = axes[i, j]
            ax.set_axis_on()
            ax.imshow(grid, origin="lower", cmap="magma", interpolation="nearest")
            ax.set_title(f"{row.layer}/{row.feature} {kind}\n{row.function}", fontsize=8)
            ax.set_xlabel("b", fontsize=7, labelpad=1)
            ax.set_ylabel("a", fontsize=7, labelpad=1)
            ax.tick_params(labelsize=6)
    fig.suptitle('Operand plots: activation at "=" of calc : a + b =')
    fig.tight_layout()
    return fig


def class_census(features: pd.DataFrame):
    if features.empty:
        return _empty("no feature is active at '=' on the a + b prompts")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    by_layer = pd.crosstab(features["layer"], features["kind"])
    by_layer = by_layer.reindex(columns=[k for k in KIND_ORDER if k in by_layer.columns])
    by_layer.plot.bar(stacked=True, ax=axes[0], color=[KIND_COLOURS[k] for k in by_layer.columns])
    axes[0].set(xlabel="layer", ylabel="features", title="Operand-plot class by layer")
    fns = features.assign(function=features["function"].replace("", "(none)"))
    counts = fns.groupby(["kind", "function"]).size().rename("n").reset_index()
    sns.barplot(
        data=counts, y="function", x="n", hue="kind", ax=axes[1], orient="h", dodge=False,
        palette=KIND_COLOURS, seed=FIGURE_SEED,
    )  # fmt: skip
    axes[1].set(xlabel="features", ylabel="", title="Winning function of (a, b)")
    fig.tight_layout()
    return fig


def supernode_figure(nodes: pd.DataFrame, edges: pd.DataFrame):
    if nodes.empty:
        return _empty("the 36 + 59 prompt is outside this world: no graph")
    return plot_supernode_graph(nodes, edges, title="calc : 36 + 59 = 95 (organism)")


def interventions(swaps: pd.DataFrame):
    if swaps.empty:
        return _empty("no prompt the model answers correctly: no transplant was run")
    swaps = swaps.assign(within_5=swaps["abs_error"] <= 5)
    other = swaps["base"] != 10  # the transplants in the organism's own base say which one
    swaps["experiment"] = swaps["experiment"].where(
        ~other, swaps["experiment"] + " (base " + swaps["base"].astype(str) + ")"
    )
    period = int(swaps["period"].iloc[0])
    fig, axes = plt.subplots(1, 2, figsize=(13, 4))
    panels = [
        (["success", "within_5", "tens_kept"],
         "success = answer is the target sum; tens kept: in the row's base"),
        (["residue_follows_low_order", "near_magnitude"],
         f"answer mod {period} = low-order source's; |answer - magnitude source| <= {period // 2}"),
    ]  # fmt: skip
    for ax, (columns, title) in zip(axes, panels, strict=True):
        table = swaps.groupby("experiment", sort=False)[columns].mean().reset_index()
        long = table.melt(id_vars="experiment", var_name="measure", value_name="share")
        sns.barplot(data=long, x="experiment", y="share", hue="measure", ax=ax, seed=FIGURE_SEED)
        ax.set(ylim=(0, 1.05), xlabel="", ylabel="share of prompts", title=title)
        ax.tick_params(axis="x", labelsize=8, labelrotation=20)
        ax.legend(fontsize=7)
    n = int(swaps.groupby("experiment").size().max())
    fig.suptitle(f"Transplants of feature groups at '=' ({n} prompts each)")
    fig.tight_layout()
    return fig


def ones_swap_by_delta(swaps: pd.DataFrame):
    ones = swaps[swaps["experiment"] == "ones_swap"] if not swaps.empty else swaps
    if ones.empty:
        return _empty("no ones swap was run")
    table = ones.groupby("delta").agg(success=("success", "mean"), n=("success", "size"))
    fig, ax = plt.subplots(figsize=(7, 3.4))
    ax.bar(table.index, table["success"], color="#4C72B0")
    for d, row in table.iterrows():
        ax.text(d, row["success"] + 0.02, f"n={int(row['n'])}", ha="center", fontsize=6)
    ax.set(xlabel="donor sum - recipient sum (same tens)", ylabel="success", ylim=(0, 1.1))
    ax.set_xticks(table.index)
    ax.set_title("Ones swap: low-order features from the donor, magnitude pinned")
    fig.tight_layout()
    return fig


def contexts(table: pd.DataFrame):
    top = table[table["top"] & (table["kind"] != "unexplained")] if not table.empty else table
    if top.empty:
        return _empty("no top feature to measure in other contexts")
    rates = top.melt(
        id_vars=["kind"], value_vars=["fire_counting", "fire_citation", "fire_baseline"],
        var_name="context", value_name="fire_rate",
    )  # fmt: skip
    rates["context"] = rates["context"].str.removeprefix("fire_")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    sns.barplot(data=rates, x="kind", y="fire_rate", hue="context", ax=axes[0], errorbar=None)
    axes[0].set(ylabel="share of tokens where it fires (mean over features)", xlabel="")
    sns.stripplot(
        data=top, x="kind", y="counting_corr", hue="kind", palette=KIND_COLOURS, ax=axes[1],
        alpha=0.7, legend=False,
    )  # fmt: skip
    axes[1].axhline(0, color="grey", lw=0.8)
    axes[1].set(ylabel="corr. with own operand plot at (x, step)", xlabel="",
                title="Counting runs: same function as in sums? (0: silent there)")  # fmt: skip
    fig.tight_layout()
    return fig
