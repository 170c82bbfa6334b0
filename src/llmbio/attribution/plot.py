"""Static, paper-style figures of attribution graphs, drawn from the node / edge tables.

Layout (shared with the HTML viewer): ``x`` is the token position, ``y`` is the layer, with
token embeddings on row 0, layer ``l`` on row ``l + 1`` and logits on the top row. Nodes
sharing a (layer, position) cell are spread side by side, most influential in the middle.
Colours: positive edges blue, negative vermillion (Okabe-Ito, distinguishable with
colour-vision deficiencies).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

POSITIVE, NEGATIVE = "#0072B2", "#D55E00"
KIND_STYLE = {  # marker, face colour, size
    "feature": ("o", "#F0E6C8", 70),
    "error": ("s", "#BBBBBB", 55),
    "token": ("D", "#CFE3F1", 60),
    "logit": ("H", "#D9EFD5", 110),
}
CELL_WIDTH = 0.84  # share of a position column that a cell's nodes may spread over


def _check_columns(table: pd.DataFrame, needed: set[str], name: str) -> None:
    missing = needed - set(table.columns)
    if missing:
        raise ValueError(
            f"{name} table lacks columns {sorted(missing)}; got {list(table.columns)}."
        )


def graph_layout(nodes: pd.DataFrame) -> pd.DataFrame:
    """``nodes`` with float columns ``x`` and ``y`` added (see the module docstring).

    Logits are laid out along the top row ending at the last position, most probable on the
    right, one position apart (closer when there are more logits than positions).
    """
    _check_columns(nodes, {"kind", "layer", "position", "influence"}, "nodes")
    out = nodes.copy()
    out["y"] = (out["layer"] + 1).astype(float)  # tokens have layer -1, logits n_layers
    out["x"] = out["position"].astype(float)
    inner = out["kind"].isin(["feature", "error"])
    for _, cell in out[inner].groupby(["layer", "position"]):
        order = cell.sort_values("influence", ascending=False).index
        step = min(CELL_WIDTH / len(order), 0.3)
        # Alternate right / left of the centre so the strongest node sits in the middle.
        offsets = [((i + 1) // 2) * (1 if i % 2 else -1) * step for i in range(len(order))]
        out.loc[order, "x"] += np.array(offsets) - np.mean(offsets)
    logits = out.index[out["kind"] == "logit"]
    if len(logits):
        last = float(out.loc[logits, "position"].max())
        span = max(last, 1.0)
        step = min(1.0, span / max(len(logits) - 1, 1))
        ranked = out.loc[logits].sort_values("probability", ascending=True).index
        out.loc[ranked, "x"] = last - step * np.arange(len(ranked))[::-1]
    return out


def _select(nodes: pd.DataFrame, edges: pd.DataFrame, max_nodes: int) -> tuple:
    """Kept tokens and logits plus the ``max_nodes`` most influential kept features/errors."""
    kept = nodes[nodes["kept"]] if "kept" in nodes else nodes
    inner = kept[kept["kind"].isin(["feature", "error"])].nlargest(max_nodes, "influence")
    chosen = pd.concat([kept[kept["kind"].isin(["token", "logit"])], inner])
    ids = set(chosen["node_id"])
    chosen_edges = edges[edges["source"].isin(ids) & edges["target"].isin(ids)]
    if "kept" in chosen_edges:
        chosen_edges = chosen_edges[chosen_edges["kept"]]
    return chosen, chosen_edges


def _draw_edges(ax, edges: pd.DataFrame, xy: dict) -> None:
    if not len(edges):
        return
    edges = edges.reindex(edges["weight"].abs().sort_values().index)  # strongest on top
    strength = edges["weight"].abs().to_numpy() / edges["weight"].abs().max()
    segments = [[xy[s], xy[t]] for s, t in zip(edges["source"], edges["target"], strict=True)]
    colours = np.where(edges["weight"].to_numpy() > 0, POSITIVE, NEGATIVE)
    lines = LineCollection(segments, colors=colours, linewidths=0.3 + 3.2 * strength, zorder=1)
    lines.set_alpha(0.65)
    ax.add_collection(lines)


def _draw_nodes(ax, nodes: pd.DataFrame, labels: Mapping[str, str]) -> None:
    for kind, (marker, colour, size) in KIND_STYLE.items():
        part = nodes[nodes["kind"] == kind]
        ax.scatter(part["x"], part["y"], s=size, marker=marker, c=colour, edgecolors="#333333",
                   linewidths=0.8, zorder=3, label=kind)  # fmt: skip
    for row in nodes.itertuples():
        text = labels.get(row.node_id, row.label if isinstance(row.label, str) else "")
        if row.kind == "token":
            ax.text(row.x, row.y - 0.35, text.replace("\n", "⏎"), ha="center", va="top",
                    fontsize=8, rotation=30 if len(text) > 6 else 0)  # fmt: skip
        elif row.kind == "logit":
            text = labels.get(row.node_id, f'"{row.token}"\np={row.probability:.2f}')
            ax.text(row.x, row.y + 0.25, text, ha="center", va="bottom", fontsize=7)
        elif text and row.kind == "feature":
            box = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.75)
            ax.text(row.x + 0.06, row.y + 0.12, text, fontsize=6.5, zorder=4, bbox=box)


def plot_graph(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    path: str | Path | None = None,
    *,
    title: str = "",
    labels: Mapping[str, str] | None = None,
    max_nodes: int = 60,
) -> Figure:
    """Draw the pruned graph from :func:`~llmbio.attribution.export.graph_tables` output.

    Shows kept tokens and logits and the ``max_nodes`` most influential kept features / errors,
    with the kept edges among them (width by ``|weight|``, colour by sign). ``labels`` maps
    ``node_id`` to text overriding the table's ``label``. Saved to ``path`` if given.
    """
    _check_columns(nodes, {"node_id", "kind", "label"}, "nodes")
    _check_columns(edges, {"source", "target", "weight"}, "edges")
    chosen, chosen_edges = _select(nodes, edges, max_nodes)
    placed = graph_layout(chosen)
    xy = dict(zip(placed["node_id"], zip(placed["x"], placed["y"], strict=True), strict=True))
    n_rows = int(placed["y"].max()) + 1 if len(placed) else 1
    n_cols = int(placed["x"].max() - placed["x"].min()) + 1 if len(placed) else 1
    fig = Figure(figsize=(max(6.0, 1.1 * n_cols + 2.5), max(4.0, 0.5 * n_rows + 2.0)))
    ax = fig.add_subplot()
    _draw_edges(ax, chosen_edges, xy)
    _draw_nodes(ax, placed, labels or {})
    ax.set_yticks(range(n_rows), ["Emb"] + [f"L{i}" for i in range(n_rows - 2)] + ["Logit"])
    ax.set_xticks([])
    ax.set_ylim(-1.2, n_rows + 0.4)
    ax.set_xlim(placed["x"].min() - 0.7, placed["x"].max() + 0.7)
    for side in ("top", "right", "bottom"):
        ax.spines[side].set_visible(False)
    handles = ax.get_legend_handles_labels()[0] + [
        Line2D([], [], color=POSITIVE, lw=2, label="positive edge"),
        Line2D([], [], color=NEGATIVE, lw=2, label="negative edge"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=7,
              frameon=False)  # fmt: skip
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150)
    return fig


SUPERNODE_COLOURS = {"feature": "#F0E6C8", "token": "#CFE3F1", "logit": "#D9EFD5", "error": "#DDD"}


def plot_supernode_graph(
    supernodes: pd.DataFrame,
    edges: pd.DataFrame,
    path: str | Path | None = None,
    *,
    title: str = "",
) -> Figure:
    """Boxes-and-arrows diagram of supernodes, as in the case-study figures of [B].

    ``supernodes``: ``name`` (unique), ``x``, ``y`` (data coordinates; tokens low, logits
    high), optional ``activation`` (fraction of baseline, printed as a percentage and shading
    the box) and ``kind`` (feature / token / logit / error: box colour). ``edges``: ``source``,
    ``target`` (supernode names), ``weight`` (arrow width by ``|weight|``, colour by sign).
    """
    _check_columns(supernodes, {"name", "x", "y"}, "supernodes")
    _check_columns(edges, {"source", "target", "weight"}, "edges")
    if not supernodes["name"].is_unique:
        raise ValueError("supernode names must be unique.")
    unknown = (set(edges["source"]) | set(edges["target"])) - set(supernodes["name"])
    if unknown:
        raise ValueError(f"edges name supernodes that are not in the table: {sorted(unknown)}.")
    span_x = np.ptp(supernodes["x"]) if len(supernodes) > 1 else 1.0
    span_y = np.ptp(supernodes["y"]) if len(supernodes) > 1 else 1.0
    fig = Figure(figsize=(max(4.0, 1.6 * span_x + 2.5), max(3.0, 1.2 * span_y + 1.8)))
    ax = fig.add_subplot()
    boxes = {}
    for row in supernodes.itertuples():
        act = getattr(row, "activation", None)
        text = row.name if act is None or pd.isna(act) else f"{row.name}\n{100 * act:.0f}%"
        colour = SUPERNODE_COLOURS.get(getattr(row, "kind", "feature"), "#F0E6C8")
        alpha = 1.0 if act is None or pd.isna(act) else float(np.clip(0.25 + 0.75 * act, 0.25, 1))
        boxes[row.name] = ax.text(
            row.x, row.y, text, ha="center", va="center", fontsize=9, zorder=2,
            bbox=dict(boxstyle="round,pad=0.4", fc=colour, ec="#333333", alpha=alpha),
        )  # fmt: skip
    max_w = edges["weight"].abs().max() if len(edges) else 1.0
    # Arrows sit above the boxes: boxes are drawn first, so the box outlines the arrows are
    # clipped against are current in every draw (screen, savefig, tight bbox).
    for e in edges.itertuples():
        src, dst = boxes[e.source], boxes[e.target]
        ax.annotate(
            "", xy=dst.get_position(), xytext=src.get_position(), zorder=3,
            arrowprops=dict(arrowstyle="-|>", lw=0.6 + 3.5 * abs(e.weight) / max_w,
                            color=POSITIVE if e.weight > 0 else NEGATIVE, shrinkA=2, shrinkB=2,
                            patchA=src.get_bbox_patch(), patchB=dst.get_bbox_patch()),
        )  # fmt: skip
    pad_x, pad_y = 0.5 + 0.1 * span_x, 0.4 + 0.1 * span_y
    ax.set_xlim(supernodes["x"].min() - pad_x, supernodes["x"].max() + pad_x)
    ax.set_ylim(supernodes["y"].min() - pad_y, supernodes["y"].max() + pad_y)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig
