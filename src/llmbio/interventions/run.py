"""Intervention experiments: :func:`intervene`, greedy generation under edits, donor activations,
and the tidy results table.

Results table (:meth:`InterventionResult.table`), one row per observation:

- ``experiment`` (str), ``edits`` (str: every edit, ``;``-separated), ``kind`` (``token``,
  ``supernode`` or ``generation``), ``condition`` (``baseline`` or ``intervened``), ``name``
  (token string / supernode name / generated text);
- tokens (the union of both conditions' top-k at the last position): ``token_id``, ``rank``
  (1 = most likely in that condition), ``probability``, ``logit``;
- supernodes: ``activation`` (sum of the members' activations at their positions) and
  ``percent_of_baseline`` (100 for the baseline; NaN when the baseline is 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from llmbio.attribution.replacement import as_input_ids
from llmbio.features.supernodes import Supernode
from llmbio.interventions.edits import Edit, check_feature, edit_target, resolve_positions
from llmbio.interventions.engine import Intervener, PassOutput
from llmbio.tokenizer import check_prompt_length
from llmbio.transcoder.clt import CrossLayerTranscoder

Prompt = torch.Tensor | Sequence[int] | str


def prompt_ids(prompt: Prompt, tokenizer: Any = None) -> torch.Tensor:
    """Token ids ``(n,)``; text is tokenized as :func:`llmbio.attribution.trace.trace` does."""
    if isinstance(prompt, str):
        from llmbio.attribution.trace import prepare_prompt

        return prepare_prompt(prompt, tokenizer)[0]
    return as_input_ids(prompt)


def _token_str(tokenizer: Any, token_id: int) -> str:
    return tokenizer.decode([token_id]) if tokenizer is not None else f"#{token_id}"


def group_activity(acts: torch.Tensor, group: Supernode, n_pos: int) -> float:
    """Sum of ``acts`` ``(L, n, F)`` over the group's members at its positions."""
    positions = torch.tensor(resolve_positions(group.positions, n_pos, group.name))
    layers = torch.tensor([k[0] for k in group.features])
    feats = torch.tensor([k[1] for k in group.features])
    return float(acts[layers[:, None], positions[None, :], feats[:, None]].sum())


@dataclass
class InterventionResult:
    """Baseline and intervened passes of one prompt (see the module docstring for the table)."""

    input_ids: torch.Tensor  # (n,)
    baseline: PassOutput
    intervened: PassOutput
    edits: tuple[Edit, ...]
    groups: list[Supernode]  # tracked supernodes: the given ones, then one per edit
    top_k: int = 10
    tokenizer: Any = None
    generated: dict[str, str] = field(default_factory=dict)  # condition -> generated text

    def probabilities(self, condition: str = "intervened") -> torch.Tensor:
        """Next-token probabilities ``(vocab,)`` at the last position."""
        out = self.baseline if condition == "baseline" else self.intervened
        return torch.softmax(out.logits[-1].double(), dim=-1)

    def top_tokens(self, condition: str = "intervened") -> pd.DataFrame:
        probs = self.probabilities(condition)
        top = torch.topk(probs, min(self.top_k, len(probs)))
        return pd.DataFrame(
            {
                "rank": range(1, len(top.indices) + 1),
                "token_id": top.indices.tolist(),
                "token": [_token_str(self.tokenizer, t) for t in top.indices.tolist()],
                "probability": top.values.tolist(),
            }
        )

    def activity(self) -> pd.DataFrame:
        """Each tracked group's activation in both passes, and as % of the baseline."""
        n = int(self.input_ids.shape[0])
        rows = []
        for group in self.groups:
            base = group_activity(self.baseline.activations, group, n)
            new = group_activity(self.intervened.activations, group, n)
            pct = 100 * new / base if base != 0 else math.nan
            rows.append({"name": group.name, "baseline": base, "intervened": new, "percent": pct})
        return pd.DataFrame(rows, columns=["name", "baseline", "intervened", "percent"])

    def table(self, experiment: str = "") -> pd.DataFrame:
        """The tidy results table (columns in the module docstring)."""
        ids = sorted(
            set(self.top_tokens("baseline")["token_id"]) | set(self.top_tokens()["token_id"])
        )
        rows = []
        for condition, out in (("baseline", self.baseline), ("intervened", self.intervened)):
            probs, logits = self.probabilities(condition), out.logits[-1]
            ranks = (probs[None, :] > probs[ids][:, None]).sum(1) + 1
            for i, t in enumerate(ids):
                rows.append(dict(kind="token", condition=condition, token_id=t,
                                 name=_token_str(self.tokenizer, t), rank=int(ranks[i]),
                                 probability=float(probs[t]), logit=float(logits[t])))  # fmt: skip
        for g in self.activity().itertuples():
            rows.append(dict(kind="supernode", condition="baseline", name=g.name,
                             activation=g.baseline, percent_of_baseline=100.0 if g.baseline else
                             math.nan))  # fmt: skip
            rows.append(dict(kind="supernode", condition="intervened", name=g.name,
                             activation=g.intervened, percent_of_baseline=g.percent))  # fmt: skip
        for condition, text in self.generated.items():
            rows.append(dict(kind="generation", condition=condition, name=text))
        columns = ["experiment", "edits", "kind", "condition", "name", "token_id", "rank",
                   "probability", "logit", "activation", "percent_of_baseline"]  # fmt: skip
        table = pd.DataFrame(rows).reindex(columns=columns)
        table["experiment"] = experiment
        table["edits"] = "; ".join(e.describe() for e in self.edits)
        return table.astype({"token_id": "Int64", "rank": "Int64"})


