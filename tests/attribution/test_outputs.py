"""The in-memory graph tables are the ones trace_prompt writes."""

import pandas as pd
from tiny_models import random_clt, tiny_model

from llmbio.attribution.outputs import pruned_graph_tables, trace_prompt
from llmbio.tokenizer import build_tokenizer


def test_pruned_graph_tables_match_the_written_ones(tmp_path):
    tok = build_tokenizer(["the cat sat on the mat", "a dog ran"], max_number=5)
    model, clt = tiny_model("llama"), random_clt()
    trace_prompt(model, clt, tok, "the cat sat on", tmp_path, "cat", save_graph=False, scan="s")
    nodes, edges = pruned_graph_tables(model, clt, tok, "the cat sat on")
    pd.testing.assert_frame_equal(nodes, pd.read_parquet(tmp_path / "cat.nodes.parquet"))
    pd.testing.assert_frame_equal(edges, pd.read_parquet(tmp_path / "cat.edges.parquet"))
    assert nodes["kept"].any() and not nodes["kept"].all()
