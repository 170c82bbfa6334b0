"""The Circuit Tracing paper's checks of an attribution graph, each in the frame it names.

For sampled feature nodes ``s`` of a :class:`~llmbio.attribution.graph.Graph` (zeroed one at a
time with :class:`~llmbio.interventions.engine.Intervener`):

- **Effects in the graph's frame** (:func:`feature_effects`): the graph's predicted change of
  the top logit node (``predicted_total``, every path, see
  :func:`~llmbio.features.faithfulness.total_effects`) against the real model's change with
  attention patterns and every norm denominator frozen at their clean values, as the graph
  holds them (``actual_frame``): the real MLPs are the only nonlinearity the graph leaves out.
  ``actual_replacement`` is the local replacement model's (transcoder features responding
  through their JumpReLU) and ``actual_live`` the unfrozen model's (a diagnostic: it adds the
  norms' rescaling). A feature of the last layer has no path but its edge, so there
  ``actual_frame == predicted_direct == predicted_total``.
- **Replacement vs real model downstream** (same rows): the perturbation of the residual
  stream ``DOWNSTREAM`` layers after the edit (``hook_resid_mid`` of layer ``l + 2``: the edit
  at layer ``l``'s MLP output has passed one whole layer, ``l + 1``) in the local replacement
  model against the real model's, as cosine similarity and NMSE
  ``||d_repl - d_real||^2 / ||d_real||^2``, for the real model in the graph's frame
  (``*_frame``) and unfrozen (``*_live``). Empty for features too late to have that layer.
- **Feature-to-feature influence** (:func:`feature_influence`): for a source at layer ``i``,
  the graph's edges to the active features of layers ``i+1 .. i+window`` against the change of
  those features' pre-activations under constrained patching over ``[i, i+window]`` with
  attention frozen (MLP outputs in the range are their clean values plus the edit's decoder
  writes, so only direct paths act there; the norms stay live unless ``freeze_norms``).

The study's intervals are :func:`llmbio.studies.intervals.bootstrap`, as its claims' are.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from llmbio.attribution.graph import Graph
from llmbio.features.faithfulness import total_effects
from llmbio.interventions.edits import Edit
from llmbio.interventions.engine import Intervener, PassOutput
from llmbio.transcoder.clt import CrossLayerTranscoder

DOWNSTREAM = 2  # resid_mid of layer l + 2: one whole layer after the edit at layer l's MLP
REAL_FRAMES = ("frame", "live")  # the real model's passes the replacement is compared with
INFLUENCE_COLUMNS = ["source", "source_layer", "target", "target_layer", "predicted", "actual"]


def _demeaned(logits: torch.Tensor, token: int) -> float:
    last = logits[-1].double()
    return float(last[token] - last.mean())


def _compare(repl: torch.Tensor, real: torch.Tensor) -> tuple[float, float]:
    """Cosine and NMSE of two perturbations (flattened); NaN where the real one is zero."""
    a, b = repl.double().flatten(), real.double().flatten()
    norm = float(b.norm())
    if norm == 0:
        return float("nan"), float("nan")
    cos = float(a @ b / (a.norm() * norm).clamp(min=1e-300))
    return cos, float((a - b).square().sum() / norm**2)


def feature_effects(
    model: nn.Module, clt: CrossLayerTranscoder, graph: Graph, nodes: Sequence[int]
) -> pd.DataFrame:
    """One row per feature node in ``nodes`` (graph indices): its predicted and real effects on
    the top logit node and the downstream comparison (columns in the module docstring)."""
    logit, token = graph.logit_index(0), int(graph.logit_tokens[0])
    total = total_effects(graph, logit)
    ids = graph.input_ids
    runners = {
        "frame": Intervener(model, clt, ids, freeze_attention=True, freeze_norms=True),
        "replacement": Intervener(model, clt, ids, replacement=True),
        "live": Intervener(model, clt, ids),
    }
    bases = {name: r.baseline for name, r in runners.items()}
    rows = []
    for i in nodes:
        layer, pos, feat = (int(v) for v in graph.active_features[i])
        act = float(graph.activation_values[i])
        edit = [Edit.zero((layer, feat), [pos])]
        outs: dict[str, PassOutput] = {name: r.run(edit) for name, r in runners.items()}
        row = dict(
            node_index=int(i), layer=layer, position=pos, feature=feat, activation=act,
            logit_token=token, predicted_direct=-float(graph.adjacency[logit, i]),
            predicted_total=-act * float(total[i]),
        )  # fmt: skip
        for name, out in outs.items():
            row[f"actual_{name}"] = _demeaned(out.logits, token) - _demeaned(
                bases[name].logits, token
            )
        down = layer + DOWNSTREAM
        row.update({f"{m}_{real}": np.nan for m in ("cosine", "nmse") for real in REAL_FRAMES})
        if down < clt.n_layers:
            shift = {n: outs[n].resid_mid[down] - bases[n].resid_mid[down] for n in outs}
            for real in REAL_FRAMES:
                cos, nmse = _compare(shift["replacement"], shift[real])
                row[f"cosine_{real}"], row[f"nmse_{real}"] = cos, nmse
        rows.append(row)
    return pd.DataFrame(rows)


def feature_influence(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    graph: Graph,
    sources: Sequence[int],
    window: int = 2,
    *,
    freeze_norms: bool = False,
) -> pd.DataFrame:
    """One row per (source, target) pair: ``predicted = -A[target, source]`` (the edge, the
    change of the target's pre-activation when the source is zeroed) and ``actual``, measured
    by constrained patching over ``[i, i+window]`` (module docstring). Targets are the graph's
    feature nodes of layers ``i+1 .. i+window`` with a nonzero edge from the source."""
    feats = graph.active_features  # (K, 3): layer, position, feature
    runners: dict[int, Intervener] = {}
    rows = []
    for s in sources:
        layer, pos, feat = (int(v) for v in feats[s])
        last = min(layer + window, clt.n_layers - 1)
        targets = [
            t for t in range(graph.n_features)
            if layer < int(feats[t, 0]) <= last and float(graph.adjacency[t, s]) != 0
        ]  # fmt: skip
        if not targets:
            continue
        if layer not in runners:
            runners[layer] = Intervener(
                model, clt, graph.input_ids, freeze_attention=True,
                constrained_layers=range(layer, last + 1), freeze_norms=freeze_norms,
            )  # fmt: skip
        runner = runners[layer]
        before = _pre_activations(clt, runner.baseline, targets, feats)
        after = _pre_activations(clt, runner.run([Edit.zero((layer, feat), [pos])]), targets, feats)
        for t, b, a in zip(targets, before, after, strict=True):
            rows.append(dict(
                source=int(s), source_layer=layer, target=int(t), target_layer=int(feats[t, 0]),
                predicted=-float(graph.adjacency[t, s]), actual=a - b,
            ))  # fmt: skip
    return pd.DataFrame(rows, columns=INFLUENCE_COLUMNS)


@torch.no_grad()
def _pre_activations(
    clt: CrossLayerTranscoder, out: PassOutput, targets: list[int], feats: torch.Tensor
) -> list[float]:
    values = []
    for t in targets:
        layer, pos, feat = (int(v) for v in feats[t])
        x = out.resid_mid[layer, pos].to(clt.W_enc.dtype)
        values.append(float(clt.pre_activation(x[None], layer)[0, feat]))
    return values
