"""Multilingual circuits on the organism: shared and language-specific features, three swaps.

Tables (``tables/``):

- ``prompts``: every (relation, language, concept) lexicon prompt, its answer and the top token;
- ``supernodes``: the example's role supernodes (operation, operand "small", output "big",
  language per language; top ``ROLE_K`` of each contrast of
  :mod:`llmbio.cases.multilingual.prompts`)
  and where each member is active. Operation and language scores use the calibration concepts
  only (even antonym pairs), so the held-out concepts (odd pairs) test them;
- ``calibration``: swap success (lowest over languages) against supernode size ``k`` on the
  calibration concepts, per edit site (every position, or the last one) and selection
  (operation and language: by contrast or by effect); the swaps use the chosen site and
  selection's top ``k`` (``chosen``);
- ``swaps``: one row per swap case, every concept and language, with its random-feature
  control (:mod:`llmbio.cases.multilingual.swaps`); ``swap_features``: the features each
  swap patched (chosen selection and size) and in how many of its cases;
- ``graph_features`` / ``supernode_nodes`` / ``supernode_edges``: the pruned graphs of the
  antonym prompt of "small" in each language, features classified as shared (in all three
  graphs), partial or language-specific, with their role (the role supernode, top ``ROLE_K``
  of a contrast, in which they rank best); ``sharing_summary`` counts them per role, with the
  role members active on the prompt in every language;
- ``overlap`` / ``overlap_by_layer`` / ``overlap_summary``: IoU of active feature sets between
  languages on parallel vs unrelated sentences, by layer (:mod:`llmbio.cases.multilingual.overlap`);
- ``mixed_prompts``: template and concept word in different languages (which one sets the
  answer's language).
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from llmbio.attribution.outputs import trace_prompt
from llmbio.attribution.plot import plot_supernode_graph
from llmbio.cases.multilingual.overlap import overlap_by_layer, overlap_summary, overlap_table
from llmbio.cases.multilingual.prompts import (
    concept_order,
    concept_scores,
    language_scores,
    mixed_prompts,
    output_scores,
    prompts_table,
    relation_scores,
    run_lexicon,
    top_features,
)
from llmbio.cases.multilingual.swaps import SUCCESS_BAR, SwapRunner, swap_experiments
from llmbio.features.supernodes import Supernode, supernode_graph
from llmbio.figures import FIGURE_SEED
from llmbio.studies import StudyContext
from llmbio.studies.generic import run_declared
from llmbio.studies.swaps import plot_calibration
from llmbio.world.lexicon import LANGUAGES

EXAMPLE = "small"  # the paper's operand; graphs are traced for its antonym prompts
ROLE_ORDER = ("operand", "output", "operation", "language")  # ties of a feature's best rank
ROLE_K = 16  # features per role supernode of the graphs
MAX_EDGES = 40  # strongest supernode-graph edges drawn per language


def run(context: StudyContext) -> None:
    if context.family != "organism":  # released models: no ground truth, declared experiments
        return run_declared(context)
    start, cpu = time.perf_counter(), time.process_time()
    model, tok, clt, world = context.load_organism()
    lex = world.lexicon
    languages, concepts = list(LANGUAGES), concept_order(lex)
    calib = [c for i, c in enumerate(concepts) if (i // 2) % 2 == 0]
    runs = run_lexicon(model, clt, tok, lex, languages)
    context.save_table(prompts_table(runs, lex, tok), "prompts")
    scores = {
        "operation": relation_scores(runs, languages, calib),
        "operand": {c: concept_scores(runs, languages, concepts, c) for c in concepts},
        "language": language_scores(runs, languages, calib),
    }
    runner = SwapRunner(model, clt, tok, runs)
    swaps, calibration, swap_features = swap_experiments(
        runner, lex, languages, concepts, calib, scores
    )
    context.save_table(swaps, "swaps")
    context.save_table(calibration, "calibration")
    context.save_table(swap_features, "swap_features")
    roles = example_roles(scores, runs, lex, clt.n_features)
    members = roles_table(roles, runs, languages)
    context.save_table(members, "supernodes")
    features = graph_tables(context, model, clt, tok, roles, lex)
    context.save_table(sharing_summary(features, members, languages), "sharing_summary")
    table = overlap_table(model, clt, tok, lex, languages)
    context.save_table(table, "overlap")
    by_layer = overlap_by_layer(table)
    context.save_table(by_layer, "overlap_by_layer")
    context.save_table(overlap_summary(by_layer, clt.n_layers), "overlap_summary")
    context.save_table(mixed_prompts(model, clt, tok, lex, languages), "mixed_prompts")
    draw_figures(context, languages)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    print(f"study multilingual: analysis took {wall:.1f} s ({cpu:.1f} s of CPU)")


def example_roles(scores, runs, lex, n_feat: int) -> dict[str, list]:
    """The example prompt's role supernodes (top ROLE_K of each contrast, best first)."""
    answer = lex.antonym[EXAMPLE]
    roles = {
        f"operand {EXAMPLE}": top_features(scores["operand"][EXAMPLE], ROLE_K, n_feat),
        f"output {answer}": top_features(output_scores(runs, lex, answer), ROLE_K, n_feat),
        "operation": top_features(scores["operation"], ROLE_K, n_feat),
    }
    for lang, s in scores["language"].items():
        roles[f"language {lang}"] = top_features(s, ROLE_K, n_feat)
    return roles


