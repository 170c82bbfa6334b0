"""Multi-hop reasoning on the organism: city -> state -> capital, checked by interventions.

Tables (``tables/``): ``swap_calibration`` (swap success on training cities by supernode size
``k`` and swap form), ``state_supernodes`` (the calibrated supernodes' members), ``ablation``
(one row per city: P(capital) before/after scaling its state supernode by -2, with random-
feature controls), ``swap`` (one row per (city, donor state): the top token after the
calibrated swap, and after the same swap with random features), ``supernode_nodes`` /
``supernode_edges`` (the Dallas graph collapsed into labelled supernodes), ``panel`` (the study
file's declared interventions on the Dallas prompt); the paper's method tested blind
(:mod:`llmbio.cases.multihop.graph_derived`): ``graph_supernodes`` (per state, the features at
the city token of its donor city's graph, grouped without labels; ``chosen``: the state
supernode), ``graph_supernode_scores`` (their precision and recall against the labels and the
contrast supernode), ``graph_swap`` / ``graph_swap_summary`` (the calibrated swap with them);
controls matched to the calibrated swap (:func:`control_tables`): ``swap_controls`` (per pair:
matched random features and the complement), ``wrong_donor`` (per city: a donor of its own
state), ``control_by_k`` (the swap and its matched control at each calibrated size).

Each state's features are ranked by contrast on training cities only
(:mod:`llmbio.cases.multihop.swaps`). The ablation, the graph and the panel use the
paper-sized supernode: the ``TOP_K`` features furthest above every other state. The swap's size
and form are calibrated on training cities (recipients and donors), because the paper's form
(-2x, donor max at 2x) with 8 features moved few answers; the calibrated supernode is not used
for the ablation: -2x on that many features lowers P(capital) about as much with random
features (the ``_calibrated_control`` column), so it would say nothing about the state.
Held-out cities then test whether those features carry the state for cities whose two-hop
question the model never saw. Nothing about which feature means what is written here.
"""

from __future__ import annotations

import functools

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from llmbio.attribution.outputs import trace_prompt
from llmbio.attribution.plot import plot_supernode_graph
from llmbio.cases.multihop import graph_derived as gd
from llmbio.cases.multihop import swaps as ms
from llmbio.features import graph_supernodes as gs
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.interventions import Edit
from llmbio.interventions.batched import run_batch
from llmbio.studies import StudyContext
from llmbio.studies.experiments import (
    load_label_scores,
    plot_panel,
    resolve_supernodes,
    run_interventions,
)
from llmbio.studies.generic import run_declared
from llmbio.studies.swaps import calibration_grid, choose, plot_calibration, same_class_donor
from llmbio.world import World
from llmbio.world.geography import TWO_HOP_PROMPT

N_DONORS = 3  # donor states tried per city
TOP_K = 8  # features of the paper-sized state supernode (graph and panel)
SEED = 0  # random-feature controls
# The calibrated supernodes' ranking rule (llmbio.cases.multihop.swaps.state_rankings). The
# "max" rule (TOP_K's) keeps only 27-60 features per state on the organism, and its swaps
# succeeded on <= 26% of training pairs at any size and form during development.
CAL_RULE = "mean"


def run(context: StudyContext) -> None:
    if context.family != "organism":  # released models: no ground truth, declared experiments
        return run_declared(context)
    model, tok, clt, world = context.load_organism()
    scores = load_label_scores(context.run_dir)
    nodes = resolve_supernodes(context.study, scores)
    runs = ms.city_runs(model, clt, tok, sorted(world.geography.city_state), TWO_HOP_PROMPT)
    train = world.geography.train_cities()
    rankings = {r: ms.state_rankings(runs, world.geography.city_state, train, r) for r in ms.RULES}
    top8 = ms.supernodes(rankings["max"], TOP_K)  # the paper-sized supernode: graph and panel
    for name, state in (("state_texas", "Texas"), ("state_california", "California")):
        if top8.get(state) is not None:
            nodes[name] = Supernode(name, top8[state].features)
    grid, form, k = calibrate(model, clt, tok, world, runs, rankings[CAL_RULE])
    context.save_table(grid, "swap_calibration")
    states = ms.supernodes(rankings[CAL_RULE], k)
    context.save_table(members_table(states, CAL_RULE), "state_supernodes")
    context.save_table(ablation_table(model, clt, tok, world, runs, top8, states), "ablation")
    truth_swap = swap_table(model, clt, tok, world, runs, states, form)
    context.save_table(truth_swap, "swap")
    controls = control_tables(model, clt, tok, world, runs, (rankings[CAL_RULE], grid, form, k))
    for name, table in controls.items():
        context.save_table(table, name)
    graph_derived(context, model, clt, tok, world, runs, (scores, states, form, k, truth_swap))
    graph_tables(context, model, clt, tok, nodes)
    panel, _ = run_interventions(context.study, nodes, model, clt, tok)
    context.save_table(panel, "panel")
    context.draw_figure(
        "supernode_graph", draw_supernode_graph, ["supernode_nodes", "supernode_edges"]
    )
    context.draw_figure("intervention_panel", draw_panel, ["panel"])
    context.draw_figure("state_swap", draw_swap, ["swap"])
    context.draw_figure("ablation_by_split", draw_ablation, ["ablation"])
    context.draw_figure("swap_calibration", draw_calibration, ["swap_calibration"])
    context.draw_figure(
        "graph_supernodes", gd.draw, ["graph_supernode_scores", "graph_swap_summary"]
    )
    context.draw_figure("swap_controls_by_k", draw_controls_by_k, ["control_by_k"])


