"""Export a (pruned) attribution graph as tidy tables and as circuit-tracer / Neuronpedia JSON.

Node table (:func:`node_table`), one row per node of the graph, in graph order:

- ``node_id`` (str): features ``{layer}_{feature}_{pos}``, errors ``{layer}_-1_{pos}``,
  tokens ``E_{token_id}_{pos}``, logits ``L_{token_id}_{pos}``. Unique within a graph.
- ``node_index`` (int): row / column of the node in ``Graph.adjacency``.
- ``kind`` (str): ``feature``, ``error``, ``token`` or ``logit``.
- ``layer`` (int): the feature's / error's layer; tokens -1, logits ``n_layers``.
- ``position`` (int): the token position; logits sit at the last position.
- ``feature`` (int): transcoder feature id; -1 for other kinds.
- ``token_id`` (int): vocabulary id of a token or logit node; -1 for other kinds.
- ``token`` (str): the prompt token at ``position``, or the output token for a logit.
- ``activation`` (float): feature activation; NaN for other kinds.
- ``probability`` (float): model probability of a logit's token; NaN for other kinds.
- ``influence`` (float): influence on the output (``PrunedGraph.influence``).
- ``cumulative_influence`` (float): share of total influence held by nodes at least this
  influential (what circuit-tracer's JSON calls ``influence``).
- ``kept`` (bool): the node survived pruning.
- ``label`` (str): the given feature label; for other kinds a short description
  (the token, ``Err L{layer}``, ``Output "tok" (p=0.123)``); "" for unlabelled features.

Edge table, one row per non-zero edge between two kept nodes (every non-zero edge if the
graph was not pruned): ``source``, ``target`` (node ids), ``source_index``, ``target_index``
(adjacency indices), ``weight`` (float, ``adjacency[target, source]``), ``kept`` (bool, the
edge survived edge pruning).

The JSON (:func:`to_circuit_tracer_json`) is what circuit-tracer's ``create_graph_files``
writes (``frontend/graph_models.py``, 0.5.1 and later), field for field; its id scheme, the
meaning of ``metadata.scan`` and our few deliberate differences are listed there.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from llmbio.attribution.graph import Graph
from llmbio.attribution.prune import PrunedGraph, logit_weights, node_influence, prune_graph

_NAN = float("nan")
FeatureLabels = Mapping[tuple[int, int], str] | pd.DataFrame


def token_strings(
    graph: Graph, tokenizer: Any = None, logit_strings: Sequence[str] | None = None
) -> tuple[list[str], list[str]]:
    """Prompt token strings and logit token strings, decoded one token at a time.

    Prompt tokens come from ``tokenizer.decode`` if given, else ``graph.tokens``. Logit tokens
    come from ``logit_strings``, else ``tokenizer.decode``, else ``graph.metadata
    ["logit_token_strings"]``, else ``#<id>`` placeholders.
    """
    ids = [int(t) for t in graph.input_ids]
    prompt = [tokenizer.decode([t]) for t in ids] if tokenizer is not None else list(graph.tokens)
    if len(prompt) != graph.n_pos:
        raise ValueError(f"Graph has {graph.n_pos} input ids but {len(prompt)} token strings.")
    vocab = [int(t) for t in graph.logit_tokens]
    if logit_strings is None and tokenizer is not None:
        logit_strings = [tokenizer.decode([t]) for t in vocab]
    if logit_strings is None:
        logit_strings = graph.metadata.get("logit_token_strings")
    if logit_strings is None:
        logit_strings = [f"#{t}" for t in vocab]
    if len(logit_strings) != graph.n_logits:
        raise ValueError(
            f"Graph has {graph.n_logits} logits but {len(logit_strings)} logit strings were given."
        )
    return prompt, list(logit_strings)


def _label_lookup(feature_labels: FeatureLabels | None) -> dict[tuple[int, int], str]:
    if feature_labels is None:
        return {}
    if isinstance(feature_labels, pd.DataFrame):
        missing = {"layer", "feature", "label"} - set(feature_labels.columns)
        if missing:
            raise ValueError(f"feature_labels table lacks columns {sorted(missing)}.")
        rows = zip(
            feature_labels["layer"], feature_labels["feature"], feature_labels["label"], strict=True
        )
        return {(int(la), int(f)): str(lab) for la, f, lab in rows}
    return {(int(la), int(f)): str(lab) for (la, f), lab in feature_labels.items()}


def _node_frame(graph: Graph, prompt: list[str], logits: list[str], labels: dict) -> pd.DataFrame:
    """The node table's descriptive columns (everything but influence and ``kept``)."""
    n, n_layers = graph.n_pos, graph.n_layers
    n_inner = graph.n_features + n_layers * n  # features and errors
    n_rest = graph.n_nodes - graph.n_features
    feats = graph.active_features.reshape(-1, 3).T.tolist()
    layer = feats[0] + [la for la in range(n_layers) for _ in range(n)] + [-1] * n
    layer += [n_layers] * graph.n_logits
    position = feats[1] + list(range(n)) * n_layers + list(range(n)) + [n - 1] * graph.n_logits
    feature = feats[2] + [-1] * n_rest
    token_ids = graph.input_ids.tolist() + graph.logit_tokens.tolist()
    probs = graph.logit_probabilities.tolist()
    kinds = ["feature"] * graph.n_features + ["error"] * (n_layers * n) + ["token"] * n
    node_id = [
        f"{la}_{f}_{p}" for la, f, p in zip(layer[:n_inner], feature, position, strict=False)
    ]
    node_id += [f"E_{t}_{p}" for p, t in enumerate(graph.input_ids.tolist())]
    node_id += [f"L_{t}_{n - 1}" for t in graph.logit_tokens.tolist()]
    label = [labels.get((la, f), "") for la, f in zip(feats[0], feats[2], strict=True)]
    label += [f"Err L{la}" for la in layer[graph.n_features : n_inner]] + prompt
    label += [f'Output "{t}" (p={p:.3f})' for t, p in zip(logits, probs, strict=True)]
    return pd.DataFrame(
        {
            "node_id": node_id,
            "node_index": range(graph.n_nodes),
            "kind": kinds + ["logit"] * graph.n_logits,
            "layer": layer,
            "position": position,
            "feature": feature,
            "token_id": [-1] * n_inner + token_ids,
            "token": [prompt[p] for p in position[: n_inner + n]] + logits,
            "activation": graph.activation_values.tolist() + [_NAN] * n_rest,
            "probability": [_NAN] * (n_inner + n) + probs,
            "label": label,
        }
    )


