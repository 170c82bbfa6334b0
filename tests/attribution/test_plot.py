"""Static figures: layout geometry and smoke tests that the figures are written."""

from __future__ import annotations

import pandas as pd
import pytest

from llmbio.attribution.plot import graph_layout, plot_graph, plot_supernode_graph

NAN = float("nan")


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = [
        ("0_11_0", "feature", 0, 0, 0.5, NAN, "Texas"),
        ("0_12_0", "feature", 0, 0, 0.3, NAN, ""),
        ("1_-1_1", "error", 1, 1, 0.2, NAN, "Err L1"),
        ("E_5_0", "token", -1, 0, 0.4, NAN, "Dallas"),
        ("E_6_1", "token", -1, 1, 0.1, NAN, " is"),
        ("L_7_1", "logit", 2, 1, 0.0, 0.7, 'Output " Austin"'),
        ("L_8_1", "logit", 2, 1, 0.0, 0.2, 'Output " Texas"'),
    ]
    cols = ["node_id", "kind", "layer", "position", "influence", "probability", "label"]
    nodes = pd.DataFrame(rows, columns=cols)
    nodes["token"] = ["Dallas", "Dallas", " is", "Dallas", " is", " Austin", " Texas"]
    nodes["kept"] = True
    edges = pd.DataFrame(
        {
            "source": ["E_5_0", "0_11_0", "0_12_0", "1_-1_1", "E_6_1"],
            "target": ["0_11_0", "L_7_1", "1_-1_1", "L_8_1", "L_7_1"],
            "weight": [2.0, 1.0, -0.5, 0.3, -1.0],
            "kept": [True, True, True, True, False],
        }
    )
    return nodes, edges


def test_layout_rows_and_cells():
    nodes, _ = tables()
    placed = graph_layout(nodes).set_index("node_id")
    assert placed.loc["E_5_0", "y"] == 0 and placed.loc["0_11_0", "y"] == 1
    assert placed.loc["L_7_1", "y"] == 3
    # Two features share a cell: side by side, centred on the position.
    xs = placed.loc[["0_11_0", "0_12_0"], "x"]
    assert xs.nunique() == 2 and xs.mean() == pytest.approx(0.0)
    # The most probable logit sits at the last position, the other to its left.
    assert placed.loc["L_7_1", "x"] == 1.0 and placed.loc["L_8_1", "x"] < 1.0


def test_plot_graph_writes_png(tmp_path):
    nodes, edges = tables()
    fig = plot_graph(nodes, edges, tmp_path / "g.png", title="t", labels={"0_12_0": "say X"})
    assert (tmp_path / "g.png").stat().st_size > 5000
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"Texas", "say X", "Dallas"} <= texts
    with pytest.raises(ValueError, match="weight"):
        plot_graph(nodes, edges.drop(columns="weight"))


def test_plot_supernode_graph(tmp_path):
    supernodes = pd.DataFrame(
        {
            "name": ["Dallas", "Texas", "Austin"],
            "x": [0.0, 0.0, 1.0],
            "y": [0.0, 1.0, 2.0],
            "activation": [1.0, 0.25, NAN],
            "kind": ["token", "feature", "logit"],
        }
    )
    edges = pd.DataFrame({"source": ["Dallas", "Texas"], "target": ["Texas", "Austin"],
                          "weight": [2.0, -1.0]})  # fmt: skip
    fig = plot_supernode_graph(supernodes, edges, tmp_path / "s.png", title="multi-hop")
    assert (tmp_path / "s.png").stat().st_size > 3000
    assert "Texas\n25%" in {t.get_text() for t in fig.axes[0].texts}
    bad = pd.DataFrame({"source": ["Dallas"], "target": ["Sacramento"], "weight": [1.0]})
    with pytest.raises(ValueError, match="Sacramento"):
        plot_supernode_graph(supernodes, bad)
