"""Planning in poems on the organism: the end word of line 2 is chosen at the newline.

The experiments live in :mod:`llmbio.cases.poems.experiment`; this file sets their parameters, draws
the graph and the figures. Tables (``tables/``):

- ``couplets``: every couplet prompt with the organism's greedy line 2 (``planned``: its end
  word; ``rhymes``: another word of line 1's family);
- ``planned_supernodes``: the contrast supernodes found on the discovery prompts (every line
  form but the last): per planned word (``word``) and rhyme family (``family``) at the
  newline, per line-1 end word at its own position; each member's best ground-truth label;
- ``suppression``: per held-out couplet, line 2 after the planned word's supernode is scaled
  by ``ABLATE`` at the newline;
- ``strength`` / ``injection``: per held-out couplet and a planned word of another family,
  line 2 after the couplet's own plan (word + family supernode) is scaled by ``ABLATE`` and
  the injected word's plan is set to ``multiplier`` x its donor activation at the newline;
  ``injection`` holds the rows at ``INJECT``;
- ``swap_calibration`` / ``injection_calibrated``: the swap's supernode size, feature selection
  (contrast or effect) and edit form calibrated on discovery couplets
  (:mod:`llmbio.cases.poems.swaps`, as in the multihop, refusal and multilingual studies),
  then run on the held-out line form beside a random-feature control;
- ``position_sweep`` / ``position_summary`` / ``position_contrast``: that injection at one
  position at a time (line 1's tokens and the newline), and a control that transplants every
  feature a donor couplet has at that position;
- ``examples``; ``graph_nodes`` / ``graph_edges`` / ``graph_members`` (the couplet graph);
  ``panel`` (the declared interventions of study.yaml).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import pandas as pd

from llmbio.attribution.outputs import trace_prompt
from llmbio.attribution.plot import plot_supernode_graph
from llmbio.cases.poems.experiment import PoemExperiment, Settings
from llmbio.cases.poems.planning import (
    LINE1_START,
    couplets,
    line_length,
    position_contrast,
    position_summary,
)
from llmbio.cases.poems.swaps import (
    SUCCESS_BAR,
    calibrate,
    calibrated_injection,
    discovery_effects,
)
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.studies import StudyContext
from llmbio.studies.experiments import (
    load_label_scores,
    resolve_supernodes,
    run_interventions,
)
from llmbio.studies.generic import run_declared
from llmbio.studies.swaps import plot_calibration

# Fixed before any measurement on the held-out couplets (multihop's values: 8 features per
# supernode, own plan x-2, donor plan at 2x its activation).
TOP_K = 8
ABLATE = -2.0
INJECT = 2.0
PAPER_INJECTION = 0.7  # the paper's injection success over 25 poems (the claims' threshold)
STRENGTHS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)  # injection multipliers of the strength sweep
N_SWEEP = 25  # couplets in the position sweep (the paper's 25 poems)
SHOWCASE = ("habit", "night")  # line-1 end words of the example couplets (form 0)
SHOWCASE_INJECT = "screen"  # injected in the examples (the paper's "green": same rhyme)
DECLARED = {  # study.yaml supernode -> (kind, planned word) found by contrast
    "rabbit_word": ("word", "rabbit"),
    "rabbit_plan": ("plan", "rabbit"),
    "screen_plan": ("plan", "screen"),
}


def run(context: StudyContext) -> None:
    if context.family != "organism":  # released models: no ground truth, declared experiments
        return run_declared(context)
    start = time.perf_counter()
    model, tok, clt, world = context.load_organism()
    poetry = world.poetry
    settings = Settings(TOP_K, ABLATE, INJECT, line_length(poetry))
    exp = PoemExperiment(model, clt, tok, poetry, couplets(poetry, tok), settings)
    context.save_table(exp.table, "couplets")
    scores = load_label_scores(context.run_dir)
    context.save_table(exp.supernode_table(scores), "planned_supernodes")
    context.save_table(exp.suppression(), "suppression")
    strength = exp.injection(STRENGTHS)
    context.save_table(strength, "strength")
    injection = strength[strength["multiplier"] == INJECT]
    context.save_table(injection, "injection")
    effects = discovery_effects(exp)
    grid, chosen = calibrate(exp, effects)
    context.save_table(grid, "swap_calibration")
    context.save_table(calibrated_injection(exp, scores=effects, **chosen), "injection_calibrated")
    sweep = exp.position_sweep(injection.head(N_SWEEP), LINE1_START)
    context.save_table(sweep, "position_sweep")
    summary = position_summary(sweep)
    context.save_table(summary, "position_summary")
    context.save_table(position_contrast(summary), "position_contrast")
    context.save_table(exp.examples(SHOWCASE, SHOWCASE_INJECT), "examples")
    graph_tables(context, exp)
    nodes = resolve_supernodes(context.study, scores)
    nodes.update(exp.named_nodes(DECLARED))
    panel, _ = run_interventions(context.study, nodes, model, clt, tok)
    context.save_table(panel, "panel")
    draw_all(context)
    print(f"poems: analysis took {time.perf_counter() - start:.1f} s")


def graph_tables(context: StudyContext, exp: PoemExperiment) -> None:
    """The first showcase couplet's graph at the newline, collapsed into its supernodes."""
    t = exp.table
    hits = t.index[(t["first_word"] == SHOWCASE[0]) & (t["form"] == 0)]
    members, groups = [], []
    sn_nodes = pd.DataFrame(columns=["name", "kind", "x", "y", "n_members"])
    sn_edges = pd.DataFrame(columns=["source", "target", "weight", "n_edges"])
    if len(hits):
        i = int(hits[0])
        first, planned, nl = SHOWCASE[0], t["planned"][i], exp.cp.newline[i]
        family = exp.poetry.family_of(planned) if planned else None
        word = [k for k, _ in exp.words.get(planned) or []]
        fam = [k for k, _ in exp.families.get(family) or [] if k not in word]  # a node, one group
        for role, name, found, pos in (
            ("line-1 end word", f'line 1 ends "{first}"', exp.first_words.get(first), nl - 2),
            ("planned word", f'planned "{planned}"', [(k, 0) for k in word], nl),
            ("rhyme family", f'family "-{family}"', [(k, 0) for k in fam], nl),
        ):
            feats = [f"{la}/{f}" for (la, f), _ in found or []]
            members.append({"role": role, "name": name, "n_features": len(feats)})
            if feats:
                groups.append(Supernode.make(name, feats, None, pos))
        graphs = context.out_dir / "graphs"
        trace_prompt(
            exp.model,
            exp.clt,
            exp.tok,
            t["text"][i],
            graphs,
            "couplet",
            save_graph=False,
            scan=context.scan,
        )
        g_nodes = pd.read_parquet(graphs / "couplet.nodes.parquet")
        g_edges = pd.read_parquet(graphs / "couplet.edges.parquet")
        if groups:
            sn_nodes, sn_edges = supernode_graph(g_nodes, g_edges, groups, keep_unassigned=False)
    counts = dict(zip(sn_nodes["name"], sn_nodes["n_members"], strict=True))
    found = pd.DataFrame(members, columns=["role", "name", "n_features"])
    found["n_in_graph"] = [int(counts.get(n, 0)) for n in found["name"]]
    context.save_table(found, "graph_members")
    context.save_table(sn_nodes, "graph_nodes")
    context.save_table(sn_edges, "graph_edges")


