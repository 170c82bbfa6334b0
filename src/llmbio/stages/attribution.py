"""Stage: trace a list of prompts into attribution graphs and every export of them
(:mod:`llmbio.attribution.outputs` lists the files), and check the graphs' faithfulness.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from llmbio import artefacts
from llmbio.attribution.export import local_scan
from llmbio.attribution.outputs import trace_prompts
from llmbio.config import RunConfig
from llmbio.figures import draw_figure
from llmbio.pretrained import transcoder_scan
from llmbio.tokenizer import encode


def graph_scan(cfg: RunConfig) -> str:
    """``metadata.scan`` of a run's exported graphs: a released run's transcoder set as
    circuit-tracer names it (``owner/name[@revision]``, where its frontend finds the set's
    feature pages), else the run's own folder of feature pages (``./features/<run>``)."""
    if cfg.pretrained is not None:
        return transcoder_scan(cfg.pretrained)
    return local_scan(cfg.run)


def trace_stage(
    model_dir,
    transcoder_dir,
    prompts: list[str],
    out_dir,
    max_feature_nodes: int | None = None,
    threads: int = 2,
    scan: str | None = None,
) -> pd.DataFrame:
    """Trace every prompt into ``out_dir``; write and return ``scores.parquet``.

    ``scan`` (:func:`graph_scan`) defaults to ``./features/<run>`` for ``results/<run>/model``.
    """
    torch.set_num_threads(threads)
    model = artefacts.load_model(model_dir)
    tokenizer = artefacts.load_tokenizer(model_dir)
    for prompt in prompts:  # fail on an unknown word before writing anything
        encode(tokenizer, prompt)
    clt = artefacts.load_transcoder(transcoder_dir, model=model)
    scan = scan or local_scan(Path(model_dir).resolve().parent.name)
    return trace_prompts(model, clt, tokenizer, prompts, out_dir, max_feature_nodes, scan=scan)


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
        if "pruned_from_n_features" in graph.metadata:
            raise ValueError(
                f"{path} holds only the pruned graph's features (written with "
                "--pruned-graph-file); the faithfulness check samples every active feature: "
                "trace the prompts again without it"
            )
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
