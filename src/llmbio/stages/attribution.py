"""Stage: trace a list of prompts into attribution graphs and every export of them.

For each prompt ``<slug>`` under ``out_dir``: ``<slug>.graph.safetensors`` (the full graph),
``<slug>.nodes.parquet`` / ``<slug>.edges.parquet`` (pruned tables, columns documented in
:mod:`llmbio.attribution.export`), ``<slug>.html`` (offline viewer), ``<slug>.png`` (static
figure), and ``graph_files/<slug>.json`` (circuit-tracer / Neuronpedia format, with the
``graph-metadata.json`` index its frontend server reads). ``scores.parquet`` holds one row per
prompt: sizes, timing, replacement and completeness scores of the full and pruned graph.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import pandas as pd
import torch

from llmbio import artefacts
from llmbio.attribution.export import (
    graph_tables,
    save_tables,
    to_circuit_tracer_json,
    write_circuit_tracer_files,
)
from llmbio.attribution.plot import plot_graph
from llmbio.attribution.prune import compute_graph_scores, prune_graph
from llmbio.attribution.trace import trace
from llmbio.attribution.viewer import write_graph_html
from llmbio.figures import draw_figure
from llmbio.tokenizer import check_prompt_length, encode


def slugify(text: str, max_len: int = 48) -> str:
    """A file-name-safe id for a prompt (letters, digits, ``-``)."""
    slug = re.sub(r"[^0-9A-Za-z]+", "-", text).strip("-").lower()
    return slug[:max_len].rstrip("-") or "prompt"


def trace_prompt(
    model,
    clt,
    tokenizer,
    prompt: str,
    out_dir: str | Path,
    slug: str,
    feature_labels=None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    save_graph: bool = True,
) -> dict:
    """Trace, prune, score and export one prompt; returns its row of ``scores.parquet``.

    ``save_graph=False`` skips ``<slug>.graph.safetensors`` (the full adjacency, which the
    faithfulness rule reads; ~0.4 GB for a real model's 8k-feature graph).
    """
    out_dir = Path(out_dir)
    ids = torch.tensor(encode(tokenizer, prompt))
    start = time.perf_counter()
    graph = trace(
        model,
        clt,
        ids,
        tokenizer=tokenizer,
        show_progress=False,
        max_feature_nodes=max_feature_nodes,
        batch_size=batch_size,
    )
    seconds = time.perf_counter() - start
    graph.prompt = prompt
    # pruning checks the graph (a broken model's adjacency has a cycle): everything is computed
    # before the first file is written, so a failing prompt leaves none of its files
    pruned = prune_graph(graph)
    full, kept = compute_graph_scores(graph), compute_graph_scores(graph, pruned)
    nodes, edges = graph_tables(graph, pruned, tokenizer=tokenizer, feature_labels=feature_labels)
    graph_json = to_circuit_tracer_json(
        graph, pruned, slug=slug, scan="llmbio", tokenizer=tokenizer, feature_labels=feature_labels
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if save_graph:
        graph.save(out_dir / f"{slug}.graph.safetensors")
    save_tables(nodes, edges, out_dir / f"{slug}.nodes.parquet", out_dir / f"{slug}.edges.parquet")
    write_circuit_tracer_files(graph_json, out_dir / "graph_files")
    write_graph_html(nodes, edges, out_dir / f"{slug}.html", title=prompt)
    tables = [out_dir / f"{slug}.nodes.parquet", out_dir / f"{slug}.edges.parquet"]
    draw_figure(lambda n, e: plot_graph(n, e, title=prompt), out_dir / f"{slug}.png", tables)
    top = int(graph.logit_tokens[0])
    return {
        "slug": slug,
        "prompt": prompt,
        "n_tokens": graph.n_pos,
        "n_features": graph.n_features,
        "n_nodes": graph.n_nodes,
        "n_kept_nodes": int(pruned.node_mask.sum()),
        "n_kept_edges": int(pruned.n_edges),
        "top_token": tokenizer.convert_ids_to_tokens(top),
        "top_probability": float(graph.logit_probabilities[0]),
        "replacement_score": full.replacement,
        "completeness_score": full.completeness,
        "pruned_replacement_score": kept.replacement,
        "pruned_completeness_score": kept.completeness,
        "seconds": seconds,
    }


def trace_stage(
    model_dir,
    transcoder_dir,
    prompts: list[str],
    out_dir,
    max_feature_nodes: int | None = None,
    threads: int = 2,
) -> pd.DataFrame:
    """Trace every prompt into ``out_dir``; write and return ``scores.parquet``."""
    torch.set_num_threads(threads)
    model = artefacts.load_model(model_dir)
    tokenizer = artefacts.load_tokenizer(model_dir)
    for prompt in prompts:  # fail on an unknown word before writing anything
        encode(tokenizer, prompt)
    clt = artefacts.load_transcoder(transcoder_dir, model=model)
    return trace_prompts(model, clt, tokenizer, prompts, out_dir, max_feature_nodes)


def trace_prompts(
    model,
    clt,
    tokenizer,
    prompts: list[str],
    out_dir,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
) -> pd.DataFrame:
    """Trace loaded model + transcoder on every prompt; write and return ``scores.parquet``.

    Every prompt is checked (vocabulary, length) before the first trace. ``scores.parquet`` is
    written last, under a temporary name moved into place; when a trace fails, an ``out_dir``
    this call created (with any parent folder it made) is removed, so no half-filled folder
    looks like a finished one.
    """
    out_dir = Path(out_dir)
    for prompt in prompts:
        check_prompt_length(model, len(encode(tokenizer, prompt)), f"prompt {prompt!r}")
    created = _first_missing(out_dir)
    try:
        rows = []
        for i, prompt in enumerate(prompts):
            row = trace_prompt(
                model,
                clt,
                tokenizer,
                prompt,
                out_dir,
                f"{i:02d}-{slugify(prompt)}",
                max_feature_nodes=max_feature_nodes,
                batch_size=batch_size,
            )
            print(
                f"{row['slug']}: {row['n_features']} features, {row['seconds']:.2f} s, "
                f"replacement {row['replacement_score']:.3f}, "
                f"completeness {row['completeness_score']:.3f}"
            )
            rows.append(row)
        scores = pd.DataFrame(rows)
        out_dir.mkdir(parents=True, exist_ok=True)
        partial = out_dir / "scores.parquet.partial"
        scores.to_parquet(partial, index=False)
        partial.replace(out_dir / "scores.parquet")
    except BaseException:
        if created is not None and created.exists():
            shutil.rmtree(created)
        raise
    return scores


def _first_missing(path: Path) -> Path | None:
    """The outermost folder of ``path`` that does not exist yet (None: ``path`` exists)."""
    if path.exists():
        return None
    while not path.parent.exists():
        path = path.parent
    return path


def faithfulness_stage(
    model_dir,
    transcoder_dir,
    graphs_dir,
    out_table,
    out_figure,
    n_features: int = 50,
    threads: int = 2,
) -> pd.DataFrame:
    """Graph-predicted vs real ablation effects on the top logit for every traced graph.

    Writes one row per sampled feature (``graph`` = the graph's file stem) and prints each
    graph's Spearman correlation between ``predicted_total`` and ``actual``.
    """
    torch.set_num_threads(threads)
    model = artefacts.load_model(model_dir)
    clt = artefacts.load_transcoder(transcoder_dir, model=model)
    return faithfulness_graphs(model, clt, graphs_dir, out_table, out_figure, n_features)


def faithfulness_graphs(
    model, clt, graphs_dir, out_table, out_figure, n_features: int = 50
) -> pd.DataFrame:
    """:func:`faithfulness_stage` with an already loaded model and transcoder.

    Two seeded samples of at most ``n_features`` feature nodes per graph (column ``sample``):
    ``pruned_graph``, the features the pruned graph keeps (what a reader of the graph sees and
    reasons with), and ``all_active``, any active feature (most of which have tiny effects).
    Column ``final_norm``: ``live`` (the real model) for both samples; the pruned sample again
    with the final norm's denominator ``frozen`` at its clean value, as in the graph, which
    separates the output's rescaling from every other nonlinearity the graph leaves out.
    """
    from llmbio.attribution.graph import Graph
    from llmbio.features.faithfulness import faithfulness, plot_faithfulness

    frames = []
    for path in sorted(Path(graphs_dir).glob("*.graph.safetensors")):
        graph = Graph.load(path)
        name = path.name.removesuffix(".graph.safetensors")
        kept = kept_feature_nodes(path.with_name(f"{name}.nodes.parquet"), n_features)
        for sample, nodes, final_norm in (
            ("pruned_graph", kept, "live"),
            ("all_active", None, "live"),
            ("pruned_graph", kept, "frozen"),
        ):
            if nodes is not None and len(nodes) == 0:
                continue
            table, rho = faithfulness(
                model, clt, graph, n_features=n_features, nodes=nodes,
                freeze_final_norm=final_norm == "frozen", show_progress=False,
            )  # fmt: skip
            print(
                f"{name} ({sample}, final norm {final_norm}): Spearman {rho:.3f} "
                f"over {len(table)} features"
            )
            frames.append(
                table.assign(graph=name, sample=sample, final_norm=final_norm, spearman=rho)
            )
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(out_table, index=False)
    draw_figure(lambda t: plot_faithfulness(_as_published(t)), out_figure, [out_table])
    return table


def _as_published(table: pd.DataFrame) -> pd.DataFrame:
    """The rows of the faithfulness figure: the pruned graphs' features on the real model."""
    return table[(table["sample"] == "pruned_graph") & (table["final_norm"] == "live")]


def kept_feature_nodes(nodes_path: Path, n_features: int, seed: int = 0) -> list[int]:
    """Graph indices of up to ``n_features`` feature nodes the pruned graph keeps (seeded)."""
    if not nodes_path.exists():
        raise FileNotFoundError(f"{nodes_path} is missing; rerun the trace_graphs rule")
    nodes = pd.read_parquet(nodes_path, columns=["kind", "node_index", "kept"])
    kept = nodes.loc[(nodes["kind"] == "feature") & nodes["kept"], "node_index"]
    return sorted(kept.sample(min(n_features, len(kept)), random_state=seed).astype(int).tolist())
