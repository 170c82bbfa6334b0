"""The in-memory graph tables are the ones trace_prompt writes."""

import pandas as pd
import pytest
import torch
from tiny_models import random_clt, tiny_model

from llmbio.attribution.graph import Graph
from llmbio.attribution.outputs import pruned_graph_tables, trace_prompt
from llmbio.stages.attribution import faithfulness_graphs
from llmbio.tokenizer import build_tokenizer


def test_pruned_graph_tables_match_the_written_ones(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat", "a dog ran"], max_number=5)
    model, clt = tiny_model("llama"), random_clt()
    trace_prompt(model, clt, tok, "the cat sat on", tmp_path, "cat", save_graph=False, scan="./x")
    nodes, edges = pruned_graph_tables(model, clt, tok, "the cat sat on")
    pd.testing.assert_frame_equal(nodes, pd.read_parquet(tmp_path / "cat.nodes.parquet"))
    pd.testing.assert_frame_equal(edges, pd.read_parquet(tmp_path / "cat.edges.parquet"))
    assert nodes["kept"].any() and not nodes["kept"].all()


def test_pruned_graph_file_holds_the_kept_features(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat", "a dog ran"], max_number=5)
    model, clt = tiny_model("llama"), random_clt()
    prompt = "the cat sat on the mat"
    for kind in ("full", "pruned"):
        trace_prompt(model, clt, tok, prompt, tmp_path / kind, "cat", scan="./x", graph_file=kind)
    full = Graph.load(tmp_path / "full" / "cat.graph.safetensors")
    small = Graph.load(tmp_path / "pruned" / "cat.graph.safetensors")
    nodes = pd.read_parquet(tmp_path / "full" / "cat.nodes.parquet")
    kept = nodes.loc[(nodes["kind"] == "feature") & nodes["kept"], "node_index"].tolist()
    assert 0 < small.n_features == len(kept) < full.n_features
    assert small.metadata["pruned_from_n_features"] == full.n_features
    rows = torch.tensor(kept + list(range(full.n_features, full.n_nodes)))
    assert torch.equal(small.adjacency, full.adjacency[rows][:, rows])
    assert torch.equal(small.active_features, full.active_features[kept])
    size = {k: (tmp_path / k / "cat.graph.safetensors").stat().st_size for k in ("full", "pruned")}
    assert size["pruned"] < size["full"]


def test_faithfulness_refuses_a_pruned_graph_file(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat", "a dog ran"], max_number=5)
    model, clt = tiny_model("llama"), random_clt()
    trace_prompt(
        model, clt, tok, "the cat sat on", tmp_path, "cat", scan="./x", graph_file="pruned"
    )
    with pytest.raises(ValueError, match="pruned-graph-file"):
        faithfulness_graphs(model, clt, tmp_path, tmp_path / "f.parquet", tmp_path / "f.png")