def graph_derived(context: StudyContext, model, clt, tok, world: World, runs, truth) -> None:
    """The paper's method, blind: each state's supernode read off the graph of its donor city
    (:mod:`llmbio.cases.multihop.graph_derived`), then scored against the labels and swapped as
    the contrast supernodes are (same form, k and pairs). ``truth``: the label scores, the
    contrast supernodes, the calibrated form and k, and their swap table."""
    scores, states, form, k, truth_swap = truth
    geo = world.geography
    train = geo.train_cities()
    donors = {s: min(c for c in train if geo.city_state[c] == s)
              for s in geo.states if any(geo.city_state[c] == s for c in train)}  # fmt: skip
    examples = pd.read_parquet(
        context.run_dir / "features" / "examples.parquet", columns=gs.EXAMPLE_COLUMNS
    )
    members, graphs = gd.find_states(model, clt, tok, TWO_HOP_PROMPT, donors, examples)
    context.save_table(members, "graph_supernodes")
    context.save_table(
        gd.score_states(members, graphs, donors, scores, states), "graph_supernode_scores"
    )
    found = gd.supernodes(members, k)
    pairs = swap_pairs(world, runs, {s: found.get(s) for s in geo.states}, runs.cities)
    graph_swap = gd.swap_rows(model, clt, tok, runs, pairs, form, set(geo.heldout_cities))
    context.save_table(graph_swap, "graph_swap")
    context.save_table(gd.summary(graph_swap, truth_swap), "graph_swap_summary")


def calibrate(model, clt, tok, world: World, runs: ms.CityRuns, ranking: dict):
    """Swap success of each (k, form) on training recipients and donors, k ascending; stops
    after the first k at which some form reaches ``ms.SUCCESS_BAR``. The choice: that k and its
    most successful form (else the best (k, form) of the grid). Held-out cities play no part.
    """
    train = world.geography.train_cities()

    @functools.cache
    def cases(k: int) -> tuple[list[dict], torch.Tensor]:
        pairs = swap_pairs(world, runs, ms.supernodes(ranking, k), train)
        return pairs, torch.tensor([tok.convert_tokens_to_ids(p["donor_capital"]) for p in pairs])

    def evaluate(k: int, rule: str, form: str) -> dict:
        pairs, want = cases(k)
        probs = ms.swap_outcomes(model, clt, runs, [p["swap"] for p in pairs], form)
        hits = (probs.argmax(-1) == want).float() if len(pairs) else torch.zeros(1)
        return {"n_cases": len(pairs), "mean_features": mean_size(pairs),
                "success_rate": float(hits.mean())}  # fmt: skip

    options = [{"rule": CAL_RULE, "form": form} for form in ms.FORMS]
    grid = calibration_grid(ms.K_GRID, options, evaluate, ms.SUCCESS_BAR)
    best = choose(grid, ms.SUCCESS_BAR, ["form", "k"])
    return grid, best["form"], int(best["k"])


def mean_size(pairs: list[dict]) -> float:
    sizes = [len(set(p["swap"].removed) | set(p["swap"].added)) for p in pairs]
    return float(np.mean(sizes)) if sizes else 0.0


