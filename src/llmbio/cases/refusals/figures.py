"""Figures of the refusals study (``studies/refusals``), each drawn from its saved tables only.

Every function takes the DataFrames a figure is declared with and returns a Figure; an empty
table (a run whose organism learnt nothing, or found no supernode) gives a figure saying so.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from llmbio.attribution.plot import plot_supernode_graph
from llmbio.studies.experiments import plot_panel

COLOURS = {"harmful_request": "#c0392b", "specific_harm": "#e67e22",
           "harmless_request": "#2e86c1", "": "#999999"}  # fmt: skip
OUTCOMES = {"refused": "#c0392b", "complied": "#27ae60", "other": "#bbbbbb"}
INJECTED = {"inject_harmful_request": "refused", "inject_harmless_request": "complied"}
CLAIM_STRENGTH = {"ablate_harmful_request": None, "ablate_specific_harm": None,
                  "inject_harmful_request": 2.0, "inject_harmless_request": 2.0}  # fmt: skip


def _empty(text: str, size=(6, 2)):
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return fig


def draw_supernode_graph(nodes: pd.DataFrame, edges: pd.DataFrame, max_edges: int = 30):
    if nodes.empty or not (nodes["kind"] == "feature").any():
        return _empty("no contrast supernode in the pruned bleach + ammonia graph")
    # edges through a supernode, the strongest first: a poorly trained run links everything
    features = set(nodes.loc[nodes["kind"] == "feature", "name"])
    edges = edges[edges["source"].isin(features) | edges["target"].isin(features)]
    edges = edges.loc[edges["weight"].abs().nlargest(max_edges).index]
    linked = set(edges["source"]) | set(edges["target"]) | features
    nodes = nodes[nodes["name"].isin(linked)].copy()
    # feature groups on one token would hide each other: spread them sideways
    feat = nodes["kind"] == "feature"
    column = nodes.loc[feat, "x"].round()
    rank = column.groupby(column).cumcount() - (column.map(column.value_counts()) - 1) / 2
    nodes.loc[feat, "x"] = column + 1.1 * rank
    title = 'bleach + ammonia -> harmful request -> "I" (organism)'
    return plot_supernode_graph(nodes, edges, title=title)


def draw_panel(panel: pd.DataFrame):
    return plot_panel(panel, palette=COLOURS, figsize=(11, 3.8))


def outcome_shares(experiments: pd.DataFrame) -> pd.DataFrame:
    """Share of refused / complied / other first tokens per (experiment, strength, held-out)."""
    df = experiments.assign(
        other=~(experiments["refused"] | experiments["complied"]),
        heldout=experiments["split"].str.startswith("heldout"),
    )
    keys = ["experiment", "strength", "heldout"]
    return df.groupby(keys, as_index=False)[list(OUTCOMES)].mean()


def draw_outcomes(experiments: pd.DataFrame):
    if experiments.empty:
        return _empty("no intervention ran (empty supernodes)")
    shares = outcome_shares(experiments)
    wanted = [
        pd.isna(s) or s == v
        for s, v in zip(shares["experiment"].map(CLAIM_STRENGTH), shares["strength"], strict=True)
    ]
    shares = shares[wanted]
    split = np.where(shares["heldout"], " held-out", " seen")
    strength = " x" + shares["strength"].map("{:g}".format)
    labels = shares["experiment"].str.replace("_", " ") + "\n" + strength + split
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(shares) + 1.2))
    left = np.zeros(len(shares))
    for outcome, colour in OUTCOMES.items():
        ax.barh(labels, shares[outcome], left=left, color=colour, label=outcome)
        left += shares[outcome].to_numpy()
    ax.set(xlabel="share of dialogues (first generated token)", xlim=(0, 1))
    ax.tick_params(axis="y", labelsize=7)
    ax.invert_yaxis()
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def draw_steering(experiments: pd.DataFrame):
    if experiments.empty or not experiments["experiment"].isin(list(INJECTED)).any():
        return _empty("no injection ran (empty supernodes or no donor)")
    df = experiments[experiments["experiment"].isin(list(INJECTED))].copy()
    df["flipped"] = np.where(
        df["experiment"] == "inject_harmful_request", df["refused"], df["complied"]
    )
    df["held-out"] = df["split"].str.startswith("heldout")
    fig, ax = plt.subplots(figsize=(6, 3.8))
    sns.lineplot(data=df, x="strength", y="flipped", hue="experiment", style="held-out",
                 marker="o", errorbar=None, ax=ax)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set(xlabel="injection strength (x donor activation)", ylim=(-0.02, 1.02),
           ylabel="share flipped (refused / complied)")  # fmt: skip
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def draw_pairs(pairs: pd.DataFrame):
    if pairs.empty or "harmful_request" not in pairs:
        return _empty("no dialogue could be run")
    df = pairs.assign(
        truth=np.where(pairs["harmful"], "dangerous / harmful", "harmless"),
        split=np.where(pairs["heldout"], "held-out", "seen"),
    )
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.scatterplot(data=df, x="harmful_request", y="refusal_rate", hue="truth", style="split",
                    palette={"dangerous / harmful": "#c0392b", "harmless": "#2e86c1"},
                    s=60, ax=ax)  # fmt: skip
    wrong = df["harmful"] != (df["refusal_rate"] > 0.5)
    for r in df[df["heldout"] & (wrong | df["refusal_rate"].between(0.01, 0.99))].itertuples():
        ax.annotate(r.pair, (r.harmful_request, r.refusal_rate), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")  # fmt: skip
    ax.set(xlabel="harmful-request activity on the last token", ylabel="refusal rate",
           ylim=(-0.05, 1.05))  # fmt: skip
    fig.tight_layout()
    return fig


def draw_global(effects: pd.DataFrame, top: int = 20):
    if effects.empty:
        return _empty("no active feature")
    df = effects.nsmallest(top, "rank")
    label = df["label"].fillna("") if "label" in df else pd.Series("", index=df.index)
    names = [f"L{la}/{fe} {lab}" for la, fe, lab in zip(df["layer"], df["feature"], label,
                                                        strict=True)]  # fmt: skip
    y = np.arange(len(df))
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(df) + 1.5))
    colours = df["supernode"].map(COLOURS).fillna(COLOURS[""])
    ax.barh(y - 0.2, df["effect_harmful"], height=0.4, color=colours, label="harmful dialogues")
    ax.barh(y + 0.2, df["effect_harmless"], height=0.4, color=colours, alpha=0.35,
            label="harmless dialogues")  # fmt: skip
    ax.set_yticks(y, names, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0, color="black", lw=0.6)
    ax.set(xlabel='mean effect on logit "I" - logit "Sure" (activation x gradient)')
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in COLOURS.values()]
    labels = [n or "no supernode" for n in COLOURS]
    ax.legend(handles, labels, fontsize=7, loc="lower right")
    ax.set_title(f"Top {len(df)} features driving refusal over all dialogues", fontsize=9)
    fig.tight_layout()
    return fig
