"""Scoring and summarising the graph-derived addition paths, on made-up tables."""

import pandas as pd

from llmbio.cases.arithmetic import graph_derived as gd


def test_paths_scored_against_the_census_among_graph_features():
    found = pd.DataFrame({"layer": [1, 1, 2, 2], "feature": [1, 2, 3, 4],
                          "path": ["low_order", "magnitude", "magnitude", "other"]})  # fmt: skip
    paths = ["low_order", "low_order", "magnitude", "magnitude"]
    census = pd.DataFrame({"layer": [1, 1, 2, 3], "feature": [1, 2, 4, 9], "path": paths})
    scores = gd.score_paths(found, census).set_index("path")
    assert scores.loc["low_order", ["precision", "recall"]].tolist() == [1.0, 0.5]
    # 3/9 is not in the graph: the truth in the graph is 2/4 only, which was missed
    assert scores.loc["magnitude", ["precision", "recall", "n_truth"]].tolist() == [0.0, 0.0, 1]


def test_summary_beside_the_census_groups():
    graph = pd.DataFrame({"experiment": ["residue_swap"] * 2 + ["block_swap"] * 2,
                          "success": [True, False, False, False]})  # fmt: skip
    truth = graph.assign(success=True)
    out = gd.summary(graph, truth).set_index("experiment")
    assert out.loc["residue_swap", "gap"] == 0.5 and out.loc["block_swap", "gap"] == 1.0
    assert gd.summary(graph.iloc[:0], truth).empty
