"""Trace prompts into attribution graphs and write every export of them.

For each prompt ``<slug>`` under ``out_dir``: ``<slug>.graph.safetensors`` (the full graph),
``<slug>.nodes.parquet`` / ``<slug>.edges.parquet`` (pruned tables, columns documented in
:mod:`llmbio.attribution.export`), ``<slug>.html`` (offline viewer), ``<slug>.png`` (static
figure), and ``graph_files/<slug>.json`` (circuit-tracer / Neuronpedia format, with the
``graph-metadata.json`` index its frontend server reads). ``scores.parquet`` holds one row per
prompt: sizes, timing, replacement and completeness scores of the full and pruned graph.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pandas as pd
import torch

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
from llmbio.tokenizer import encode


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
    out_dir.mkdir(parents=True, exist_ok=True)
    if save_graph:
        graph.save(out_dir / f"{slug}.graph.safetensors")
    pruned = prune_graph(graph)
    full, kept = compute_graph_scores(graph), compute_graph_scores(graph, pruned)
    nodes, edges = graph_tables(graph, pruned, tokenizer=tokenizer, feature_labels=feature_labels)
    save_tables(nodes, edges, out_dir / f"{slug}.nodes.parquet", out_dir / f"{slug}.edges.parquet")
    write_circuit_tracer_files(
        to_circuit_tracer_json(
            graph,
            pruned,
            slug=slug,
            scan="llmbio",
            tokenizer=tokenizer,
            feature_labels=feature_labels,
        ),
        out_dir / "graph_files",
    )
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
) -> pd.DataFrame:
    """Trace loaded model + transcoder on every prompt; write and return ``scores.parquet``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    scores.to_parquet(out_dir / "scores.parquet", index=False)
    return scores
