"""One prompt's attribution graph: nodes, dense adjacency matrix, safe (de)serialisation.

Node order (``N = K + L*n + n + T``), the same as circuit-tracer's:

1. ``K`` active features, in the order of ``active_features`` (rows ``[layer, pos, feature_id]``);
2. ``L*n`` error nodes, layer-major: error ``(l, p)`` has index ``K + l*n + p``;
3. ``n`` token-embedding nodes, one per position;
4. ``T`` logit nodes, in the order of ``logit_tokens``.

``adjacency[target, source]`` is the direct linear effect of ``source`` on ``target`` through the
frozen local replacement model (attention patterns and norm denominators fixed). Rows of
embeddings and errors are zero (they have no inputs).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

_TENSORS = (
    "input_ids",
    "active_features",
    "activation_values",
    "logit_tokens",
    "logit_probabilities",
    "adjacency",
)


@dataclass
class Graph:
    prompt: str
    tokens: list[str]  # n token strings, as the tokenizer produced them
    input_ids: torch.Tensor  # (n,) long
    active_features: torch.Tensor  # (K, 3) long: layer, position, feature id
    activation_values: torch.Tensor  # (K,) float
    logit_tokens: torch.Tensor  # (T,) long vocabulary ids
    logit_probabilities: torch.Tensor  # (T,) float, the model's probabilities
    adjacency: torch.Tensor  # (N, N) float, [target, source]
    n_layers: int
    metadata: dict = field(default_factory=dict)  # model / transcoder names, settings

    @property
    def n_pos(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.active_features.shape[0])

    @property
    def n_logits(self) -> int:
        return int(self.logit_tokens.shape[0])

    @property
    def n_nodes(self) -> int:
        return self.n_features + self.n_layers * self.n_pos + self.n_pos + self.n_logits

    def error_index(self, layer: int, pos: int) -> int:
        return self.n_features + layer * self.n_pos + pos

    def token_index(self, pos: int) -> int:
        return self.n_features + self.n_layers * self.n_pos + pos

    def logit_index(self, i: int) -> int:
        return self.n_nodes - self.n_logits + i

    def with_features(self, keep: torch.Tensor) -> Graph:
        """The graph over the feature nodes ``keep`` (ascending indices ``(K',)``) and every
        error, token and logit node; edges among them unchanged, the others' edges left out."""
        keep = keep.to(torch.long)
        nodes = torch.cat([keep, torch.arange(self.n_features, self.n_nodes)])
        return Graph(
            prompt=self.prompt,
            tokens=list(self.tokens),
            input_ids=self.input_ids,
            active_features=self.active_features[keep],
            activation_values=self.activation_values[keep],
            logit_tokens=self.logit_tokens,
            logit_probabilities=self.logit_probabilities,
            adjacency=self.adjacency[nodes][:, nodes],
            n_layers=self.n_layers,
            metadata=dict(self.metadata),
        )

    def save(self, path: str | Path) -> None:
        """Write ``path`` (a ``.safetensors`` file holding tensors and JSON metadata)."""
        meta = {
            "prompt": self.prompt,
            "tokens": self.tokens,
            "n_layers": self.n_layers,
            "metadata": self.metadata,
        }
        tensors = {k: getattr(self, k).contiguous() for k in _TENSORS}
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        save_file(tensors, str(tmp), metadata={"llmbio_graph": json.dumps(meta)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Graph:
        from safetensors import safe_open

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No graph at {path}; trace the prompt first (llmbio trace).")
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads(f.metadata()["llmbio_graph"])
        tensors = load_file(str(path))
        return cls(
            prompt=meta["prompt"],
            tokens=meta["tokens"],
            n_layers=meta["n_layers"],
            metadata=meta["metadata"],
            **{k: tensors[k] for k in _TENSORS},
        )
