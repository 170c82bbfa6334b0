"""Method check: are the attribution graphs faithful, as the Circuit Tracing paper measures it?

Two parts. (1) The faithfulness rule (``llmbio.stages.attribution.faithfulness_graphs``)
ablates sampled features of every showcase graph on the real forward pass; this study
summarises that table (``spearman``: one row per graph, sample and final_norm; a diagnostic of
the live model, whose norms rescale every effect the graph holds fixed). (2) On the organism,
the paper's own checks (:mod:`llmbio.features.graph_checks`) on a fixed, seeded list of
prompts (the showcase prompts plus ``N_PER_TASK`` evaluation prompts per task, drawn with
``SEED``): for up to ``N_FEATURES`` seeded features the pruned graph keeps, (a) predicted vs
real effect on the top logit in the graph's frame, (b) feature-to-feature edges vs constrained
patching over ``[i, i+2]``, (c) replacement vs real model one layer downstream. Tables:
``effects`` (per feature), ``influence`` (per feature pair), ``per_prompt`` (the per-prompt
statistics), ``checks`` (median over prompts with a seeded bootstrap 95% interval, beside the
paper's value).
"""

from __future__ import annotations

import random
import time

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from scipy.stats import spearmanr

from llmbio.attribution.prune import prune_graph
from llmbio.attribution.trace import trace
from llmbio.features.graph_checks import feature_effects, feature_influence
from llmbio.figures import FIGURE_SEED
from llmbio.studies import StudyContext
from llmbio.studies.intervals import bootstrap
from llmbio.tokenizer import encode

TARGET = 0.7
SEED = 0
N_PER_TASK = 2  # evaluation prompts per task, beside the showcase prompts
N_FEATURES = 20  # features per prompt the effect checks zero
EFFECT_TARGET = 0.8
# per-prompt statistic -> the paper's value (NaN: none), what the study makes of it
CHECKS = {
    "effect_spearman": (np.nan, "claim"),
    "influence_spearman": (0.72, "claim"),
    "downstream_cosine": (0.8, "reported"),
    "downstream_nmse": (0.4, "reported"),
    "effect_spearman_replacement": (np.nan, "diagnostic"),
    "effect_spearman_live": (np.nan, "diagnostic"),
    "live_rescaling": (np.nan, "diagnostic"),
    "downstream_cosine_frame": (np.nan, "diagnostic"),
    "downstream_nmse_frame": (np.nan, "diagnostic"),
}
HUE_ORDER = ["pruned_graph", "pruned_graph, final norm frozen", "all_active"]


def run(context: StudyContext) -> None:
    table = pd.read_parquet(context.run_dir / "graphs" / "faithfulness.parquet")
    context.save_table(summarise(table), "spearman")
    context.draw_figure("spearman_by_graph", draw_spearman, ["spearman"])
    if context.family != "organism":
        return
    if not (context.run_dir / "world.json").exists():  # a summary of a bare table only
        print("paper checks: no world.json in the run; skipped")
        return
    paper_checks(context)


def check_prompts(world) -> list[str]:
    """The showcase prompts, then ``N_PER_TASK`` evaluation prompts per task (seeded)."""
    rng = random.Random(SEED)
    by_task: dict[str, list[str]] = {}
    for item in world.eval_items():
        by_task.setdefault(item["task"], []).append(item["prompt"])
    prompts = list(world.showcase_prompts())
    for task in sorted(by_task):
        pool = sorted(set(by_task[task]) - set(prompts))
        prompts += rng.sample(pool, min(N_PER_TASK, len(pool)))
    return prompts


def paper_checks(context: StudyContext) -> None:
    model, tokenizer, clt, world = context.load_organism()
    max_nodes = context.run.config.trace.max_feature_nodes
    effects, influence = [], []
    start = time.perf_counter()
    for k, prompt in enumerate(check_prompts(world)):
        graph = trace(model, clt, encode(tokenizer, prompt), show_progress=False,
                      max_feature_nodes=max_nodes)  # fmt: skip
        kept = prune_graph(graph).node_mask[: graph.n_features].nonzero().flatten()
        gen = torch.Generator().manual_seed(SEED + k)
        nodes = kept[torch.randperm(len(kept), generator=gen)[:N_FEATURES]].sort().values.tolist()
        if not nodes:
            print(f"paper checks: no kept feature in {prompt!r}; skipped")
            continue
        table = feature_effects(model, clt, graph, nodes)
        effects.append(table.assign(prompt_index=k, prompt=prompt))
        sources = table.loc[table["layer"] < clt.n_layers - 1, "node_index"].tolist()
        influence.append(feature_influence(model, clt, graph, sources).assign(prompt_index=k))
    print(f"paper checks: {len(effects)} prompts in {time.perf_counter() - start:.1f} s")
    effects, influence = pd.concat(effects), pd.concat(influence)
    per_prompt = summarise_prompts(effects, influence)
    context.save_table(effects, "effects")
    context.save_table(influence, "influence")
    context.save_table(per_prompt, "per_prompt")
    context.save_table(summarise_checks(per_prompt), "checks")
    context.draw_figure("paper_checks", draw_checks, ["per_prompt", "checks"])
    context.draw_figure("frame_effects", draw_frame_effects, ["effects"])