def draw_all(context: StudyContext) -> None:
    context.draw_figure("couplet_graph", draw_graph, ["graph_nodes", "graph_edges"])
    context.draw_figure("examples", draw_examples, ["examples"])
    context.draw_figure("outcomes", draw_outcomes, ["suppression", "injection"])
    context.draw_figure("success_rates", draw_rates, ["suppression", "injection"])
    context.draw_figure("strength", draw_strength, ["strength"])
    context.draw_figure(
        "calibrated_swap", draw_calibrated, ["swap_calibration", "injection_calibrated"]
    )
    context.draw_figure("position_sweep", draw_positions, ["position_summary"])


def _empty(text: str, size=(6, 2)):
    fig, ax = plt.subplots(figsize=size)
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def draw_graph(nodes: pd.DataFrame, edges: pd.DataFrame):
    if nodes.empty:
        return _empty("no couplet graph: the showcase prompt is missing or has no supernodes")
    linked = set(edges["source"]) | set(edges["target"])
    nodes = nodes[(nodes["kind"] != "token") | nodes["name"].isin(linked)].copy()
    # even spacing: the prompt's positions by rank, the outputs side by side above them
    logit = nodes["kind"] == "logit"
    rank = {x: r for r, x in enumerate(sorted(set(nodes.loc[~logit, "x"].round(2))))}
    nodes.loc[~logit, "x"] = [rank[x] * 1.6 for x in nodes.loc[~logit, "x"].round(2)]
    n_out = int(logit.sum())
    nodes.loc[logit, "x"] = nodes.loc[~logit, "x"].max() - 1.6 * (n_out - 1 - pd.RangeIndex(n_out))
    title = (
        f'Line 1 ends "{SHOWCASE[0]}": the plan at the newline -> line 2\'s first word (organism)'
    )
    return plot_supernode_graph(nodes, edges, title=title)