def _groups(edits: Sequence[Edit], supernodes: Iterable[Supernode]) -> list[Supernode]:
    groups = list(supernodes)
    for node in groups:
        if not node.features:
            raise ValueError(f"Supernode {node.name!r} has no members; resolve its rule first.")
    names = {g.name for g in groups}
    for edit in edits:
        if edit.name not in names:
            groups.append(Supernode(edit.name, edit.features, None, edit.positions))
            names.add(edit.name)
    return groups


def intervene(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: Prompt,
    edits: Iterable[Edit],
    *,
    freeze_attention: bool = False,
    constrained_layers: Iterable[int] | None = None,
    freeze_final_norm: bool = False,
    top_k: int = 10,
    supernodes: Iterable[Supernode] = (),
    tokenizer: Any = None,
    max_new_tokens: int = 0,
) -> InterventionResult:
    """Run ``model`` on one prompt with and without ``edits`` (modes: see
    :mod:`llmbio.interventions.engine`).

    ``input_ids``: ids ``(n,)`` or text (with ``tokenizer``). ``supernodes`` (resolved) are
    tracked for the activity table, as is each edit's group. With ``max_new_tokens``, both
    conditions also generate greedily (see :func:`generate_with_edits`).
    """
    edits = tuple(edits)
    ids = prompt_ids(input_ids, tokenizer)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_prompt_length(model, len(ids) + max_new_tokens, "the prompt plus the generated tokens")
    mode = dict(
        freeze_attention=freeze_attention,
        constrained_layers=constrained_layers,
        freeze_final_norm=freeze_final_norm,
    )
    runner = Intervener(model, clt, ids, **mode)
    groups = _groups(edits, supernodes)
    for group in groups:  # fail before running anything
        for layer, feature in group.features:
            check_feature(layer, feature, clt.n_layers, clt.n_features)
        resolve_positions(group.positions, runner.n_pos, group.name)
    result = InterventionResult(
        ids, runner.baseline, runner.run(edits), edits, groups, top_k, tokenizer
    )
    if max_new_tokens:
        for condition, chosen in (("baseline", ()), ("intervened", edits)):
            new = generate_with_edits(model, clt, ids, chosen, max_new_tokens, **mode)
            text = tokenizer.decode(new) if tokenizer is not None else " ".join(map(str, new))
            result.generated[condition] = text
    return result


@torch.no_grad()
def generate_with_edits(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    input_ids: Prompt,
    edits: Iterable[Edit],
    max_new_tokens: int = 8,
    *,
    freeze_attention: bool = False,
    constrained_layers: Iterable[int] | None = None,
    freeze_final_norm: bool = False,
    eos_token_id: int | None = None,
    tokenizer: Any = None,
) -> list[int]:
    """Greedy continuation (new token ids) with ``edits`` applied at every step.

    Each step reruns the whole sequence (no KV cache), so edits at every position (``None``)
    also reach generated tokens, and frozen patterns / clean MLP outputs are those of the clean
    run on the current sequence. Explicit positions refer to the prompt.
    """
    edits = tuple(edits)
    ids = prompt_ids(input_ids, tokenizer)
    check_prompt_length(model, len(ids) + max_new_tokens, "the prompt plus the generated tokens")
    eos = eos_token_id if eos_token_id is not None else getattr(model.config, "eos_token_id", None)
    new: list[int] = []
    for _ in range(max_new_tokens):
        runner = Intervener(
            model, clt, ids, freeze_attention=freeze_attention,
            constrained_layers=constrained_layers, freeze_final_norm=freeze_final_norm,
        )  # fmt: skip
        token = int(runner.run(edits).logits[-1].argmax())
        new.append(token)
        ids = torch.cat([ids, torch.tensor([token], device=ids.device)])
        if token == eos:
            break
    return new


@torch.no_grad()
def donor_activations(
    model: nn.Module,
    clt: CrossLayerTranscoder,
    donor_ids: Prompt,
    supernode: Supernode | Sequence[str | Sequence[int]],
    position: int = -1,
    tokenizer: Any = None,
) -> torch.Tensor:
    """Activations ``(n_members,)`` of the supernode's members at ``position`` of the donor."""
    members = edit_target(supernode)[1]
    runner = Intervener(model, clt, prompt_ids(donor_ids, tokenizer))
    (pos,) = resolve_positions((position,), runner.n_pos, "donor position")
    for layer, feature in members:
        check_feature(layer, feature, clt.n_layers, clt.n_features)
    acts = runner.baseline.activations
    return torch.stack([acts[layer, pos, feature] for layer, feature in members]).detach()
