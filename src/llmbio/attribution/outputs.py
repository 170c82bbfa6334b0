"""Trace prompts into attribution graphs and write every export of them.

For each prompt ``<slug>`` under ``out_dir``: ``<slug>.graph.safetensors`` (the full graph, or
with ``graph_file="pruned"`` only the feature nodes pruning keeps),
``<slug>.nodes.parquet`` / ``<slug>.edges.parquet`` (pruned tables, columns documented in
:mod:`llmbio.attribution.export`), ``<slug>.html`` (offline viewer), ``<slug>.png`` (static
figure), and ``graph_files/<slug>.json`` (circuit-tracer / Neuronpedia format, with the
``graph-metadata.json`` index its frontend server reads; ``metadata.scan`` from
:func:`llmbio.stages.attribution.graph_scan`). ``scores.parquet`` holds one row per
prompt: sizes, timing, replacement and completeness scores of the full and pruned graph.
"""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path
from typing import Literal

import pandas as pd
import torch

from llmbio.attribution.export import (
    graph_tables,
    save_tables,
    to_circuit_tracer_json,
    write_circuit_tracer_files,
)
from llmbio.attribution.graph import Graph
from llmbio.attribution.plot import plot_graph
from llmbio.attribution.prune import PrunedGraph, compute_graph_scores, prune_graph
from llmbio.attribution.trace import release_freed_memory, trace
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
    *,
    scan: str,
    graph_file: Literal["full", "pruned"] = "full",
) -> dict:
    """Trace, prune, score and export one prompt; returns its row of ``scores.parquet``.

    ``save_graph=False`` skips ``<slug>.graph.safetensors`` (the full adjacency, which the
    faithfulness rule reads; ~0.4 GB for a real model's 8k-feature graph). ``graph_file=
    "pruned"`` writes it with only the feature nodes pruning keeps (and every error, token and
    logit node), so its size follows the pruned graph: a 64-token organism graph is under 1 MB
    instead of ~0.5 GB; the faithfulness rule's ``all_active`` sample needs the full one.
    ``scan`` goes into the exported JSON (:func:`llmbio.stages.attribution.graph_scan`).
    """
    if graph_file not in ("full", "pruned"):
        raise ValueError(f"graph_file must be 'full' or 'pruned', got {graph_file!r}.")
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
    release_freed_memory()  # their adjacency copies, before the file's serialised copy
    nodes, edges = graph_tables(graph, pruned, tokenizer=tokenizer, feature_labels=feature_labels)
    graph_json = to_circuit_tracer_json(
        graph, pruned, slug=slug, scan=scan, tokenizer=tokenizer, feature_labels=feature_labels
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if save_graph:
        _graph_file(graph, pruned, graph_file).save(out_dir / f"{slug}.graph.safetensors")
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


def _graph_file(graph: Graph, pruned: PrunedGraph, graph_file: str) -> Graph:
    if graph_file == "full":
        return graph
    kept = graph.with_features(pruned.node_mask[: graph.n_features].nonzero()[:, 0])
    kept.metadata["pruned_from_n_features"] = graph.n_features
    kept.metadata["node_threshold"] = pruned.node_threshold
    return kept


def pruned_graph_tables(model, clt, tokenizer, prompt: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Trace and prune one prompt as :func:`trace_prompt` does; its ``(nodes, edges)`` tables
    in memory, no file written (for studies that read many graphs)."""
    ids = torch.tensor(encode(tokenizer, prompt))
    graph = trace(model, clt, ids, tokenizer=tokenizer, show_progress=False)
    return graph_tables(graph, prune_graph(graph), tokenizer=tokenizer)


def trace_prompts(
    model,
    clt,
    tokenizer,
    prompts: list[str],
    out_dir,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    *,
    scan: str,
    graph_file: Literal["full", "pruned"] = "full",
) -> pd.DataFrame:
    """Trace loaded model + transcoder on every prompt; write and return ``scores.parquet``
    (``scan``: :func:`llmbio.stages.attribution.graph_scan`; ``graph_file``: :func:`trace_prompt`).

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
                scan=scan,
                graph_file=graph_file,
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