def draw_examples(examples: pd.DataFrame):
    if examples.empty:
        return _empty("no example couplet (showcase words missing from this world)")
    cols = ["line1", "condition", "edit", "line2"]
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(examples) + 0.6))
    ax.set_axis_off()
    cells = examples[cols].fillna("").astype(str).values.tolist()
    table = ax.table(
        cellText=cells,
        colLabels=["line 1", "condition", "edit", "line 2 (greedy)"],
        loc="center",
        cellLoc="left",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(8)
    table.auto_set_column_width(list(range(len(cols))))
    ax.set_title("Second lines under interventions at the newline", fontsize=10)
    return fig


def draw_outcomes(suppression: pd.DataFrame, injection: pd.DataFrame):
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, df, title in (
        (axes[0], suppression, f"suppress planned word (x{ABLATE:g})"),
        (axes[1], injection, f"inject another family's word ({INJECT:g}x)"),
    ):
        if df.empty:
            ax.text(0.5, 0.5, "no couplet with a supernode", ha="center")
            ax.set_axis_off()
            continue
        share = df["outcome"].value_counts(normalize=True).sort_values()
        ax.barh(share.index, share.to_numpy(), color="#5B8DB8")
        ax.set(xlim=(0, 1), xlabel=f"share of {len(df)} held-out couplets", title=title)
    fig.tight_layout()
    return fig


def draw_rates(suppression: pd.DataFrame, injection: pd.DataFrame):
    rates = {
        "suppression:\nends in another\nword of the rhyme": suppression["other_family_word"],
        "injection:\nends in the\ninjected word": injection["success"],
    }
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    names = list(rates)
    values = [float(v.mean()) if len(v) else 0.0 for v in rates.values()]
    ax.bar(names, values, color=["#8FB996", "#5B8DB8"])
    for x, (v, s) in enumerate(zip(values, rates.values(), strict=True)):
        ax.text(x, v + 0.02, f"{v:.0%} (n={len(s)})", ha="center", fontsize=8)
    ax.axhline(PAPER_INJECTION, color="grey", ls="--", lw=0.8)
    ax.text(1.45, PAPER_INJECTION + 0.01, "paper: 70%", fontsize=7, ha="right", color="grey")
    ax.set(ylim=(0, 1.05), ylabel="share of held-out couplets")
    fig.tight_layout()
    return fig


def draw_calibrated(grid: pd.DataFrame, injection: pd.DataFrame):
    if grid.empty or injection.empty or not grid["n_cases"].any():
        return _empty("no swap pairs (no planned-word supernodes)")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), width_ratios=[3, 2])
    c = grid[grid["chosen"]].iloc[0]
    plot_calibration(axes[0], grid, hue="form", style="selection", bar=SUCCESS_BAR,
                     ylabel="swap success (discovery couplets)",
                     title=f"Calibration: chosen {c['selection']} / {c['form']}, k={c['k']} "
                           "(red)")  # fmt: skip
    axes[0].legend(fontsize=6, ncol=2)
    outcomes = [injection["success"].astype(float), injection["control_success"]]
    rates = [0.0 if pd.isna(o.mean()) else float(o.mean()) for o in outcomes]
    axes[1].bar(["chosen swap", "random features"], rates, color=["#5B8DB8", "#BBBBBB"])
    for x, (v, o) in enumerate(zip(rates, outcomes, strict=True)):
        axes[1].text(x, v + 0.02, f"{v:.0%} (n={o.count()})", ha="center", fontsize=8)
    axes[1].axhline(PAPER_INJECTION, color="grey", ls="--", lw=0.8)
    axes[1].set(ylim=(0, 1.05), ylabel="held-out couplets ending in the injected word")
    fig.tight_layout()
    return fig


def draw_strength(strength: pd.DataFrame):
    if strength.empty:
        return _empty("no injection pairs (no planned-word supernodes)")
    g = strength.groupby("multiplier").agg(p=("p_injected_end", "mean"), s=("success", "mean"))
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(g.index, g["p"], marker="o", label="mean P(injected word at line end)")
    ax.plot(g.index, g["s"], marker="s", label="share ending in the injected word")
    ax.axvline(INJECT, color="grey", ls=":", lw=0.8)
    ax.set(xscale="log", ylim=(-0.02, 1.02), xlabel="injection multiplier (x donor activation)")
    ax.legend(fontsize=7)
    ax.set_title(f"Injection strength ({strength.groupby('multiplier').size().iloc[0]} couplets)")
    fig.tight_layout()
    return fig


def draw_positions(summary: pd.DataFrame):
    if summary.empty:
        return _empty("no position sweep (no injection pairs)")
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for variant, df in summary.groupby("variant", sort=True):
        ax.plot(df["position"], df["mean_p_injected"], marker="o", label=variant)
    first = summary.drop_duplicates("position").sort_values("position")
    ax.set_xticks(first["position"])
    pairs = zip(first["token"], first["role"], strict=True)
    ticks = [r if "/" in t else f"{t!r}"[1:-1] for t, r in pairs]
    ax.set_xticklabels(ticks, rotation=30, fontsize=7)
    ax.set(
        ylim=(-0.02, 1.02),
        ylabel="mean P(injected word at line end)",
        xlabel="position of the injection (tokens of the prompt)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