def _masks(graph: Graph, pruned: PrunedGraph | None) -> PrunedGraph:
    """``pruned``, checked against ``graph``; or an everything-kept stand-in with influences."""
    if pruned is not None:
        if pruned.node_mask.shape != (graph.n_nodes,):
            raise ValueError("pruned does not belong to this graph (node counts differ).")
        return pruned
    influence = node_influence(graph.adjacency, logit_weights(graph))
    ordered, order = torch.sort(influence, descending=True)
    cumulative = torch.zeros_like(influence)
    cumulative[order] = torch.cumsum(ordered, 0) / ordered.sum().clamp(min=1e-30)
    keep_all = torch.ones(graph.n_nodes, dtype=torch.bool)
    return PrunedGraph(keep_all, graph.adjacency != 0, influence, cumulative, 1.0, 1.0)


def node_table(
    graph: Graph,
    pruned: PrunedGraph | None = None,
    tokenizer: Any = None,
    feature_labels: FeatureLabels | None = None,
    logit_strings: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The node table (columns in the module docstring), one row per node in graph order."""
    masks = _masks(graph, pruned)
    prompt, logits = token_strings(graph, tokenizer, logit_strings)
    nodes = _node_frame(graph, prompt, logits, _label_lookup(feature_labels))
    duplicated = nodes.loc[nodes["node_id"].duplicated(), "node_id"].tolist()
    if duplicated:
        raise ValueError(
            f"Graph lists active features more than once: {duplicated[:5]}; each "
            "(layer, position, feature) must appear once in active_features. Re-trace the graph."
        )
    nodes.insert(10, "influence", masks.influence.double().numpy())
    nodes.insert(11, "cumulative_influence", masks.cumulative_influence.double().numpy())
    nodes.insert(12, "kept", masks.node_mask.numpy())
    return nodes


def edge_table(graph: Graph, pruned: PrunedGraph | None = None) -> pd.DataFrame:
    """The edge table: non-zero edges between kept nodes (columns in the module docstring)."""
    masks = _masks(graph, pruned)
    kept = masks.node_mask.nonzero()[:, 0]
    # the kept block only: N x N masks of a long prompt's graph take GBs
    targets, sources = (graph.adjacency[kept][:, kept] != 0).nonzero(as_tuple=True)
    targets, sources = kept[targets], kept[sources]
    ids = _node_ids(graph)
    return pd.DataFrame(
        {
            "source": [ids[i] for i in sources.tolist()],
            "target": [ids[i] for i in targets.tolist()],
            "source_index": sources.numpy(),
            "target_index": targets.numpy(),
            "weight": graph.adjacency[targets, sources].double().numpy(),
            "kept": masks.edge_mask[targets, sources].numpy(),
        }
    )


def _node_ids(graph: Graph) -> list[str]:
    blank = [""] * graph.n_pos
    return _node_frame(graph, blank, [""] * graph.n_logits, {})["node_id"].tolist()


def graph_tables(
    graph: Graph,
    pruned: PrunedGraph | None = None,
    tokenizer: Any = None,
    feature_labels: FeatureLabels | None = None,
    logit_strings: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(nodes, edges)``: :func:`node_table` and :func:`edge_table`.

    ``feature_labels`` maps ``(layer, feature)`` to a label, or is a table with columns
    ``layer``, ``feature``, ``label``. Without ``pruned`` every node and edge is ``kept``.
    """
    masks = _masks(graph, pruned)
    nodes = node_table(graph, masks, tokenizer, feature_labels, logit_strings)
    return nodes, edge_table(graph, masks)


def save_tables(
    nodes: pd.DataFrame, edges: pd.DataFrame, nodes_path: str | Path, edges_path: str | Path
) -> None:
    """Write both tables as Parquet (no index), creating parent folders."""
    for table, path in ((nodes, nodes_path), (edges, edges_path)):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        table.to_parquet(path, index=False)


_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FEATURE_TYPE = {
    "feature": "cross layer transcoder",
    "error": "mlp reconstruction error",
    "token": "embedding",
    "logit": "logit",
}
# frontend/graph_models.py's Node fields, in its order, with its defaults.
_NODE_DEFAULTS = {
    "node_id": "",
    "feature": 0,
    "layer": "",
    "ctx_idx": 0,
    "feature_type": "",
    "token_prob": 0.0,
    "is_target_logit": False,
    "run_idx": 0,
    "reverse_ctx_idx": 0,
    "jsNodeId": "",
    "clerp": "",
    "influence": None,
    "activation": None,
}


def _ct_node(row: Any, n_layers: int, first_logit: int) -> dict:
    """One circuit-tracer node from a node-table row (``Node.feature_node`` and siblings)."""
    layer, pos, feat, tid = int(row.layer), int(row.position), int(row.feature), int(row.token_id)
    node = dict(_NODE_DEFAULTS, ctx_idx=pos, feature_type=_FEATURE_TYPE[row.kind])
    node["influence"] = float(row.cumulative_influence)
    if row.kind == "feature":
        node.update(
            node_id=f"{layer}_{feat}_{pos}", feature=(layer + feat) * (layer + feat + 1) // 2 + feat
        )
        node.update(layer=str(layer), jsNodeId=f"{layer}_{feat}-0", clerp=row.label)
        node["activation"] = float(row.activation)
    elif row.kind == "error":
        node.update(node_id=f"{layer}_-1_{pos}", feature=-1, layer=str(layer))
        node["jsNodeId"] = f"{layer}_-1-{pos}"
    elif row.kind == "token":
        node.update(node_id=f"E_{tid}_{pos}", feature=pos, layer="E", jsNodeId=f"E_{tid}-{pos}")
    else:
        p, top = float(row.probability), str(n_layers + 1)
        node.update(node_id=f"{top}_{tid}_{pos}", feature=tid, layer=top, jsNodeId=f"L_{tid}-{pos}")
        node.update(
            token_prob=p, is_target_logit=int(row.node_index) == first_logit, influence=None
        )
        node["clerp"] = f'Output "{row.token}" (p={p:.3f})'
    return node


def local_scan(name: str) -> str:
    """``metadata.scan`` for a transcoder set on no hub: ``./features/<name>``.

    circuit-tracer's frontend reads a scan starting with ``./`` as a folder beside its page and
    loads ``./features/<name>/<feature>.json`` (``feature`` as in a node's ``feature`` field)
    from it; any other scan it reads as a Hugging Face repo id to fetch feature pages from, and
    Neuronpedia reads it as the id of one of its models, which a local set is not.
    """
    if not _SLUG.match(name):
        raise ValueError(f"name {name!r} must be letters, digits, '.', '_' or '-'.")
    return f"./features/{name}"


def to_circuit_tracer_json(
    graph: Graph,
    pruned: PrunedGraph | None = None,
    *,
    slug: str,
    scan: str | list[str],
    tokenizer: Any = None,
    logit_strings: Sequence[str] | None = None,
    feature_labels: FeatureLabels | None = None,
) -> dict:
    """The pruned graph as circuit-tracer's attribution-graph JSON ``{metadata, qParams, nodes,
    links}``, as its ``create_graph_files`` builds it (``pruned=None`` prunes at 0.8 / 0.98).

    Ids (``node_id``, then ``jsNodeId``): features ``{layer}_{feature}_{pos}``,
    ``{layer}_{feature}-0``; errors ``{layer}_-1_{pos}``, ``{layer}_-1-{pos}``; embeddings
    ``E_{token_id}_{pos}``, ``E_{token_id}-{pos}``; logits ``{n_layers+1}_{token_id}_{n_pos-1}``,
    ``L_{token_id}-{n_pos-1}``. All are distinct (errors before circuit-tracer 0.5.1 were
    ``0_{layer}_{pos}``, the id of a layer-0 feature). Node ``influence`` is the cumulative
    influence.

    ``scan`` names the transcoder set: circuit-tracer's frontend fetches feature pages from the
    Hugging Face repo ``owner/name[@revision]`` it names (a released set, as circuit-tracer
    writes it), or from a local folder (:func:`local_scan`). Differences from circuit-tracer:
    feature ``clerp`` holds ``feature_labels`` when given (it writes ""); a list ``scan``
    becomes ``custom-<sha256 prefix>`` instead of Python's per-process ``hash``.
    """
    if not _SLUG.match(slug):
        raise ValueError(f"slug {slug!r} must be letters, digits, '.', '_' or '-' (a file name).")
    pruned = pruned if pruned is not None else prune_graph(graph)
    table = node_table(graph, pruned, tokenizer, feature_labels, logit_strings)
    first_logit = graph.logit_index(0)
    nodes = {
        int(row.node_index): _ct_node(row, graph.n_layers, first_logit)
        for row in table[table["kept"]].itertuples()
    }
    targets, sources = pruned.edge_mask.nonzero(as_tuple=True)
    weights = graph.adjacency[targets, sources].tolist()
    links = [
        {"source": nodes[s]["node_id"], "target": nodes[t]["node_id"], "weight": w}
        for t, s, w in zip(targets.tolist(), sources.tolist(), weights, strict=True)
        if s in nodes and t in nodes
    ]
    connected = {link["source"] for link in links} | {link["target"] for link in links}
    always = ("embedding", "logit")
    used = [n for n in nodes.values() if n["node_id"] in connected or n["feature_type"] in always]
    transcoder_list = list(scan) if isinstance(scan, list) else []
    if isinstance(scan, list):
        scan = "custom-" + hashlib.sha256("-".join(scan).encode()).hexdigest()[:16]
    metadata = {
        "slug": slug,
        "scan": scan,
        "transcoder_list": transcoder_list,
        "prompt_tokens": table.loc[table["kind"] == "token", "token"].tolist(),
        "prompt": graph.prompt,
        "node_threshold": pruned.node_threshold,
        "schema_version": 1,
    }
    q_params = {
        "pinnedIds": [],
        "supernodes": [],
        "linkType": "both",
        "clickedId": "",
        "sg_pos": "",
    }
    return {"metadata": metadata, "qParams": q_params, "nodes": used, "links": links}


def _write_json(data: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    tmp.replace(path)


def write_circuit_tracer_files(graph_json: dict, out_dir: str | Path) -> Path:
    """Write ``out_dir/{slug}.json`` and add its metadata to ``out_dir/graph-metadata.json``
    (replacing an entry with the same slug), the layout circuit-tracer's local server reads.

    Returns the graph file's path.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta = graph_json["metadata"]
    path = out_dir / f"{meta['slug']}.json"
    _write_json(graph_json, path)
    index_path = out_dir / "graph-metadata.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"graphs": []}
    index["graphs"] = [g for g in index["graphs"] if g["slug"] != meta["slug"]] + [meta]
    _write_json(index, index_path)
    return path
