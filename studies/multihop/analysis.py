"""Multi-hop reasoning on the organism: city -> state -> capital, checked by interventions.

Tables (``tables/``): ``ablation`` (one row per city: P(capital) before/after scaling its
state supernode by -2), ``swap`` (one row per (city, donor state): the top token after the
city's state supernode is scaled by -2 and the donor state's supernode is injected at 2x its
donor activation), ``supernode_nodes`` / ``supernode_edges`` (the Dallas graph collapsed into
labelled supernodes), ``panel`` (the study file's declared interventions on the Dallas prompt).
Each state's supernode is found from ground truth by contrast, on training cities only:
the ``TOP_K`` features whose activation from the city token onwards (max over positions) is,
averaged over the state's training cities, furthest above its average for any other state.
Held-out cities then test whether those features carry the state for cities whose two-hop
question the model never saw. Nothing about which feature means what is written here.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from llmbio.attribution.plot import plot_supernode_graph
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.interventions import Edit, Intervener
from llmbio.stages.attribution import trace_prompt
from llmbio.studies import StudyContext
from llmbio.studies.experiments import (
    donor_max,
    load_label_scores,
    resolve_supernodes,
    run_interventions,
)
from llmbio.studies.generic import run_declared
from llmbio.tokenizer import encode
from llmbio.world import World
from llmbio.world.geography import TWO_HOP_PROMPT

N_DONORS = 3  # donor states tried per city
TOP_K = 8  # features per state supernode


def run(context: StudyContext) -> None:
    if context.family != "organism":  # released models: no ground truth, declared experiments
        return run_declared(context)
    model, tok, clt, world = context.load_organism()
    scores = load_label_scores(context.run_dir)
    nodes = resolve_supernodes(context.study, scores)
    states = contrast_supernodes(model, clt, tok, world)
    for name, state in (("state_texas", "Texas"), ("state_california", "California")):
        if states.get(state) is not None:
            nodes[name] = Supernode(name, states[state].features)
    context.save_table(members_table(states), "state_supernodes")
    ablation, swap = city_experiments(model, clt, tok, world, states)
    context.save_table(ablation, "ablation")
    context.save_table(swap, "swap")
    graph_tables(context, model, clt, tok, nodes)
    panel, _ = run_interventions(context.study, nodes, model, clt, tok)
    context.save_table(panel, "panel")
    context.draw_figure(
        "supernode_graph", draw_supernode_graph, ["supernode_nodes", "supernode_edges"]
    )
    context.draw_figure("intervention_panel", draw_panel, ["panel"])
    context.draw_figure("state_swap", draw_swap, ["swap"])
    context.draw_figure("ablation_by_split", draw_ablation, ["ablation"])


def contrast_supernodes(model, clt, tok, world: World) -> dict[str, Supernode | None]:
    geo = world.geography
    acts = {}
    for city in geo.train_cities():
        ids = encode(tok, TWO_HOP_PROMPT.format(city=city))
        pos = ids.index(tok.convert_tokens_to_ids(city))
        per_pos = Intervener(model, clt, torch.tensor(ids)).baseline.activations  # (L, n, F)
        acts[city] = per_pos[:, pos:].amax(dim=1).flatten()  # (L * F,)
    names = sorted(geo.states)
    means = torch.stack(
        [torch.stack([a for c, a in acts.items() if geo.city_state[c] == s]).mean(0) for s in names]
    )  # (S, L * F)
    out: dict[str, Supernode | None] = {}
    for i, state in enumerate(names):
        margin = means[i] - torch.cat([means[:i], means[i + 1 :]]).amax(0)
        top = margin.topk(TOP_K).indices
        top = top[margin[top] > 0]
        f = clt.n_features
        ids = [f"{int(j) // f}/{int(j) % f}" for j in top]
        out[state] = Supernode.make(f"state_{state}", ids) if ids else None
    return out


def members_table(states: dict) -> pd.DataFrame:
    rows = [
        {"state": s, "layer": la, "feature": f}
        for s, node in states.items()
        if node is not None
        for la, f in node.features
    ]
    return pd.DataFrame(rows, columns=["state", "layer", "feature"])


def city_experiments(model, clt, tok, world: World, states: dict):
    geo = world.geography
    held = set(geo.heldout_cities)
    names = sorted(geo.states)
    ablation, swap = [], []
    donor_cache: dict[str, torch.Tensor] = {}
    for city in sorted(geo.city_state):
        state = geo.city_state[city]
        capital = geo.states[state]["capital"]
        ids = torch.tensor(encode(tok, TWO_HOP_PROMPT.format(city=city)))
        runner = Intervener(model, clt, ids)
        base = runner.baseline.logits[-1].softmax(-1)
        cap_id = tok.convert_tokens_to_ids(capital)
        row = {
            "city": city,
            "state": state,
            "capital": capital,
            "split": "heldout" if city in held else "seen",
            "baseline_top": tok.convert_ids_to_tokens(int(base.argmax())),
            "p_baseline": float(base[cap_id]),
        }
        row["baseline_correct"] = row["baseline_top"] == capital
        node = states[state]
        row["n_members"] = len(node.features) if node else 0
        if node is None:
            ablation.append({**row, "p_ablated": float("nan"), "relative_drop": 0.0})
            continue
        ablate = Edit.scale_by(node, -2.0)
        after = runner.run([ablate]).logits[-1].softmax(-1)
        ablation.append(
            {
                **row,
                "p_ablated": float(after[cap_id]),
                "relative_drop": 1 - float(after[cap_id]) / row["p_baseline"],
                "ablated_top": tok.convert_ids_to_tokens(int(after.argmax())),
            }
        )
        i = names.index(state)
        for donor_state in (names[(i + k) % len(names)] for k in range(1, N_DONORS + 1)):
            swap.append(
                swap_row(
                    model, clt, tok, world, runner, ablate, states, donor_state, donor_cache, row
                )
            )
    return pd.DataFrame(ablation), pd.DataFrame(swap)


def swap_row(model, clt, tok, world, runner, ablate, states, donor_state, cache, row) -> dict:
    geo = world.geography
    donor_capital = geo.states[donor_state]["capital"]
    out = {
        **{k: row[k] for k in ("city", "state", "split")},
        "donor_state": donor_state,
        "donor_capital": donor_capital,
    }
    node = states[donor_state]
    if node is None:
        return {**out, "top_after": "", "p_donor_capital": 0.0, "success": False}
    if donor_state not in cache:
        donor_city = sorted(c for c in geo.train_cities() if geo.city_state[c] == donor_state)[0]
        donor_ids = torch.tensor(encode(tok, TWO_HOP_PROMPT.format(city=donor_city)))
        cache[donor_state] = donor_max(model, clt, donor_ids, node)
    # state features appear from the city token on; injecting them earlier is off-distribution
    start = runner.input_ids.tolist().index(tok.convert_tokens_to_ids(row["city"]))
    inject = Edit.inject(node, cache[donor_state], 2.0, positions=tuple(range(start, runner.n_pos)))
    probs = runner.run([ablate, inject]).logits[-1].softmax(-1)
    top = tok.convert_ids_to_tokens(int(probs.argmax()))
    p = float(probs[tok.convert_tokens_to_ids(donor_capital)])
    return {**out, "top_after": top, "p_donor_capital": p, "success": top == donor_capital}


def graph_tables(context: StudyContext, model, clt, tok, nodes: dict) -> None:
    prompt = next(p for p in context.prompts("organism") if p.id == "dallas")
    graphs = context.out_dir / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    trace_prompt(model, clt, tok, prompt.text, graphs, "dallas")
    g_nodes = pd.read_parquet(graphs / "dallas.nodes.parquet")
    g_edges = pd.read_parquet(graphs / "dallas.edges.parquet")
    groups = [n for n in nodes.values() if n.name in ("city_dallas", "state_texas")]
    sn_nodes, sn_edges = supernode_graph(g_nodes, g_edges, groups, keep_unassigned=False)
    context.save_table(sn_nodes, "supernode_nodes")
    context.save_table(sn_edges, "supernode_edges")


def draw_supernode_graph(sn_nodes: pd.DataFrame, sn_edges: pd.DataFrame):
    return plot_supernode_graph(sn_nodes, sn_edges, title="Dallas -> Texas -> Austin (organism)")


def draw_panel(panel: pd.DataFrame):
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    if panel.empty:
        fig.text(0.5, 0.5, "no declared intervention could run (empty supernodes)", ha="center")
        return fig
    act = panel[(panel["kind"] == "supernode") & (panel["condition"] == "intervened")]
    sns.barplot(data=act, x="experiment", y="percent_of_baseline", hue="name", ax=axes[0])
    axes[0].set(ylabel="activity, % of baseline", xlabel="")
    axes[0].axhline(100, color="grey", lw=0.8, ls="--")
    toks = panel[(panel["kind"] == "token") & (panel["rank"] <= 3)]
    toks = toks.assign(label=toks["condition"] + ": " + toks["name"].astype(str))
    sns.barplot(data=toks, x="probability", y="experiment", hue="label", ax=axes[1], orient="h")
    axes[1].set(xlabel="probability (top-3 tokens)", ylabel="")
    axes[1].legend(fontsize=6, loc="lower right")
    for ax in axes:
        ax.tick_params(axis="x", labelsize=7, labelrotation=20)
    fig.tight_layout()
    return fig


def draw_swap(swap: pd.DataFrame):
    if swap.empty:
        fig, ax = plt.subplots(figsize=(5, 2))
        ax.text(0.5, 0.5, "no state supernode: nothing to swap", ha="center")
        ax.set_axis_off()
        return fig
    grid = swap.pivot_table(index="state", columns="donor_state", values="success", aggfunc="mean")
    fig, ax = plt.subplots(figsize=(8, 6.5))
    sns.heatmap(
        grid,
        vmin=0,
        vmax=1,
        cmap="viridis",
        annot=True,
        fmt=".2f",
        ax=ax,
        annot_kws={"size": 6},
        cbar_kws={"label": "share: top token = donor capital"},
    )
    ax.set(xlabel="donor state (injected)", ylabel="recipient city's state (ablated)")
    ax.set_title(f"State swap: {swap['success'].mean():.0%} of {len(swap)} (city, donor) pairs")
    fig.tight_layout()
    return fig


def draw_ablation(ablation: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.stripplot(data=ablation, x="split", y="relative_drop", ax=ax, alpha=0.6)
    sns.pointplot(
        data=ablation,
        x="split",
        y="relative_drop",
        estimator="median",
        color="black",
        errorbar=None,
        ax=ax,
    )
    ax.set(ylabel="relative drop of P(capital)", xlabel="", ylim=(-0.05, 1.05))
    ax.set_title("State supernode x(-2)")
    fig.tight_layout()
    return fig