def swap_pairs(world: World, runs: ms.CityRuns, nodes: dict, recipients) -> list[dict]:
    """(city, donor state) pairs: the next ``N_DONORS`` states; donor = a training city."""
    geo = world.geography
    names = sorted(geo.states)
    train = geo.train_cities()
    pairs = []
    for city in recipients:
        state = geo.city_state[city]
        i = names.index(state)
        for donor_state in (names[(i + k) % len(names)] for k in range(1, N_DONORS + 1)):
            donors = sorted(c for c in train if geo.city_state[c] == donor_state)
            if donor_state == state or not donors:
                continue
            removed, added = (nodes[s].features if nodes[s] else () for s in (state, donor_state))
            swap = ms.Swap(runs.index(city), runs.index(donors[0]), tuple(removed), tuple(added))
            pairs.append({
                "city": city, "state": state, "donor_state": donor_state,
                "donor_city": donors[0], "donor_capital": geo.states[donor_state]["capital"],
                "swap": swap,
            })  # fmt: skip
    return pairs


def members_table(nodes: dict, rule: str) -> pd.DataFrame:
    rows = [
        {"state": s, "rule": rule, "rank": r, "layer": la, "feature": f}
        for s, node in nodes.items()
        if node is not None
        for r, (la, f) in enumerate(node.features)
    ]
    return pd.DataFrame(rows, columns=["state", "rule", "rank", "layer", "feature"])


def ablation_table(model, clt, tok, world: World, runs, top8: dict, nodes: dict) -> pd.DataFrame:
    """Per city: P(capital) before and after its state supernode at -2x (all positions).

    ``relative_drop``: the paper-sized top-``TOP_K`` supernode (the claims'); ``_calibrated``:
    the swap's calibrated supernode; ``_control`` columns: as many random features active on
    the prompt (outside the supernode), the same edit.
    """
    geo = world.geography
    held = set(geo.heldout_cities)
    rng = np.random.default_rng(SEED)
    rows, edits = [], {key: [] for key in ("", "_control", "_calibrated", "_calibrated_control")}
    for i, city in enumerate(runs.cities):
        state = geo.city_state[city]
        capital = geo.states[state]["capital"]
        for suffix, node in (("", top8[state]), ("_calibrated", nodes[state])):
            feats = node.features if node else ()
            ctl = ms.control_swap(runs, ms.Swap(i, i, tuple(feats), ()), rng).removed
            for key, fs in ((suffix, feats), (f"{suffix}_control", ctl)):
                edit = Edit.scale_by(Supernode.make("ablate", fs), -2.0) if fs else None
                edits[key].append([edit] if edit else [])
        top = tok.convert_ids_to_tokens(runs.top[i])
        rows.append({
            "city": city, "state": state, "capital": capital,
            "split": "heldout" if city in held else "seen", "baseline_top": top,
            "baseline_correct": top == capital,
            "p_baseline": float(runs.probs[i, tok.convert_tokens_to_ids(capital)]),
            "n_members": len(top8[state].features) if top8[state] else 0,
            "n_members_calibrated": len(nodes[state].features) if nodes[state] else 0,
        })  # fmt: skip
    out = pd.DataFrame(rows)
    cap = torch.tensor([tok.convert_tokens_to_ids(c) for c in out["capital"]], dtype=torch.long)
    for key, chosen in edits.items():
        with torch.no_grad():
            probs = run_batch(model, clt, runs.ids, chosen).logits[:, -1].float().softmax(-1)
        p = probs[torch.arange(len(out)), cap].numpy()
        out[f"p_ablated{key}"] = p
        out[f"relative_drop{key}"] = 1 - p / out["p_baseline"].clip(lower=1e-12)
        out[f"ablated_top{key}"] = tok.convert_ids_to_tokens(probs.argmax(-1).tolist())
    return out


