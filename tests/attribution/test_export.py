"""Node / edge tables and circuit-tracer JSON export of synthetic graphs."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from llmbio.attribution.export import (
    graph_tables,
    local_scan,
    save_tables,
    to_circuit_tracer_json,
    write_circuit_tracer_files,
)
from llmbio.attribution.graph import Graph
from llmbio.attribution.prune import prune_graph
from llmbio.config import load_config

NODE_COLUMNS = [
    "node_id", "node_index", "kind", "layer", "position", "feature", "token_id", "token",
    "activation", "probability", "influence", "cumulative_influence", "kept", "label",
]  # fmt: skip
# Field lists of circuit-tracer 0.5.1 frontend/graph_models.py (Node, Metadata, QParams).
CT_NODE_FIELDS = [
    "node_id", "feature", "layer", "ctx_idx", "feature_type", "token_prob", "is_target_logit",
    "run_idx", "reverse_ctx_idx", "jsNodeId", "clerp", "influence", "activation",
]  # fmt: skip
CT_METADATA_FIELDS = [
    "slug", "scan", "transcoder_list", "prompt_tokens", "prompt", "node_threshold",
    "schema_version",
]  # fmt: skip
CT_QPARAMS_FIELDS = ["pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos"]


class FakeTokenizer:
    """Decodes token id ``i`` as ``<i>``; accepts a list of ids or a scalar (tensor)."""

    def decode(self, ids) -> str:
        ids = ids if isinstance(ids, list) else [ids]
        return "".join(f"<{int(i)}>" for i in ids)


def random_graph(n_layers=3, n_pos=4, n_features=40, n_logits=3, seed=0) -> Graph:
    """Random graph with the tracer's block structure (see test_prune.random_graph)."""
    g = torch.Generator().manual_seed(seed)
    layer = torch.randint(0, n_layers, (n_features,), generator=g)
    pos = torch.randint(0, n_pos, (n_features,), generator=g)
    feats = torch.stack([layer, pos, torch.randint(50, 1000, (n_features,), generator=g)], 1)
    src_layer = torch.cat(
        [layer, torch.arange(n_layers).repeat_interleave(n_pos), torch.full((n_pos,), -1)]
    )
    src_pos = torch.cat([pos, torch.arange(n_pos).repeat(n_layers), torch.arange(n_pos)])
    src_layer = torch.cat([src_layer, torch.full((n_logits,), 99)])
    src_pos = torch.cat([src_pos, torch.full((n_logits,), n_pos - 1)])
    n = len(src_layer)
    allowed = (src_layer[None, :] < src_layer[:, None]) & (src_pos[None, :] <= src_pos[:, None])
    allowed[n_features : n - n_logits] = False
    allowed[:, n - n_logits :] = False
    adjacency = torch.randn(n, n, generator=g) * allowed * (torch.rand(n, n, generator=g) < 0.5)
    return Graph(
        prompt="a b c d",
        tokens=[f"t{i}" for i in range(n_pos)],
        input_ids=torch.arange(n_pos) + 10,
        active_features=feats,
        activation_values=torch.rand(n_features, generator=g) + 0.1,
        logit_tokens=torch.arange(n_logits) + 500,
        logit_probabilities=torch.softmax(torch.randn(n_logits, generator=g), 0) * 0.9,
        adjacency=adjacency,
        n_layers=n_layers,
    )


