"""Supernodes: named groups of transcoder features that play one role in a circuit.

A member is a ``(layer, feature)`` pair, written ``"2/117"`` in configs and on the command line.
A supernode lists members explicitly, selects them with a rule over the label table written by
:mod:`llmbio.features.labels` (``labels.parquet``: one row per feature with ``variable``,
``value``, ``precision``, ``recall``, ``f1``), or both; ``positions`` optionally restricts it
to some token positions of a prompt. Rules are either a mapping::

    {"variable": "state", "value": "Texas", "min_f1": 0.5}   # also min_precision, min_recall,
                                                              # layers: [1, 2]
or a pandas query string over the label table (``"variable == 'state' and f1 > 0.5"``).

:func:`supernode_graph` collapses a pruned graph's node / edge tables
(:mod:`llmbio.attribution.export`) into the tables that
:func:`llmbio.attribution.plot.plot_supernode_graph` draws.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

FeatureKey = tuple[int, int]
_FEATURE_ID = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
_RULE_KEYS = {"variable", "value", "min_f1", "min_precision", "min_recall", "layers"}


def parse_feature_id(text: str | Sequence[int]) -> FeatureKey:
    """``"2/117"`` (or ``(2, 117)``) -> ``(2, 117)``: layer 2, feature 117."""
    if not isinstance(text, str):
        layer, feature = (int(v) for v in text)
        return layer, feature
    match = _FEATURE_ID.match(text)
    if match is None:
        raise ValueError(f"Feature id {text!r} is not of the form 'layer/feature', e.g. '2/117'.")
    return int(match.group(1)), int(match.group(2))


def format_feature_id(key: FeatureKey) -> str:
    return f"{key[0]}/{key[1]}"


@dataclass(frozen=True)
class Supernode:
    """A named group of features; ``features`` holds the explicit (or resolved) members."""

    name: str
    features: tuple[FeatureKey, ...] = ()
    rule: Mapping | str | None = field(default=None, compare=False)
    positions: tuple[int, ...] | None = None  # None: every position

    @classmethod
    def make(
        cls,
        name: str,
        features: Iterable[str | Sequence[int]] = (),
        rule: Mapping | str | None = None,
        positions: Iterable[int] | int | None = None,
    ) -> Supernode:
        """Build from loose input: ``"2/117"`` strings or pairs, a position or a list of them."""
        if not name:
            raise ValueError("A supernode needs a non-empty name.")
        if isinstance(rule, Mapping):
            unknown = set(rule) - _RULE_KEYS
            if unknown or "variable" not in rule:
                raise ValueError(
                    f"Supernode {name!r}: rule keys {sorted(unknown)} unknown or 'variable' "
                    f"missing; a rule mapping takes {sorted(_RULE_KEYS)}."
                )
        if isinstance(positions, int):
            positions = (positions,)
        keys = tuple(dict.fromkeys(parse_feature_id(f) for f in features))
        pos = None if positions is None else tuple(int(p) for p in positions)
        if not keys and rule is None:
            raise ValueError(f"Supernode {name!r} has neither features nor a label rule.")
        return cls(name, keys, rule, pos)

    def members_at(self, position: int) -> bool:
        return self.positions is None or position in self.positions


def supernodes_from_dict(spec: Mapping[str, Mapping]) -> list[Supernode]:
    """``{name: {"features": [...], "rule": ..., "positions": [...]}}`` (e.g. from YAML)."""
    out = []
    for name, body in spec.items():
        unknown = set(body) - {"features", "rule", "positions"}
        if unknown:
            raise ValueError(
                f"Supernode {name!r} has unknown keys {sorted(unknown)}; "
                "use features, rule, positions."
            )
        out.append(Supernode.make(name, body.get("features", ()), body.get("rule"),
                                  body.get("positions")))  # fmt: skip
    return out


def select_features(labels: pd.DataFrame, rule: Mapping | str) -> list[FeatureKey]:
    """``(layer, feature)`` rows of the label table matching ``rule`` (see module docstring)."""
    missing = {"layer", "feature"} - set(labels.columns)
    if missing:
        raise ValueError(f"The label table lacks columns {sorted(missing)}; use labels.parquet.")
    if isinstance(rule, str):
        try:
            chosen = labels.query(rule)
        except Exception as err:  # pandas raises many types for a bad expression
            raise ValueError(f"Bad label query {rule!r}: {err}") from err
    else:
        mask = labels["variable"].astype(str) == str(rule["variable"])
        if "value" in rule:
            mask &= labels["value"].astype(str) == str(rule["value"])
        for key, column in (("min_f1", "f1"), ("min_precision", "precision"),
                            ("min_recall", "recall")):  # fmt: skip
            if key in rule:
                mask &= labels[column] >= float(rule[key])
        if "layers" in rule:
            mask &= labels["layer"].isin([int(x) for x in rule["layers"]])
        chosen = labels[mask]
    return [(int(la), int(f)) for la, f in zip(chosen["layer"], chosen["feature"], strict=True)]


def resolve(supernodes: Iterable[Supernode], labels: pd.DataFrame | None = None) -> list[Supernode]:
    """Supernodes whose ``features`` include their rule's matches (explicit members first)."""
    out = []
    for node in supernodes:
        if node.rule is None:
            out.append(node)
            continue
        if labels is None:
            raise ValueError(
                f"Supernode {node.name!r} has a label rule; pass the label table "
                "(results/<run>/features/labels.parquet)."
            )
        keys = tuple(dict.fromkeys([*node.features, *select_features(labels, node.rule)]))
        out.append(replace(node, features=keys))
    return out