def roles_table(roles: dict[str, list], runs, languages) -> pd.DataFrame:
    """Role supernode members and where they are active on the example's antonym prompts."""
    active = {lang: runs[("antonym", lang, EXAMPLE)].acts[:, 1:].amax(1) > 0 for lang in languages}
    rows = []
    for name, members in roles.items():
        for i, (la, f) in enumerate(members):
            row = {"supernode": name, "role": name.split()[0], "rank": i, "layer": la, "feature": f}
            row |= {f"active_{lang}": bool(active[lang][la, f]) for lang in languages}
            row["n_active_languages"] = sum(row[f"active_{lang}"] for lang in languages)
            rows.append(row)
    columns = ["supernode", "role", "rank", "layer", "feature"]
    columns += [f"active_{lang}" for lang in languages] + ["n_active_languages"]
    return pd.DataFrame(rows, columns=columns)


def graph_tables(context: StudyContext, model, clt, tok, roles: dict, lex) -> pd.DataFrame:
    """Trace the example in every language; classify its graph features; supernode graphs."""
    folder = context.out_dir / "graphs"
    graphs = {}
    for prompt in context.prompts("organism"):
        if prompt.id.startswith(f"{EXAMPLE}_"):
            lang = prompt.id.split("_", 1)[1]
            # the world's own wording, which study.yaml records for the paper's word order; a
            # world.lexicon_zh_order: relation_first world asks its Chinese question otherwise
            text = lex.prompt(EXAMPLE, "antonym", lang)
            if text != prompt.text:
                print(f"{prompt.id}: tracing the world's wording {text!r}, not study.yaml's")
            trace_prompt(model, clt, tok, text, folder, prompt.id, scan=context.scan)
            graphs[lang] = (
                pd.read_parquet(folder / f"{prompt.id}.nodes.parquet"),
                pd.read_parquet(folder / f"{prompt.id}.edges.parquet"),
            )
    features = classify_graph_features({k: n for k, (n, _) in graphs.items()}, roles)
    context.save_table(features, "graph_features")
    frames_n, frames_e = [], []
    for lang, (nodes, edges) in graphs.items():
        groups = graph_groups(features, lang)
        sn_nodes, sn_edges = supernode_graph(nodes, edges, groups, keep_unassigned=False)
        sn_edges = sn_edges.loc[sn_edges["weight"].abs().nlargest(MAX_EDGES).index]
        frames_n.append(declutter(sn_nodes).assign(language=lang))
        frames_e.append(sn_edges.assign(language=lang))
    empty_n = pd.DataFrame(columns=["name", "kind", "x", "y", "language"])
    empty_e = pd.DataFrame(columns=["source", "target", "weight", "language"])
    nodes = pd.concat(frames_n, ignore_index=True) if frames_n else empty_n
    context.save_table(nodes, "supernode_nodes")
    edges = pd.concat(frames_e, ignore_index=True) if frames_e else empty_e
    context.save_table(edges, "supernode_edges")
    return features


def sharing_summary(features: pd.DataFrame, members: pd.DataFrame, languages) -> pd.DataFrame:
    """Per role supernode (and ``all`` graph features): graph features by sharing class, and
    members active on the example's prompt in every language."""
    rows = []
    for name in ["all", *members["supernode"].unique(), "other"]:
        part = features if name == "all" else features[features["role"] == name]
        mine = members[members["supernode"] == name]
        counts = part["sharing"].value_counts()
        rows.append({
            "supernode": name, "n_graph_features": len(part),
            **{f"n_{c}": int(counts.get(c, 0)) for c in ("shared", "partial", "specific")},
            "n_members": len(mine),
            "n_active_all_languages": int((mine["n_active_languages"] == len(languages)).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def declutter(nodes: pd.DataFrame, gap: float = 1.6) -> pd.DataFrame:
    """Push feature boxes of one row apart (left to right) so that their labels stay legible."""
    nodes = nodes.copy()
    rows = nodes[nodes["kind"] == "feature"].groupby(nodes["y"].round(0))
    for _, part in rows:
        placed: list[float] = []
        x = part["x"].sort_values()
        for v in x:
            placed.append(v if not placed else max(v, placed[-1] + gap))
        nodes.loc[x.index, "x"] = placed
    return nodes


def classify_graph_features(graphs: dict[str, pd.DataFrame], roles: dict) -> pd.DataFrame:
    """One row per feature kept in some graph: where it is kept, sharing class, role."""
    langs = sorted(graphs)
    rows: dict[tuple[int, int], dict] = {}
    for lang, nodes in graphs.items():
        kept = nodes[(nodes["kind"] == "feature") & nodes["kept"]]
        for (la, f), part in kept.groupby(["layer", "feature"]):
            row = rows.setdefault((int(la), int(f)), {"layer": int(la), "feature": int(f)})
            row[f"influence_{lang}"] = float(part["influence"].sum())
    out = pd.DataFrame(list(rows.values())).reindex(
        columns=["layer", "feature"] + [f"influence_{lang}" for lang in langs]
    )
    for lang in langs:
        out[f"in_{lang}"] = out[f"influence_{lang}"].notna()
    out["n_languages"] = out[[f"in_{lang}" for lang in langs]].sum(axis=1)
    out["sharing"] = out["n_languages"].map(
        lambda n: "shared" if n == len(langs) else ("specific" if n == 1 else "partial")
    )
    out["role"] = [
        feature_role((la, f), roles) for la, f in zip(out["layer"], out["feature"], strict=True)
    ]
    return out


def feature_role(key: tuple[int, int], roles: dict[str, list]) -> str:
    """The role supernode in which the feature ranks best (ties: ROLE_ORDER), or ``other``."""
    found = [
        (members.index(key), ROLE_ORDER.index(name.split()[0]), name)
        for name, members in roles.items()
        if key in members
    ]
    return min(found)[2] if found else "other"


def graph_groups(features: pd.DataFrame, lang: str) -> list[Supernode]:
    """Supernodes of one language's graph: each role, then other shared / specific features."""
    here = features[features[f"in_{lang}"]]
    label = here["role"].where(here["role"] != "other", here["sharing"] + " (other)")
    label = label.where(here["role"] != "other", label.str.replace("specific", f"{lang}-only"))
    groups = []
    for name, part in here.groupby(label, sort=True):
        members = [f"{la}/{f}" for la, f in zip(part["layer"], part["feature"], strict=True)]
        groups.append(Supernode.make(name, members))
    return groups


def draw_figures(context: StudyContext, languages: list[str]) -> None:
    for lang in languages:
        context.draw_figure(
            f"supernode_graph_{lang}",
            lambda n, e, lang=lang: draw_supernode_graph(n, e, lang),
            ["supernode_nodes", "supernode_edges"],
        )
    context.draw_figure("feature_sharing", draw_sharing, ["graph_features"])
    context.draw_figure("swaps", draw_swaps, ["swaps", "calibration"])
    context.draw_figure("overlap_by_layer", draw_overlap, ["overlap_by_layer"])
    context.draw_figure("mixed_prompts", draw_mixed, ["mixed_prompts"])


def _empty(text: str):
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.text(0.5, 0.5, text, ha="center", va="center")
    ax.set_axis_off()
    return fig


def draw_supernode_graph(nodes: pd.DataFrame, edges: pd.DataFrame, lang: str):
    n, e = nodes[nodes["language"] == lang], edges[edges["language"] == lang]
    if not (n["kind"] == "feature").any():
        return _empty(f"{lang}: no feature of the pruned graph")
    return plot_supernode_graph(n, e, title=f"{EXAMPLE} antonym prompt, {lang} (organism)")


def draw_sharing(features: pd.DataFrame):
    if features.empty:
        return _empty("no feature in the pruned graphs")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    order = ["shared", "partial", "specific"]
    sns.countplot(data=features, x="layer", hue="sharing", hue_order=order, ax=axes[0])
    axes[0].set(ylabel="features in the pruned graphs", title="by layer")
    sns.countplot(data=features, y="role", hue="sharing", hue_order=order, ax=axes[1])
    axes[1].set(xlabel="features", ylabel="", title="by supernode role")
    fig.tight_layout()
    return fig


def draw_swaps(swaps: pd.DataFrame, calibration: pd.DataFrame):
    if swaps.empty:
        return _empty("no swap could run")
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2), width_ratios=[3, 2, 2])
    hits = swaps.assign(group=swaps["swap"] + "\n(" + swaps["split"] + ")")
    hits["success"] = hits["success"].astype(float)
    sns.barplot(data=hits, x="group", y="success", hue="language", errorbar=None, ax=axes[0])
    ctrl = hits.groupby("group", as_index=False)["control_success"].mean()
    axes[0].scatter(ctrl["group"], ctrl["control_success"], marker="x", color="black",
                    zorder=3, label="random control")  # fmt: skip
    axes[0].axhline(0.9, color="grey", ls="--", lw=0.8)
    axes[0].set(ylabel="share: top token = swapped answer", xlabel="", ylim=(0, 1.05))
    axes[0].legend(fontsize=7)
    lang = swaps[swaps["swap"] == "language"]
    if not lang.empty:
        moved = lang.assign(
            pair=lang["language"] + " -> " + lang["target_language"],
            in_target=(lang["answer_language"] == lang["target_language"]).astype(float),
            correct=lang["success"].astype(float),
        ).melt(id_vars="pair", value_vars=["in_target", "correct"], var_name="answer")
        sns.barplot(data=moved, x="pair", y="value", hue="answer", errorbar=None, ax=axes[1])
        axes[1].set(ylabel="share of language swaps", xlabel="", ylim=(0, 1.05))
        axes[1].set_title("answer in the target language / the expected antonym", fontsize=9)
    curves = calibration.assign(
        curve=calibration["swap"] + " / " + calibration["selection"] + " @ " + calibration["site"]
    )
    plot_calibration(axes[2], curves, hue="curve", bar=SUCCESS_BAR,
                     ylabel="lowest success over languages (calibration)")  # fmt: skip
    fig.tight_layout()
    return fig


def draw_overlap(by_layer: pd.DataFrame):
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=by_layer, x="layer", y="mean", hue="pair", style="kind", marker="o", ax=ax,
                 seed=FIGURE_SEED)  # fmt: skip
    ax.set(ylabel="IoU of active features", xlabel="layer", ylim=(0, None))
    ax.set_xticks(sorted(by_layer["layer"].unique()))
    ax.set_title("Feature overlap between languages", fontsize=10)
    fig.tight_layout()
    return fig


def draw_mixed(mixed: pd.DataFrame):
    if mixed.empty:
        return _empty("no mixed prompt")
    share = pd.crosstab(
        mixed["template_language"] + " template, " + mixed["word_language"] + " word",
        mixed["answer_language"],
        normalize="index",
    )
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sns.heatmap(share, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="viridis", ax=ax)
    ax.set(xlabel="language of the answer", ylabel="")
    fig.tight_layout()
    return fig