def swap_table(model, clt, tok, world: World, runs, nodes: dict, form: str) -> pd.DataFrame:
    """Every city x ``N_DONORS`` donor states, the calibrated swap and its random control."""
    held = set(world.geography.heldout_cities)
    pairs = swap_pairs(world, runs, nodes, runs.cities)
    rng = np.random.default_rng(SEED)
    swaps = [p["swap"] for p in pairs]
    controls = [ms.control_swap(runs, s, rng) for s in swaps]
    probs = ms.swap_outcomes(model, clt, runs, swaps + controls, form)
    rows = []
    for j, p in enumerate(pairs):
        want = tok.convert_tokens_to_ids(p["donor_capital"])
        top, c_top = (int(probs[j].argmax()), int(probs[len(pairs) + j].argmax()))
        rows.append({
            **{k: v for k, v in p.items() if k != "swap"}, "form": form,
            "split": "heldout" if p["city"] in held else "seen",
            "n_features": len(set(p["swap"].removed) | set(p["swap"].added)),
            "top_after": tok.convert_ids_to_tokens(top), "p_donor_capital": float(probs[j, want]),
            "success": top == want, "control_top": tok.convert_ids_to_tokens(c_top),
            "control_p_donor_capital": float(probs[len(pairs) + j, want]),
            "control_success": c_top == want,
        })  # fmt: skip
    cols = ["city", "state", "split", "donor_state", "donor_capital", "success", "control_success"]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)


def control_tables(model, clt, tok, world: World, runs, chosen) -> dict[str, pd.DataFrame]:
    """The calibrated swap's matched controls (:mod:`llmbio.studies.swaps`), on the swap
    table's pairs: ``swap_controls`` (per pair: the swap, its matched random control with its
    write-norm ratio, its complement), ``wrong_donor`` (per city: the same edit with a training
    city of its own state as donor; ``changed``: the top token moved), ``control_by_k``
    (success of the swap and its matched control at each calibrated size, same form).
    ``chosen``: the ranking, calibration grid, form and k."""
    ranking, grid, form, k = chosen
    geo = world.geography
    held = set(geo.heldout_cities)
    ids = functools.partial(tok.convert_tokens_to_ids)

    def outcomes(swaps) -> list[int]:
        return ms.swap_outcomes(model, clt, runs, swaps, form).argmax(-1).tolist()

    by_k, out = [], {}
    for size in sorted({*grid["k"].astype(int), k}) if len(grid) else [k]:
        if size > k:
            continue
        pairs = swap_pairs(world, runs, ms.supernodes(ranking, size), runs.cities)
        rng = np.random.default_rng(SEED)
        swaps = [p["swap"] for p in pairs]
        matched = [ms.matched_swap(clt, runs, s, form, rng) for s in swaps]
        tops = outcomes(swaps + [m for m, _ in matched])
        want = [ids(p["donor_capital"]) for p in pairs]
        hit = np.array([t == w for t, w in zip(tops, want + want, strict=True)], dtype=bool)
        ratios = np.array([r for _, r in matched], dtype=float)
        for control, hits in (
            ("supernode", hit[: len(pairs)]),
            ("matched_random", hit[len(pairs) :]),
        ):
            by_k.append({"k": size, "control": control, "n_cases": len(pairs),
                         "success_rate": float(hits.mean()) if len(hits) else float("nan"),
                         "median_norm_ratio": float(np.median(ratios)) if control != "supernode"
                         and len(ratios) else 1.0})  # fmt: skip
        if size != k:
            continue
        comp = [ms.complement_swap(runs, s) for s in swaps]
        c_tops = outcomes(comp)
        out["swap_controls"] = pd.DataFrame([{
            **{c: v for c, v in p.items() if c != "swap"}, "form": form,
            "split": "heldout" if p["city"] in held else "seen",
            "n_features": len(set(s.removed) | set(s.added)),
            "success": bool(hit[j]),
            "matched_n_features": len(set(m.removed) | set(m.added)),
            "matched_norm_ratio": r, "matched_success": bool(hit[len(pairs) + j]),
            "complement_n_features": len(c.removed) + len(c.added),
            "complement_top": tok.convert_ids_to_tokens(ct),
            "complement_success": ct == want[j],
            "complement_keeps_answer": ct == runs.top[s.recipient],
        } for j, (p, s, (m, r), c, ct) in enumerate(zip(pairs, swaps, matched, comp, c_tops,
                                                         strict=True))])  # fmt: skip
        nodes = ms.supernodes(ranking, size)
        out["wrong_donor"] = wrong_donor_table(tok, world, runs, nodes, form, outcomes)
    out["control_by_k"] = pd.DataFrame(by_k)
    return out