def assign_nodes(nodes: pd.DataFrame, supernodes: Sequence[Supernode]) -> pd.Series:
    """Supernode name of each feature node of a node table (None if unassigned).

    A node matching several supernodes goes to the first one listed.
    """
    lookup: dict[FeatureKey, list[Supernode]] = {}
    for node in supernodes:
        for key in node.features:
            lookup.setdefault(key, []).append(node)
    names = []
    for kind, layer, feat, pos in zip(
        nodes["kind"], nodes["layer"], nodes["feature"], nodes["position"], strict=True
    ):
        owners = lookup.get((int(layer), int(feat)), []) if kind == "feature" else []
        names.append(next((s.name for s in owners if s.members_at(int(pos))), None))
    return pd.Series(names, index=nodes.index, dtype=object)


def _fallback_names(nodes: pd.DataFrame) -> pd.Series:
    """Names for nodes outside every supernode: tokens, logits, lone features and errors."""
    label = nodes["label"] if "label" in nodes else pd.Series("", index=nodes.index)
    names = []
    for row, lab in zip(nodes.itertuples(), label, strict=True):
        if row.kind == "token":
            names.append(str(row.token).strip() or repr(row.token))
        elif row.kind == "logit":
            names.append(f'Output "{str(row.token).strip()}"')
        elif row.kind == "error":
            names.append(f"Err L{row.layer}@{row.position}")
        else:
            base = lab if isinstance(lab, str) and lab else f"{row.layer}/{row.feature}"
            names.append(f"{base}@{row.position}")
    names = pd.Series(names, index=nodes.index)
    clash = names.duplicated(keep=False)
    names[clash] = names[clash] + " [" + nodes.loc[clash, "node_id"].astype(str) + "]"
    return names


def supernode_graph(
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    supernodes: Sequence[Supernode],
    *,
    labels: pd.DataFrame | None = None,
    keep_unassigned: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Collapse a graph's node / edge tables into supernodes.

    Only kept nodes and edges count (``kept`` columns, when present). Tokens and logits always
    stay as their own nodes; other unassigned nodes stay (``keep_unassigned``, if they keep an
    edge) or are dropped with their edges. Edge weights between groups are summed; edges
    inside a group are dropped.

    Returns ``(supernodes, edges)``: ``name``, ``kind``, ``x`` (mean member position), ``y``
    (mean member layer + 1: tokens 0, logits ``n_layers + 1``), ``n_members``, ``influence``
    (sum), ``total_activation`` (sum over feature members); and ``source``, ``target``,
    ``weight``, ``n_edges``: the inputs of
    :func:`llmbio.attribution.plot.plot_supernode_graph`.
    """
    needed = {"node_id", "kind", "layer", "position", "feature", "token"}
    if needed - set(nodes.columns) or {"source", "target", "weight"} - set(edges.columns):
        raise ValueError(
            "Pass the node and edge tables of llmbio.attribution.export.graph_tables; the node "
            f"table needs {sorted(needed)}, the edge table source, target, weight."
        )
    nodes = nodes[nodes["kept"]] if "kept" in nodes else nodes
    edges = edges[edges["kept"]] if "kept" in edges else edges
    groups = assign_nodes(nodes, resolve(supernodes, labels))
    always = nodes["kind"].isin(["token", "logit"])
    grouped = groups.notna()
    keep = grouped | always | keep_unassigned
    name = groups.where(grouped, _fallback_names(nodes))[keep]
    table = nodes[keep].assign(name=name, y=nodes["layer"] + 1)
    for column in ("activation", "influence"):
        if column not in table:
            table[column] = np.nan
    agg = table.groupby("name", sort=False).agg(
        kind=("kind", "first"),
        x=("position", "mean"),
        y=("y", "mean"),
        n_members=("node_id", "size"),
        influence=("influence", "sum"),
        total_activation=("activation", "sum"),
    )
    agg.loc[agg["kind"] != "feature", "total_activation"] = np.nan
    out_edges = _collapse_edges(edges, dict(zip(table["node_id"], table["name"], strict=True)))
    # Unassigned nodes left without edges would only clutter the diagram.
    linked_names = set(out_edges["source"]) | set(out_edges["target"])
    useful = agg.index.isin(linked_names) | agg.index.isin(table.loc[grouped[keep], "name"])
    useful |= agg["kind"].isin(["token", "logit"]).to_numpy()
    return _spread(agg[useful].reset_index()), out_edges


def _collapse_edges(edges: pd.DataFrame, name_of: dict[str, str]) -> pd.DataFrame:
    """Edges between groups, weights summed; edges inside a group or to dropped nodes go."""
    src, dst = edges["source"].map(name_of), edges["target"].map(name_of)
    linked = edges.assign(source=src, target=dst).dropna(subset=["source", "target"])
    linked = linked[linked["source"] != linked["target"]]
    return (
        linked.groupby(["source", "target"], sort=False)
        .agg(weight=("weight", "sum"), n_edges=("weight", "size"))
        .reset_index()
    )


def _spread(table: pd.DataFrame, step: float = 0.35) -> pd.DataFrame:
    """Shift boxes that share a spot sideways so that none hide each other."""
    table = table.copy()
    spot = [f"{x:.2f},{y:.2f}" for x, y in zip(table["x"], table["y"], strict=True)]
    for rows in table.groupby(spot, sort=False).indices.values():
        if len(rows) > 1:
            offsets = (np.arange(len(rows)) - (len(rows) - 1) / 2) * step
            table.loc[table.index[rows], "x"] += offsets
    return table