def test_node_table(tmp_path):
    graph = random_graph()
    pruned = prune_graph(graph)
    layer, feature = graph.active_features[0, 0].item(), graph.active_features[0, 2].item()
    labels = pd.DataFrame({"layer": [layer], "feature": [feature], "label": ["Texas"]})
    nodes, edges = graph_tables(graph, pruned, FakeTokenizer(), labels)
    assert list(nodes.columns) == NODE_COLUMNS
    assert len(nodes) == graph.n_nodes and nodes["node_id"].is_unique
    counts = nodes["kind"].value_counts()
    assert counts["feature"] == 40 and counts["error"] == 12 and counts["token"] == 4
    assert counts["logit"] == 3
    assert nodes["kept"].tolist() == pruned.node_mask.tolist()
    assert nodes.loc[0, "label"] == "Texas"
    token = nodes[nodes["kind"] == "token"].iloc[1]
    assert (token["node_id"], token["token"], token["layer"]) == ("E_11_1", "<11>", -1)
    logit = nodes[nodes["kind"] == "logit"].iloc[0]
    assert logit["node_id"] == "L_500_3" and logit["token"] == "<500>" and logit["layer"] == 3
    assert logit["probability"] == pytest.approx(graph.logit_probabilities[0].item())
    error = nodes[nodes["kind"] == "error"].iloc[5]  # layer 1, position 1
    assert error["node_id"] == "1_-1_1" and error["token"] == "<11>"
    save_tables(nodes, edges, tmp_path / "n.parquet", tmp_path / "e.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "n.parquet"), nodes)


def test_edge_table():
    graph = random_graph(seed=1)
    pruned = prune_graph(graph)
    nodes, edges = graph_tables(graph, pruned)
    kept_ids = set(nodes.loc[nodes["kept"], "node_id"])
    assert set(edges["source"]) <= kept_ids and set(edges["target"]) <= kept_ids
    t, s = edges["target_index"].to_numpy(), edges["source_index"].to_numpy()
    assert (edges["weight"].to_numpy() == graph.adjacency.double().numpy()[t, s]).all()
    assert edges["kept"].sum() == pruned.edge_mask.sum()
    assert (nodes["node_id"].to_numpy()[s] == edges["source"].to_numpy()).all()
    _, all_edges = graph_tables(graph)
    assert len(all_edges) == int((graph.adjacency != 0).sum()) and all_edges["kept"].all()


def test_circuit_tracer_json_fields(tmp_path):
    graph = random_graph(seed=2)
    data = to_circuit_tracer_json(graph, slug="dallas-austin", scan="llmbio-clt")
    assert list(data) == ["metadata", "qParams", "nodes", "links"]
    assert list(data["metadata"]) == CT_METADATA_FIELDS
    assert list(data["qParams"]) == CT_QPARAMS_FIELDS
    assert all(list(node) == CT_NODE_FIELDS for node in data["nodes"])
    ids = {node["node_id"] for node in data["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    by_type = pd.DataFrame(data["nodes"]).groupby("feature_type")["node_id"].apply(list)
    assert by_type["embedding"] == [f"E_{10 + p}_{p}" for p in range(4)]
    assert by_type["logit"] == [f"4_{500 + i}_3" for i in range(3)]
    logits = [n for n in data["nodes"] if n["feature_type"] == "logit"]
    assert [n["is_target_logit"] for n in logits] == [True, False, False]
    assert logits[0]["jsNodeId"] == "L_500-3" and logits[0]["clerp"].startswith('Output "#500"')
    errors = [n for n in data["nodes"] if n["feature_type"] == "mlp reconstruction error"]
    assert errors and all(n["feature"] == -1 for n in errors)
    for n in errors:  # circuit-tracer >= 0.5.1: the feature slot of an error is -1
        assert n["node_id"] == f"{n['layer']}_-1_{n['ctx_idx']}"
        assert n["jsNodeId"] == f"{n['layer']}_-1-{n['ctx_idx']}"
    assert data["metadata"]["scan"] == "llmbio-clt"
    assert data["metadata"]["prompt_tokens"] == graph.tokens

    write_circuit_tracer_files(data, tmp_path)
    other = to_circuit_tracer_json(graph, slug="other", scan=["a", "b"])
    assert other["metadata"]["scan"].startswith("custom-")
    write_circuit_tracer_files(other, tmp_path)
    write_circuit_tracer_files(data, tmp_path)
    index = json.loads((tmp_path / "graph-metadata.json").read_text())
    assert [g["slug"] for g in index["graphs"]] == ["other", "dallas-austin"]
    assert json.loads((tmp_path / "dallas-austin.json").read_text()) == data
    with pytest.raises(ValueError, match="slug"):
        to_circuit_tracer_json(graph, slug="../x", scan="s")


def test_error_ids_never_equal_a_layer_0_feature_id():
    """The old error id ``0_{layer}_{pos}`` was the id of layer-0 feature ``layer`` at ``pos``."""
    graph = random_graph(seed=4)
    graph.active_features[:, 0] = 0  # every feature at layer 0, numbered like error layers
    graph.active_features[:, 2] = torch.arange(graph.n_features) % graph.n_layers
    graph.active_features = torch.unique(graph.active_features, dim=0)
    graph.activation_values = graph.activation_values[: len(graph.active_features)]
    n = graph.n_features
    keep = list(range(n)) + list(range(40, graph.adjacency.shape[0]))
    graph.adjacency = graph.adjacency[keep][:, keep]
    data = to_circuit_tracer_json(graph, prune_graph(graph, 1.0, 1.0), slug="g", scan="s")
    ids = [node["node_id"] for node in data["nodes"]]
    assert len(set(ids)) == len(ids)
    # jsNodeId names a feature (shared across positions) or one error node
    by_kind = pd.DataFrame(data["nodes"]).groupby("feature_type")["jsNodeId"].apply(list)
    errors, features = by_kind["mlp reconstruction error"], set(by_kind["cross layer transcoder"])
    assert len(set(errors)) == len(errors) and not features & set(errors)


def test_scan_per_run():
    """A released run names its transcoder repo (at its pinned commit) as circuit-tracer does;
    the organism names a local folder, never a hub repo or a Neuronpedia model."""
    # imported here: the stage draws figures, and the cross-check environment has no matplotlib
    from llmbio.stages.attribution import graph_scan

    commit = "0123456789abcdef0123456789abcdef01234567"
    released = {"family": "gemma-2-2b", "model": "google/gemma-2-2b"}
    released["transcoder"] = "mntss/clt-gemma-2-2b-426k"
    assert graph_scan(load_config({"pretrained": released})) == "mntss/clt-gemma-2-2b-426k"
    pinned = load_config({"pretrained": {**released, "transcoder_revision": commit}})
    assert graph_scan(pinned) == f"mntss/clt-gemma-2-2b-426k@{commit}"
    assert graph_scan(load_config({})) == "./features/organism" == local_scan("organism")
    assert graph_scan(load_config({"run": "tiny"})) == "./features/tiny"
    with pytest.raises(ValueError, match="letters, digits"):
        local_scan("../x")


@pytest.mark.crosscheck
def test_matches_circuit_tracer_create_graph_files():
    models = pytest.importorskip("circuit_tracer.frontend.graph_models", reason="no circuit-tracer")
    create = pytest.importorskip("circuit_tracer.utils.create_graph_files")
    graph, tokenizer = random_graph(seed=3), FakeTokenizer()
    pruned = prune_graph(graph)
    ours = to_circuit_tracer_json(graph, pruned, slug="g", scan="s", tokenizer=tokenizer)
    models.Model.model_validate(ours)
    ct_graph = SimpleNamespace(
        cfg=SimpleNamespace(n_layers=graph.n_layers),
        selected_features=torch.arange(graph.n_features),
        active_features=graph.active_features,
        activation_values=graph.activation_values,
        n_pos=graph.n_pos,
        input_tokens=graph.input_ids,
        input_string=graph.prompt,
        logit_targets=[(tokenizer.decode([t]), int(t)) for t in graph.logit_tokens],
        logit_probabilities=graph.logit_probabilities,
        adjacency_matrix=graph.adjacency,
    )
    nodes = create.create_nodes(ct_graph, pruned.node_mask, tokenizer, pruned.cumulative_influence)
    used_nodes, used_edges = create.create_used_nodes_and_edges(ct_graph, nodes, pruned.edge_mask)
    model = create.build_model(ct_graph, used_nodes, used_edges, "g", "s", 0.8, tokenizer)
    assert _current_error_ids(json.loads(model.model_dump_json())) == ours


def _current_error_ids(data: dict) -> dict:
    """circuit-tracer 0.5.0 (the last release on PyPI) names error nodes ``0_{layer}_{pos}``
    (jsNodeId ``{layer}_{pos}-0``), which collide with layer-0 feature ids; its later code and
    llmbio name them ``{layer}_-1_{pos}`` (``{layer}_-1-{pos}``). Renamed, all else compared."""
    renamed = {}
    for node in data["nodes"]:
        if node["feature_type"] == "mlp reconstruction error":
            layer, pos = node["layer"], node["ctx_idx"]
            renamed[node["node_id"]] = f"{layer}_-1_{pos}"
            node["node_id"], node["jsNodeId"] = f"{layer}_-1_{pos}", f"{layer}_-1-{pos}"
    for link in data["links"]:
        link["source"] = renamed.get(link["source"], link["source"])
        link["target"] = renamed.get(link["target"], link["target"])
    return data