def wrong_donor_table(tok, world: World, runs, nodes: dict, form: str, outcomes) -> pd.DataFrame:
    """Per city: the calibrated edit of its state's supernode with a donor of the same state
    (:func:`llmbio.studies.swaps.same_class_donor` among training cities); cities whose state
    has no other training city or no supernode are left out."""
    geo = world.geography
    held = set(geo.heldout_cities)
    rows, swaps = [], []
    for city in runs.cities:
        state = geo.city_state[city]
        donor = same_class_donor(city, geo.city_state, geo.train_cities())
        if donor is None or nodes.get(state) is None:
            continue
        feats = tuple(nodes[state].features)
        swaps.append(ms.Swap(runs.index(city), runs.index(donor), feats, feats))
        top = tok.convert_ids_to_tokens(runs.top[runs.index(city)])
        rows.append({"city": city, "state": state, "donor_city": donor, "form": form,
                     "split": "heldout" if city in held else "seen", "n_features": len(feats),
                     "baseline_top": top})  # fmt: skip
    cols = ["city", "state", "donor_city", "form", "split", "n_features", "baseline_top"]
    table = pd.DataFrame(rows, columns=cols)
    tops = outcomes(swaps) if swaps else []
    table["top_after"] = tok.convert_ids_to_tokens(tops)
    table["changed"] = table["top_after"] != table["baseline_top"]
    return table


def graph_tables(context: StudyContext, model, clt, tok, nodes: dict) -> None:
    prompt = next(p for p in context.prompts("organism") if p.id == "dallas")
    graphs = context.out_dir / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    trace_prompt(model, clt, tok, prompt.text, graphs, "dallas", scan=context.scan)
    g_nodes = pd.read_parquet(graphs / "dallas.nodes.parquet")
    g_edges = pd.read_parquet(graphs / "dallas.edges.parquet")
    groups = [n for n in nodes.values() if n.name in ("city_dallas", "state_texas")]
    sn_nodes, sn_edges = supernode_graph(g_nodes, g_edges, groups, keep_unassigned=False)
    context.save_table(sn_nodes, "supernode_nodes")
    context.save_table(sn_edges, "supernode_edges")


def draw_supernode_graph(sn_nodes: pd.DataFrame, sn_edges: pd.DataFrame):
    return plot_supernode_graph(sn_nodes, sn_edges, title="Dallas -> Texas -> Austin (organism)")


def draw_panel(panel: pd.DataFrame):
    return plot_panel(panel)


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
    form, k = swap["form"].iloc[0], int(swap["n_features"].max())
    ax.set_title(
        f"State swap ({form}, <= {k} features): {swap['success'].mean():.0%} of {len(swap)}"
        f" (city, donor) pairs; random features: {swap['control_success'].mean():.0%}",
        fontsize=9,
    )
    fig.tight_layout()
    return fig


def draw_ablation(ablation: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    sns.stripplot(data=ablation, x="split", y="relative_drop", ax=ax, alpha=0.6)
    sns.stripplot(
        data=ablation, x="split", y="relative_drop_control", ax=ax, alpha=0.4, color="grey"
    )
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
    ax.set_title(f"State supernode (top {TOP_K}) x(-2); grey: {TOP_K} random features", fontsize=9)
    fig.tight_layout()
    return fig


def draw_controls_by_k(by_k: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if by_k.empty:
        ax.text(0.5, 0.5, "no swap case", ha="center")
        ax.set_axis_off()
        return fig
    sns.lineplot(data=by_k, x="k", y="success_rate", hue="control", marker="o", ax=ax,
                 errorbar=None)  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set(ylim=(-0.02, 1.02), xlabel="supernode size k (features per state)",
           ylabel="swap success (all pairs)")  # fmt: skip
    ratios = by_k[by_k["control"] == "matched_random"]
    ratios = ", ".join(f"k={k}: {r:.2f}" for k, r in zip(ratios["k"], ratios["median_norm_ratio"],
                                                          strict=True))  # fmt: skip
    ax.set_title(f"State swap vs matched random features\n(median write-norm ratio {ratios})",
                 fontsize=9)  # fmt: skip
    fig.tight_layout()
    return fig


def draw_calibration(grid: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 3.8))
    if grid.empty:
        ax.text(0.5, 0.5, "no calibration case (no training city)", ha="center")
        ax.set_axis_off()
        return fig
    plot_calibration(ax, grid, bar=ms.SUCCESS_BAR, xlabel="supernode size k (features per state)",
                     ylabel="swap success (training)")  # fmt: skip
    chosen = grid[grid["chosen"]]
    c = chosen.iloc[0]
    ax.set_title(f"Calibration on training cities: chosen {c['form']}, k={c['k']} (red)")
    fig.tight_layout()
    return fig
