"""One self-contained, offline HTML page to explore a pruned attribution graph.

The page inlines its data (JSON), script (``viewer.js``) and style (``viewer.css``) and makes
no network requests. It draws an SVG with the layout of :func:`llmbio.attribution.plot.
graph_layout` (tokens at the bottom, one row per layer, logits on top); hovering or clicking a
node shows its details and strongest incoming / outgoing edges, and a search box finds nodes
by id, label or token. Every drawn node is an SVG ``<g data-node-id="...">``.
"""

from __future__ import annotations

import html
import json
import math
from importlib.resources import files
from pathlib import Path

import pandas as pd

from llmbio.attribution.plot import graph_layout

_NODE_FIELDS = {  # payload key -> node table column
    "id": "node_id",
    "kind": "kind",
    "layer": "layer",
    "pos": "position",
    "feature": "feature",
    "token": "token",
    "label": "label",
    "activation": "activation",
    "influence": "influence",
    "cumulative": "cumulative_influence",
    "probability": "probability",
    "x": "x",
    "y": "y",
}


def _clean(value: object) -> object:
    """JSON-safe scalar: numpy types to Python, NaN to null."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def viewer_payload(nodes: pd.DataFrame, edges: pd.DataFrame, max_edges: int = 20000) -> dict:
    """The data the page draws: kept nodes with layout, and kept edges among them.

    Returns ``{"nodes": [{id, kind, layer, pos, ...}], "edges": [[source_i, target_i,
    weight]]}`` with edges indexing ``nodes``; at most ``max_edges`` edges, strongest first.
    """
    missing = {c for c in _NODE_FIELDS.values() if c not in ("x", "y")} - set(nodes.columns)
    missing |= {"source", "target", "weight"} - set(edges.columns)
    if missing:
        raise ValueError(
            f"Tables lack columns {sorted(missing)}; build them with "
            "llmbio.attribution.export.graph_tables."
        )
    kept = nodes[nodes["kept"]] if "kept" in nodes else nodes
    placed = graph_layout(kept).reset_index(drop=True)
    index = {node_id: i for i, node_id in enumerate(placed["node_id"])}
    chosen = edges[edges["source"].isin(index) & edges["target"].isin(index)]
    if "kept" in chosen:
        chosen = chosen[chosen["kept"]]
    chosen = chosen.reindex(chosen["weight"].abs().sort_values(ascending=False).index)
    chosen = chosen.head(max_edges)
    node_rows = [
        {key: _clean(row[col]) for key, col in _NODE_FIELDS.items()} for _, row in placed.iterrows()
    ]
    edge_rows = [
        [index[s], index[t], float(w)]
        for s, t, w in zip(chosen["source"], chosen["target"], chosen["weight"], strict=True)
    ]
    return {"nodes": node_rows, "edges": edge_rows}


def _asset(name: str) -> str:
    return files("llmbio.attribution").joinpath(name).read_text(encoding="utf-8")


def _script_json(data: dict) -> str:
    """JSON safe to inline in a ``<script>`` element (no ``</script>`` or ``<!--`` inside)."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def write_graph_html(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    path: str | Path,
    title: str = "Attribution graph",
    max_edges: int = 20000,
) -> Path:
    """Write the viewer page for the node / edge tables of
    :func:`~llmbio.attribution.export.graph_tables` to ``path`` and return it."""
    payload = viewer_payload(nodes, edges, max_edges)
    page = (
        "<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
        f"<title>{html.escape(title)}</title>\n<style>\n{_asset('viewer.css')}</style>\n"
        "</head>\n<body>\n<header>\n"
        f"<h1>{html.escape(title)}</h1>\n"
        "<input id='search' type='search' placeholder='Search id, label or token'"
        " autocomplete='off'>\n<span id='status'></span>\n</header>\n"
        "<main>\n<div id='graph'></div>\n<aside id='details'></aside>\n</main>\n"
        f"<script id='graph-data' type='application/json'>{_script_json(payload)}</script>\n"
        f"<script>\n{_asset('viewer.js')}</script>\n</body>\n</html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
