"""Addition on the organism: operand plots classified, the 36+59 graph, path transplants, and
the arithmetic features on counting runs and citations.

Tables (``tables/``):

- ``grid``: every prompt ``calc : a + b =`` (a, b < n): the answer, correct, split;
- ``features``: every feature active at "=" on >= 0.5% of the grid, its operand plot
  classified (:mod:`llmbio.cases.arithmetic.operand_plots`), ``path`` (low_order, magnitude,
  operand), ``top`` (the ``TOP_PER_LAYER`` largest by spread per layer, plus those in the
  36+59 graph),
  and the atlas's best ground-truth arithmetic label (``atlas_variable``, ``atlas_f1``);
  ``kind_counts``: features per class (and per period) among the top ones and all;
- ``classifier_check``: the classifier on synthetic heatmaps of known class;
- ``operand_plots``: the heatmaps drawn (long: layer, feature, a, b, activation);
- ``supernode_nodes`` / ``supernode_edges`` / ``graph_paths``: the 36+59 graph by class;
- ``interventions``: one row per (experiment, prompt) of :data:`EXPERIMENTS` (decimal, ``base``
  10) and :data:`BASE_EXPERIMENTS` (``base``: the low-order features' period);
- ``contexts``: each classified feature on counting runs, citations and other text;
- ``graph_paths_found`` / ``graph_path_scores`` / ``graph_swaps`` / ``graph_swap_summary``: the
  paper's method tested blind (:mod:`llmbio.cases.arithmetic.graph_derived`): the 36+59
  graph's features at "=" sorted into paths without operand plots, scored against them, and
  used in the base-P transplants.

Paths: the paper's 36+59 runs a low-precision path (~36 + ~60 -> ~92) beside a ones-digit
path (_6 + _9 -> _5). Here ``magnitude`` = sum bands and smooth (blob / tens-pair) lookups;
``low_order`` = features with a periodic operand plot (modular, and lookups of the operands'
residues). Which feature is which comes from its operand plot only.
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from llmbio.attribution.outputs import trace_prompt
from llmbio.cases.arithmetic import figures as plots
from llmbio.cases.arithmetic import graph_derived as gd
from llmbio.cases.arithmetic.experiments import (
    context_activity,
    context_documents,
    feature_census,
    grid_activations,
    swap_experiments,
    swap_plan,
)
from llmbio.cases.arithmetic.operand_plots import CLASSES, classify, synthetic_heatmaps
from llmbio.features import graph_supernodes as gs
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.studies import StudyContext
from llmbio.studies.generic import run_declared
from llmbio.tokenizer import UnknownTokenError
from llmbio.world import World

TOP_PER_LAYER = 16  # features per layer with the largest spread over the grid
PLOTS_PER_KIND = 4  # operand plots drawn per class
N_SWAP = 400  # prompts per transplant experiment
N_DOCS = 300  # documents per context
MIN_FIRE = 0.01  # a feature "fires" in a context on >= 1% of its tokens ...
FIRE_RATIO = 2.0  # ... and at >= 2x its rate on non-arithmetic text
SEED = 0
GRAPH_PROMPT = "add_36_59"

# id -> (the sum the answer should become, {group: source}); see addition.swap_experiments
EXPERIMENTS = {
    "ones_swap": ("ones", {"low_order": "ones_donor", "magnitude": "own"}),
    "tens_swap": ("tens", {"magnitude": "tens_donor", "low_order": "own"}),
    "both_swap": ("ones", {"low_order": "ones_donor", "magnitude": "ones_donor"}),
    "random_swap": ("ones", {"random": "ones_donor"}),
    "ablate_low_order": ("same", {"low_order": "zero"}),
    "ablate_magnitude": ("same", {"magnitude": "zero"}),
}
# the ones and tens transplants in the organism's own base (the low-order features' period P,
# from their operand plots): "ones" donors share the sum's P-block, "tens" donors its residue
BASE_EXPERIMENTS = {
    "residue_swap": ("ones", {"low_order": "ones_donor", "magnitude": "own"}),
    "block_swap": ("tens", {"magnitude": "tens_donor", "low_order": "own"}),
    "random_residue_swap": ("ones", {"random": "ones_donor"}),
}


def run(context: StudyContext) -> None:
    if context.family != "organism":
        return run_declared(context)
    start = time.perf_counter()

    def log(step: str) -> None:
        print(f"arithmetic: {step} done at {time.perf_counter() - start:.1f} s")

    model, tok, clt, world = context.load_organism()
    grid = grid_activations(model, clt, tok, world.arithmetic.max_operand + 1)
    context.save_table(grid_table(grid, world), "grid")
    log(f"grid pass ({grid.n} x {grid.n} prompts)")
    census = feature_census(grid)
    census["path"] = [
        path_of(k, f) for k, f in zip(census["kind"], census["function"], strict=True)
    ]
    graph_keys = graph_tables(context, model, clt, tok, census)
    census = with_atlas_labels(annotate(census, graph_keys), context.run_dir)
    context.save_table(census, "features")
    context.save_table(kind_counts(census), "kind_counts")
    log(f"census ({len(census)} features classified) and graph")
    context.save_table(classifier_check(), "classifier_check")
    context.save_table(operand_plot_table(grid, census), "operand_plots")
    groups, period = path_groups(census), low_order_period(census)
    swaps = pd.concat([
        swap_experiments(model, clt, grid, swap_plan(grid, N_SWAP, SEED), groups, EXPERIMENTS),
        swap_experiments(model, clt, grid, swap_plan(grid, N_SWAP, SEED, base=period), groups,
                         BASE_EXPERIMENTS, base=period),
    ], ignore_index=True)  # fmt: skip
    swaps = follow_paths(swaps, period)
    context.save_table(swaps.reindex(columns=plots.SWAP_COLUMNS), "interventions")
    log("transplants")
    graph_derived(context, model, clt, grid, census, period, swaps)
    log("graph-derived paths")
    corpus = pd.read_parquet(context.run_dir / "corpus.parquet", columns=["task", "text"])
    activity = context_activity(model, clt, tok, context_documents(corpus, N_DOCS), census, grid)
    context.save_table(contexts_table(census, activity), "contexts")
    log("contexts")
    context.draw_figure("operand_plots", plots.operand_plots, ["operand_plots"])
    context.draw_figure("class_census", plots.class_census, ["features"])
    context.draw_figure(
        "supernode_graph", plots.supernode_figure, ["supernode_nodes", "supernode_edges"]
    )
    context.draw_figure("interventions", plots.interventions, ["interventions"])
    context.draw_figure("ones_swap_by_delta", plots.ones_swap_by_delta, ["interventions"])
    context.draw_figure("contexts", plots.contexts, ["contexts"])
    context.draw_figure("graph_paths", gd.draw, ["graph_path_scores", "graph_swap_summary"])
    log("figures; arithmetic analysis")


def graph_derived(context: StudyContext, model, clt, grid, census, period, swaps) -> None:
    """The paper's method, blind: the two paths read off the 36+59 graph and the atlas's
    output logits (:mod:`llmbio.cases.arithmetic.graph_derived`), then scored against the
    operand-plot census and used in the base-P transplants (same plan and form)."""
    nodes_path = context.out_dir / "graphs" / f"{GRAPH_PROMPT}.nodes.parquet"
    if nodes_path.exists():
        logits = pd.read_parquet(
            context.run_dir / "features" / "logits.parquet", columns=gs.LOGIT_COLUMNS
        )
        found = gs.answer_groups(pd.read_parquet(nodes_path), logits)
    else:  # the prompt is outside this world (graph_tables skipped it)
        found = gs.answer_groups(pd.DataFrame(columns=gs.NODE_COLUMNS), pd.DataFrame(
            columns=gs.LOGIT_COLUMNS))  # fmt: skip
    context.save_table(found, "graph_paths_found")
    context.save_table(gd.score_paths(found, census), "graph_path_scores")
    experiments = {e: BASE_EXPERIMENTS[e] for e in ("residue_swap", "block_swap")}
    plan = swap_plan(grid, N_SWAP, SEED, base=period)
    graph_swaps = swap_experiments(
        model, clt, grid, plan, gs.answer_supernodes(found), experiments, base=period
    )
    context.save_table(graph_swaps, "graph_swaps")
    context.save_table(gd.summary(graph_swaps, swaps), "graph_swap_summary")


def low_order_period(census: pd.DataFrame) -> int:
    """The most common period of the low-order features (the paper's 10 if there are none)."""
    periods = census.loc[(census["path"] == "low_order") & (census["period"] > 0), "period"]
    return int(periods.mode().iloc[0]) if len(periods) else 10


def follow_paths(swaps: pd.DataFrame, period: int) -> pd.DataFrame:
    """Exploratory (no claim): does the answer take its residue mod ``period`` from the sum
    whose low-order features were in place, and its magnitude (within ``period / 2``) from the
    sum whose magnitude features were?"""
    if swaps.empty:
        return swaps
    low, mag, answer = swaps["low_order_sum"], swaps["magnitude_sum"], swaps["answer"]
    return swaps.assign(
        period=period,
        residue_follows_low_order=(low >= 0) & ((answer - low) % period == 0),
        near_magnitude=(mag >= 0) & ((answer - mag).abs() <= period // 2),
    )


def grid_table(grid, world: World) -> pd.DataFrame:
    a, b = np.divmod(np.arange(grid.n * grid.n), grid.n)
    held = [world.arithmetic.is_heldout(int(x), int(y)) for x, y in zip(a, b, strict=True)]
    return pd.DataFrame({
        "a": a, "b": b, "sum": a + b, "answer": grid.answer, "correct": grid.answer == a + b,
        "split": np.where(held, "heldout", "seen"),
    })  # fmt: skip


def path_of(kind: str, function: str) -> str:
    """The path of a classified feature (module docstring)."""
    if kind == "modular" or function.startswith("(a mod") or function == "ones pair":
        return "low_order"
    if kind == "sum" or function in ("blob", "tens pair"):
        return "magnitude"
    return "operand" if kind == "operand" else "other"


def annotate(census: pd.DataFrame, graph_keys: set) -> pd.DataFrame:
    census = census.copy()
    census["period"] = census[["period_a", "period_b"]].max(axis=1)
    keys = list(zip(census["layer"], census["feature"], strict=True))
    census["in_graph"] = [k in graph_keys for k in keys]
    ranked = census.groupby("layer")["std"].rank(ascending=False, method="first")
    census["top"] = (ranked <= TOP_PER_LAYER) | census["in_graph"]
    return census


ARITHMETIC_VARIABLES = ["operand_a", "a_ones", "operand_b", "b_ones", "sum", "sum_ones", "sum_tens"]


def with_atlas_labels(census: pd.DataFrame, run_dir) -> pd.DataFrame:
    """Each feature's best ground-truth arithmetic label from the atlas (token-level F1 over
    the corpus, ``features/label_scores.parquet``), beside its operand-plot class."""
    path = run_dir / "features" / "label_scores.parquet"
    columns = ["atlas_variable", "atlas_value", "atlas_f1"]
    if not path.exists():
        return census.assign(**{c: None for c in columns})
    scores = pd.read_parquet(path)
    best = (
        scores[scores["variable"].isin(ARITHMETIC_VARIABLES)]
        .sort_values("f1", ascending=False)
        .drop_duplicates(["layer", "feature"])
        .rename(columns={"variable": columns[0], "value": columns[1], "f1": columns[2]})
    )
    return census.merge(best[["layer", "feature", *columns]], on=["layer", "feature"], how="left")


def kind_counts(census: pd.DataFrame) -> pd.DataFrame:
    """Features per class, per period (``period_<m>``: periodic with period m along a or b)."""
    groups = {kind: census["kind"] == kind for kind in CLASSES}
    for m in range(2, 11):
        groups[f"period_{m}"] = census["period"] == m
    return pd.DataFrame(
        [{"group": g, "n_top": int((sel & census["top"]).sum()), "n_census": int(sel.sum())}
         for g, sel in groups.items()]
    )  # fmt: skip


def classifier_check() -> pd.DataFrame:
    heatmaps, expected = synthetic_heatmaps()
    table = classify(heatmaps)
    table.insert(0, "expected", expected)
    table.insert(0, "case", range(len(expected)))
    return table.assign(correct=table["kind"] == table["expected"])


def operand_plot_table(grid, census: pd.DataFrame) -> pd.DataFrame:
    """The heatmaps of ``PLOTS_PER_KIND`` features of each class: the strongest of each
    winning function, then the top features (graph ones first)."""
    ranked = census[census["kind"] != "unexplained"].sort_values(
        ["top", "in_graph", "std"], ascending=False
    )
    # the best of each function first, so that every pattern of a class gets a plot
    first = ranked.groupby(["kind", "function"]).head(1)
    rest = ranked[ranked["top"]].drop(first.index, errors="ignore")
    chosen = pd.concat([first, rest]).groupby("kind").head(PLOTS_PER_KIND)
    a, b = np.divmod(np.arange(grid.n * grid.n), grid.n)
    frames = [
        pd.DataFrame({"layer": r.layer, "feature": r.feature, "kind": r.kind,
                      "function": r.function, "a": a, "b": b,
                      "activation": grid.acts[r.layer, :, r.feature]})
        for r in chosen.itertuples()
    ]  # fmt: skip
    columns = ["layer", "feature", "kind", "function", "a", "b", "activation"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def path_groups(census: pd.DataFrame) -> dict[str, list[tuple[int, int]]]:
    """Members of each path, and a random control group of other active features."""
    keys = {p: list(zip(g["layer"], g["feature"], strict=True)) for p, g in census.groupby("path")}
    others = [k for p, ks in keys.items() if p not in ("low_order", "magnitude") for k in ks]
    rng = np.random.default_rng(SEED)
    size = min(len(keys.get("low_order", [])), len(others))
    keys["random"] = [others[i] for i in rng.choice(len(others), size, replace=False)]
    return keys


def graph_tables(context: StudyContext, model, clt, tok, census: pd.DataFrame) -> set:
    """Trace the 36+59 prompt, collapse its graph by operand-plot class; the graph's features
    at "=" as ``(layer, feature)`` keys (empty if the prompt is outside this world)."""
    prompt = next(p for p in context.prompts("organism") if p.id == GRAPH_PROMPT)
    graphs = context.out_dir / "graphs"
    graphs.mkdir(parents=True, exist_ok=True)
    try:
        trace_prompt(model, clt, tok, prompt.text, graphs, GRAPH_PROMPT, scan=context.scan)
    except UnknownTokenError as err:
        print(f"graph skipped: {err}")
        context.save_table(pd.DataFrame(columns=plots.NODE_COLUMNS), "supernode_nodes")
        context.save_table(pd.DataFrame(columns=plots.EDGE_COLUMNS), "supernode_edges")
        context.save_table(pd.DataFrame({"path": [], "n_nodes": []}), "graph_paths")
        return set()
    nodes = pd.read_parquet(graphs / f"{GRAPH_PROMPT}.nodes.parquet")
    edges = pd.read_parquet(graphs / f"{GRAPH_PROMPT}.edges.parquet")
    last = int(nodes["position"].max())
    kept = nodes[nodes["kept"] & (nodes["kind"] == "feature")]
    classes = census[["layer", "feature", "kind", "function", "path"]]
    at_eq = kept[kept["position"] == last].merge(
        classes.rename(columns={"kind": "class"}), on=["layer", "feature"], how="left"
    )
    at_eq = at_eq.fillna({"class": "unclassified", "function": "", "path": "other"})
    groups = [
        Supernode.make(f"{cls}: {fn}" if fn else cls, _keys(g), positions=last)
        for (cls, fn), g in at_eq.groupby(["class", "function"])
    ]
    tokens = kept[kept["position"] < last]
    for pos, g in tokens.groupby("position"):
        name = f'"{g["token"].iloc[0]}" features'
        groups.append(Supernode.make(name, _keys(g), positions=pos))
    sn_nodes, sn_edges = supernode_graph(nodes, edges, groups, keep_unassigned=False)
    context.save_table(spread_row(sn_nodes, last), "supernode_nodes")
    context.save_table(sn_edges, "supernode_edges")
    counts = at_eq.groupby("path").size().reindex(["low_order", "magnitude", "operand", "other"])
    context.save_table(counts.fillna(0).astype(int).rename("n_nodes").reset_index(), "graph_paths")
    return set(zip(at_eq["layer"], at_eq["feature"], strict=True))


def spread_row(sn_nodes: pd.DataFrame, last: int, step: float = 1.4) -> pd.DataFrame:
    """Boxes at "=" that share a layer, side by side (their names are long)."""
    out = sn_nodes.copy()
    at_eq = (out["kind"] == "feature") & (out["x"] > last - 1)
    for _, rows in out[at_eq].groupby(out.loc[at_eq, "y"].round(1)):
        offsets = (np.arange(len(rows)) - (len(rows) - 1) / 2) * step
        out.loc[rows.index, "x"] = last + offsets
    return out


def _keys(table: pd.DataFrame) -> list[tuple[int, int]]:
    return [(int(la), int(f)) for la, f in zip(table["layer"], table["feature"], strict=True)]


def contexts_table(census: pd.DataFrame, activity: pd.DataFrame) -> pd.DataFrame:
    keys = ["layer", "feature", "kind", "function", "path", "top", "frac_active"]
    out = census[keys].merge(activity, on=["layer", "feature"])
    for ctx in ("counting", "citation"):
        rate, base = out[f"fire_{ctx}"], out["fire_baseline"]
        out[f"fires_{ctx}"] = (rate >= MIN_FIRE) & (rate >= FIRE_RATIO * base)
    return out
