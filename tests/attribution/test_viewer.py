"""The offline HTML viewer: payload, self-containment, and rendering in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess

import pandas as pd
import pytest

from llmbio.attribution.viewer import viewer_payload, write_graph_html

NAN = float("nan")


def tables() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two tokens, a one-layer model, three features (one pruned), an error, one logit."""
    rows = [
        # node_id, kind, layer, position, feature, token, label, activation, probability, kept
        ("0_11_0", "feature", 0, 0, 11, "Dallas", "Texas </script>", 2.0, NAN, True),
        ("0_12_1", "feature", 0, 1, 12, " is", "say a capital", 1.0, NAN, True),
        ("0_13_1", "feature", 0, 1, 13, " is", "", 0.5, NAN, False),
        ("0_-1_1", "error", 0, 1, -1, " is", "Err L0", NAN, NAN, True),
        ("E_5_0", "token", -1, 0, -1, "Dallas", "Dallas", NAN, NAN, True),
        ("E_6_1", "token", -1, 1, -1, " is", " is", NAN, NAN, True),
        ("L_7_1", "logit", 1, 1, -1, " Austin", 'Output " Austin"', NAN, 0.8, True),
    ]
    cols = ["node_id", "kind", "layer", "position", "feature", "token", "label", "activation"]
    nodes = pd.DataFrame(rows, columns=cols + ["probability", "kept"])
    nodes.insert(1, "node_index", range(len(nodes)))
    nodes["token_id"] = -1
    nodes["influence"] = [0.5, 0.4, 0.01, 0.2, 0.3, 0.1, 0.0]
    nodes["cumulative_influence"] = nodes["influence"].rank(ascending=False) / len(nodes)
    edges = pd.DataFrame(
        [
            ("E_5_0", "0_11_0", 2.0, True),
            ("0_11_0", "0_12_1", 1.5, True),
            ("0_12_1", "L_7_1", 3.0, True),
            ("0_-1_1", "L_7_1", -0.5, True),
            ("E_6_1", "L_7_1", 0.1, False),
            ("0_13_1", "L_7_1", 0.2, True),  # from a pruned node: not drawn
        ],
        columns=["source", "target", "weight", "kept"],
    )
    return nodes, edges


def test_payload_keeps_kept_nodes_and_edges():
    nodes, edges = tables()
    payload = viewer_payload(nodes, edges)
    ids = [n["id"] for n in payload["nodes"]]
    assert "0_13_1" not in ids and len(ids) == 6
    assert sorted(ids[s] + ">" + ids[t] for s, t, _ in payload["edges"]) == [
        "0_-1_1>L_7_1", "0_11_0>0_12_1", "0_12_1>L_7_1", "E_5_0>0_11_0",
    ]  # fmt: skip
    token = next(n for n in payload["nodes"] if n["id"] == "E_5_0")
    assert token["activation"] is None and token["y"] == 0.0
    with pytest.raises(ValueError, match="graph_tables"):
        viewer_payload(nodes.drop(columns="influence"), edges)


def test_page_is_self_contained(tmp_path):
    nodes, edges = tables()
    page = write_graph_html(nodes, edges, tmp_path / "g.html", title="A & B").read_text()
    assert page.count("<script") == 2 and page.count("</script>") == 2
    assert "<title>A &amp; B</title>" in page
    assert not re.search(r"\b(src|href)=|<link|@import|url\(|fetch\(|XMLHttpRequest", page)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_renders_in_headless_chromium(tmp_path):
    nodes, edges = tables()
    path = write_graph_html(nodes, edges, tmp_path / "graph.html", title="test graph")
    command = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
        f"{path.as_uri()}#node=L_7_1",
    ]  # fmt: skip
    dom = subprocess.run(command, capture_output=True, text=True, timeout=90, check=True).stdout
    assert 'data-rendered-nodes="6"' in dom
    drawn = set(re.findall(r'data-node-id="([^"]+)"', dom))
    assert drawn == set(nodes.loc[nodes["kept"], "node_id"])
    assert "Strongest inputs (2)" in dom and "<span>say a capital</span>" in dom  # pinned logit