def _spearman(x: pd.Series, y: pd.Series) -> float:
    return float(spearmanr(x, y).statistic) if len(x) > 2 else np.nan


def summarise_prompts(effects: pd.DataFrame, influence: pd.DataFrame) -> pd.DataFrame:
    """One row per prompt: the per-prompt statistic of every check in ``CHECKS``."""
    rows = []
    for k, e in effects.groupby("prompt_index", sort=True):
        pairs = influence[influence["prompt_index"] == k]
        frame, live = e["actual_frame"], e["actual_live"]
        rows.append(dict(
            prompt_index=k, prompt=e["prompt"].iloc[0], n_features=len(e), n_pairs=len(pairs),
            effect_spearman=_spearman(e["predicted_total"], frame),
            influence_spearman=_spearman(pairs["predicted"], pairs["actual"]),
            downstream_cosine=e["cosine_live"].median(),
            downstream_nmse=e["nmse_live"].median(),
            effect_spearman_replacement=_spearman(e["predicted_total"], e["actual_replacement"]),
            effect_spearman_live=_spearman(e["predicted_total"], live),
            # least-squares slope of the live effect on the frame's: the norms' rescaling
            live_rescaling=float((live * frame).sum() / (frame * frame).sum()),
            downstream_cosine_frame=e["cosine_frame"].median(),
            downstream_nmse_frame=e["nmse_frame"].median(),
        ))  # fmt: skip
    return pd.DataFrame(rows)


def summarise_checks(per_prompt: pd.DataFrame) -> pd.DataFrame:
    """Per check: prompts, median over prompts, seeded bootstrap 95% interval, paper value."""
    rows = []
    for check, (paper, role) in CHECKS.items():
        values = per_prompt[check].dropna()
        # the claims' own interval (llmbio.studies.intervals), so table and audit agree
        low, high = bootstrap(values.to_numpy(), "median") if len(values) > 1 else (np.nan, np.nan)
        rows.append(dict(
            check=check, role=role, n_prompts=len(values), median=float(values.median()),
            ci_low=low, ci_high=high, paper_value=paper,
        ))  # fmt: skip
    return pd.DataFrame(rows)


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


def draw_checks(per_prompt: pd.DataFrame, checks: pd.DataFrame):
    """Per-prompt values of the paper's checks; median with its 95% interval, paper value."""
    shown = ["effect_spearman", "influence_spearman", "downstream_cosine", "downstream_nmse"]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.0 * len(shown), 3.4), sharey=False)
    rng = np.random.default_rng(SEED)
    for ax, check in zip(axes, shown, strict=True):
        row = checks.set_index("check").loc[check]
        values = per_prompt[check].dropna().to_numpy()
        ax.scatter(rng.uniform(-0.15, 0.15, len(values)), values, s=12, color="#4477aa")
        error = [[row["median"] - row["ci_low"]], [row["ci_high"] - row["median"]]]
        ax.errorbar([0.35], [row["median"]], yerr=error, fmt="o", color="black", capsize=4)
        if not np.isnan(row["paper_value"]):
            ax.axhline(row["paper_value"], color="#cc6677", ls="--", lw=1, label="paper")
        if check == "effect_spearman":
            ax.axhline(EFFECT_TARGET, color="grey", ls=":", lw=1, label="target")
        ax.set(xticks=[], xlim=(-0.4, 0.6), title=check.replace("_", " "))
        ax.legend(fontsize=7, loc="best")
    axes[0].set_ylabel(f"per prompt (n = {len(per_prompt)})")
    fig.tight_layout()
    return fig


def draw_frame_effects(effects: pd.DataFrame):
    """Predicted (all paths) vs real effect of zeroing a feature, in the graph's frame."""
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    x, y = effects["predicted_total"], effects["actual_frame"]
    points = ax.scatter(x, y, c=effects["layer"], s=10, cmap="viridis", edgecolors="none")
    fig.colorbar(points, ax=ax, label="layer")
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="#888888", lw=0.8, ls="--", zorder=0)
    ax.set(xlabel="graph prediction (change of top logit)",
           ylabel="real model, attention and norms frozen")  # fmt: skip
    ax.set_title(
        f"{len(effects)} features, {effects['prompt_index'].nunique()} prompts", fontsize=9
    )
    fig.tight_layout()
    return fig
